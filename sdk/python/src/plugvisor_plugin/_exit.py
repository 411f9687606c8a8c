"""The quick end of a plugin process, after all of Python's own cleanup.

serve() and run() end by raising SystemExit out of the main module, so
`finally:` blocks, `with` statements and atexit handlers around them run as
in any Python program. The interpreter's exit then does, in order (CPython
3.10-3.13, Py_FinalizeEx):

1. threading._shutdown(): the callbacks of threading._register_atexit (LIFO),
   then it joins every non-daemon thread;
2. the atexit handlers, last registered first;
3. tears down every module and grpc's C core: 20-30 ms for a process that
   is about to vanish, most of a plugin's stop.

arm() skips step 3 only. Its threading callback runs once the main module
has finished, and registers an atexit handler then: the newest, so it runs
first. That handler runs every other atexit handler itself (each exactly
once, in the usual order), flushes stdout and stderr and calls os._exit with
the status serve() raised. When an uncaught exception ended the main module
instead (the interpreter has printed it and will exit 1), the handler does
nothing and the interpreter exits its slow, ordinary way.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

#: How long non-daemon threads may hold the exit up (a stuck RPC handler,
#: say) before the process is ended anyway, with the same status.
EXIT_WATCHDOG_SECONDS = 5.0

_armed_code: int | None = None


def arm(code: int) -> None:
    """End the process with `code` right after the interpreter's atexit step.

    Call it just before raising SystemExit(code) from the main thread. A
    second call only changes the status.
    """
    global _armed_code
    first = _armed_code is None
    _armed_code = code
    if not first:
        return
    # Threads cannot be started once the interpreter is exiting (3.12+).
    threading.Thread(target=_watchdog, name="plugvisor-exit-watchdog", daemon=True).start()
    register = getattr(threading, "_register_atexit", None)
    if register is None:  # pragma: no cover - CPython has had it since 3.9
        atexit.register(_fast_exit)
        return
    try:
        register(_on_interpreter_exit)
    except RuntimeError:  # threading already shut down: nothing left to wait for
        atexit.register(_fast_exit)


_exit_begun = threading.Event()
_threads_joined = threading.Event()


def _on_interpreter_exit() -> None:
    # The main module has finished; threading is about to join the
    # non-daemon threads. Bound that, then take the first atexit turn.
    _exit_begun.set()
    atexit.register(_fast_exit)


def _watchdog() -> None:
    _exit_begun.wait()
    if not _threads_joined.wait(EXIT_WATCHDOG_SECONDS):
        flush_std()
        os._exit(_armed_code or 0)


def _fast_exit() -> None:
    _threads_joined.set()
    if _uncaught_exception():
        return  # the interpreter exits 1 the ordinary way
    atexit.unregister(_fast_exit)
    atexit._run_exitfuncs()  # every other handler, logging.shutdown() among them
    flush_std()
    os._exit(_armed_code or 0)


def _uncaught_exception() -> bool:
    # The interpreter stores an uncaught exception here after printing it.
    return getattr(sys, "last_exc", None) is not None or getattr(sys, "last_value", None) is not None


def flush_std() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
