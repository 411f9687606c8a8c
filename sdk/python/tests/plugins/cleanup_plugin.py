#!/usr/bin/env python3
"""A plugin whose cleanup is written around serve(), as ordinary Python.

PVTEST_CLEANUP_MODE  "finally": try: serve() finally: ...
                     "with":    with Resource(): serve()
                     "atexit":  atexit.register(...) before serve()
PVTEST_MARKER        the file each step appends a line to
PVTEST_AFTER_SERVE   "raise": the cleanup raises (an uncaught exception ends
                     the main module instead of serve()'s SystemExit)

A module-level object notes "teardown ran" when the interpreter's module
teardown destroys it, which the SDK's quick exit skips.
"""

import atexit
import os

import plugvisor_plugin

MARKER = os.environ["PVTEST_MARKER"]
MODE = os.environ["PVTEST_CLEANUP_MODE"]


def note(line):
    with open(MARKER, "a") as f:
        f.write(line + "\n")


class NotesTeardown:
    def __init__(self):
        # Everything __del__ needs, held here: module globals and builtins
        # may be gone by the time the teardown reaches this object.
        self._fd = os.open(MARKER, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self._write = os.write

    def __del__(self):
        self._write(self._fd, b"teardown ran\n")


witness = NotesTeardown()


class Resource:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        note("with exit ran")
        return False


def cleanup():
    note("finally ran")
    if os.environ.get("PVTEST_AFTER_SERVE") == "raise":
        raise RuntimeError("cleanup failed on purpose")


if MODE == "finally":
    try:
        plugvisor_plugin.serve()
    finally:
        cleanup()
elif MODE == "with":
    with Resource():
        plugvisor_plugin.serve()
elif MODE == "atexit":
    atexit.register(note, "atexit ran")
    plugvisor_plugin.serve()
else:
    raise SystemExit(f"unknown PVTEST_CLEANUP_MODE {MODE!r}")
note("after serve")  # never: serve() raises SystemExit
