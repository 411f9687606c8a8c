#!/usr/bin/env python3
"""Runs a plugin script as plugvisor's zygote would have it, after
plugvisor_plugin._preload, and notes which modules the plugin imported itself:
usage `modules_after_preload.py OUT SCRIPT [ARGS...]`.

At exit (a graceful stop runs atexit) it writes the modules loaded since the
preload to OUT, one a line.
"""

import atexit
import os
import sys

import plugvisor_plugin._preload  # noqa: F401

out_path, script = sys.argv[1], sys.argv[2]
before = set(sys.modules)


@atexit.register
def note() -> None:
    with open(out_path, "w") as f:
        f.write("\n".join(sorted(set(sys.modules) - before)) + "\n")


sys.argv = sys.argv[2:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
with open(script, "rb") as f:
    code = compile(f.read(), script, "exec")
exec(code, {"__name__": "__main__", "__file__": script, "__builtins__": __builtins__})
