#!/usr/bin/env python3
"""hello-python: the smallest plugvisor Python plugin.

It serves only what the SDK gives every plugin (health, controller, stdio)
and logs one line when it starts and one when it stops. The host runs it with
the bundle's own interpreter, venv/bin/python.
"""

import logging
import os

import plugvisor_plugin

log = logging.getLogger("hello-python")


def register(server):
    # Add your own gRPC servicers to `server` here.
    log.info("hello from Python", extra={"pid": os.getpid()})


def on_shutdown():
    log.info("goodbye from Python")


if __name__ == "__main__":
    plugvisor_plugin.serve(register, on_shutdown=on_shutdown)
