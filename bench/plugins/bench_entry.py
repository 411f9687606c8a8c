"""bench/'s entry point for the Python plugins: runs plugin.py (the file next
to it) as __main__, unchanged, after arranging that the moment the plugin
writes its go-plugin handshake line is appended to
$PLUGVISOR_BENCH_HANDSHAKE_FILE as "PID UNIX_NS".

It catches both ways a plugin prints the line: os.write(1, ...) (the
plugvisor SDK) and sys.stdout.write(...) (bare grpcio plugins). The time is
taken just before the line is written, and the file is written after it, so
the plugin's handshake is not delayed. Without the variable it only runs
plugin.py. bench/run copies this file into each Python bench bundle.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.path.join(HERE, "plugin.py")


def _is_handshake(data):
    return data[:2] in (b"1|", "1|")


def _install(path):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    real_write = os.write
    state = {"done": False}

    def record(t):
        state["done"] = True
        real_write(fd, f"{os.getpid()} {t}\n".encode())
        os.close(fd)

    def write(f, data):
        if f == 1 and not state["done"] and _is_handshake(bytes(data[:2])):
            t = time.time_ns()
            n = real_write(f, data)
            record(t)
            return n
        return real_write(f, data)

    os.write = write

    class StampedStdout:
        def __init__(self, inner):
            self._inner = inner

        def write(self, s):
            if not state["done"] and _is_handshake(s):
                t = time.time_ns()
                n = self._inner.write(s)
                self._inner.flush()
                record(t)
                return n
            return self._inner.write(s)

        def __getattr__(self, name):
            return getattr(self._inner, name)

    sys.stdout = StampedStdout(sys.stdout)


def main():
    path = os.environ.get("PLUGVISOR_BENCH_HANDSHAKE_FILE")
    if path:
        _install(path)
    sys.argv[0] = TARGET
    with open(TARGET, "rb") as f:
        code = compile(f.read(), TARGET, "exec")
    exec(code, {"__name__": "__main__", "__file__": TARGET, "__builtins__": __builtins__})


main()
