#!/usr/bin/env python3
"""A plugin built on the SDK for the tests, configured through the environment.

PVTEST_MARKER           file that on_shutdown appends "cleanup ran" to
PVTEST_GRACE            serve(grace=...)
PVTEST_NETWORK          serve(network=...)
PVTEST_APP_VERSIONS     serve(app_version=[...]), comma-separated
PVTEST_COOKIE_KEY/VALUE serve(magic_cookie_key=..., magic_cookie_value=...)
PVTEST_STDIO_BUFFER     serve(stdio_buffer_bytes=...)
PVTEST_PRINT_IN_REGISTER  text print()ed while register() runs (before the handshake)
PVTEST_CLEANUP_RAISES   when set, on_shutdown raises after writing the marker
PVTEST_REGISTER_RAISES  when set, register() raises (after any PVTEST_PRINT_IN_REGISTER print)
PVTEST_ATEXIT           when set, an atexit handler appends "atexit ran" to PVTEST_MARKER
PVTEST_THREAD_SECONDS   when set, register() starts a non-daemon thread that appends
                        "thread done" to PVTEST_MARKER this many seconds after the stop began
PVTEST_REPORT_MODULES   when set, register() logs "modules" with {"cryptography": <loaded?>}

It also serves pvtest.Test, whose methods take and return raw bytes:
  Print(text)      print(text) to stdout and print("err:" + text) to stderr
  Flood(n)         print n numbered 100-byte lines to stdout, as fast as it can
  Sleep(seconds)   sleep, returning early when the RPC is cancelled
  StuckSleep(s)    sleep, ignoring cancellation (a badly behaved handler)
Sleep and StuckSleep log "rpc <name> started" (stderr) when they begin.
"""

import logging
import os
import sys
import threading
import time

import plugvisor_plugin

log = logging.getLogger("pvtest")


def _ident(b):
    return b


def register(server):
    import grpc

    def rpc_print(request, context):
        text = request.decode()
        print(text)
        print("err:" + text, file=sys.stderr)
        return b"ok"

    def rpc_flood(request, context):
        n = int(request.decode())
        for i in range(n):
            print(f"flood line {i:06d} ".ljust(99, "."))
        return b"ok"

    def rpc_sleep(request, context):
        log.info("rpc Sleep started")
        deadline = time.monotonic() + float(request.decode())
        while time.monotonic() < deadline:
            if not context.is_active():
                return b"cancelled"
            time.sleep(0.05)
        return b"slept"

    def rpc_stuck_sleep(request, context):
        log.info("rpc StuckSleep started")
        time.sleep(float(request.decode()))
        return b"slept"

    handlers = {
        name: grpc.unary_unary_rpc_method_handler(fn, request_deserializer=_ident, response_serializer=_ident)
        for name, fn in {
            "Print": rpc_print,
            "Flood": rpc_flood,
            "Sleep": rpc_sleep,
            "StuckSleep": rpc_stuck_sleep,
        }.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("pvtest.Test", handlers),))

    if os.environ.get("PVTEST_REPORT_MODULES"):
        log.info("modules", extra={"cryptography": "cryptography" in sys.modules})
    if os.environ.get("PVTEST_ATEXIT"):
        import atexit

        atexit.register(_append_marker, "atexit ran")
    if os.environ.get("PVTEST_THREAD_SECONDS"):
        threading.Thread(target=_late_thread, args=(float(os.environ["PVTEST_THREAD_SECONDS"]),)).start()

    early = os.environ.get("PVTEST_PRINT_IN_REGISTER")
    if early:
        print(early)
    if os.environ.get("PVTEST_REGISTER_RAISES"):
        raise RuntimeError("register failed on purpose")


_stopping = threading.Event()


def _append_marker(line):
    marker = os.environ.get("PVTEST_MARKER")
    if marker:
        with open(marker, "a") as f:
            f.write(line + "\n")


def _late_thread(seconds):
    # A non-daemon thread of the plugin's own that outlives on_shutdown.
    _stopping.wait()
    time.sleep(seconds)
    _append_marker("thread done")


def on_shutdown():
    _append_marker("cleanup ran")
    _stopping.set()
    if os.environ.get("PVTEST_CLEANUP_RAISES"):
        raise RuntimeError("cleanup failed on purpose")


def main():
    kwargs = {}
    env = os.environ
    if env.get("PVTEST_GRACE"):
        kwargs["grace"] = float(env["PVTEST_GRACE"])
    if env.get("PVTEST_NETWORK"):
        kwargs["network"] = env["PVTEST_NETWORK"]
    if env.get("PVTEST_APP_VERSIONS"):
        kwargs["app_version"] = [int(v) for v in env["PVTEST_APP_VERSIONS"].split(",")]
    if env.get("PVTEST_COOKIE_KEY"):
        kwargs["magic_cookie_key"] = env["PVTEST_COOKIE_KEY"]
        kwargs["magic_cookie_value"] = env["PVTEST_COOKIE_VALUE"]
    if env.get("PVTEST_STDIO_BUFFER"):
        kwargs["stdio_buffer_bytes"] = int(env["PVTEST_STDIO_BUFFER"])
    plugvisor_plugin.serve(register, on_shutdown=on_shutdown, **kwargs)


if __name__ == "__main__":
    main()
