#!/usr/bin/env python3
"""Runs a plugin script and notes which modules were loaded when it wrote its
handshake line: usage `modules_at_handshake.py OUT SCRIPT [ARGS...]`.

os.write is wrapped: the first write to fd 1 that starts with "1|" (the
handshake line) first writes sorted(sys.modules) to OUT, one a line, then the
wrapper takes itself out. The script runs as __main__ with exec (no runpy
import); this wrapper imports nothing the interpreter has not loaded anyway.
"""

import os
import sys

out_path, script = sys.argv[1], sys.argv[2]
real_write = os.write


def write(fd, data):
    if fd == 1 and bytes(data[:2]) == b"1|":
        os.write = real_write
        with open(out_path, "w") as f:
            f.write("\n".join(sorted(sys.modules)) + "\n")
    return real_write(fd, data)


os.write = write
sys.argv = sys.argv[2:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
with open(script, "rb") as f:
    code = compile(f.read(), script, "exec")
exec(code, {"__name__": "__main__", "__file__": script, "__builtins__": __builtins__})
