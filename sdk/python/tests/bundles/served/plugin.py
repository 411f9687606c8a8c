#!/usr/bin/env python3
"""served: a serve() plugin (no plugvisor hooks) for test_plugvisor.py.

It appends to events.log in its working directory (the bundle, under
plugvisor): "register" when serve() registers its services, then on a
graceful stop "on_shutdown", "finally", "with exit" and "atexit", the
cleanup written around serve() the ordinary ways.
"""

import atexit
import os

import plugvisor_plugin

EVENTS = os.path.join(os.getcwd(), "events.log")


def note(line):
    with open(EVENTS, "a") as f:
        f.write(line + "\n")


class Cleanup:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        note("with exit")
        return False


if __name__ == "__main__":
    atexit.register(note, "atexit")
    with Cleanup():
        try:
            plugvisor_plugin.serve(lambda server: note("register"), on_shutdown=lambda: note("on_shutdown"))
        finally:
            note("finally")
