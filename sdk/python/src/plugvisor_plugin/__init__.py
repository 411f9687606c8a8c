"""Write plugvisor / HashiCorp go-plugin gRPC plugins in Python.

    import plugvisor_plugin

    def register(server):          # a grpc.Server: add your servicers here
        ...

    plugvisor_plugin.serve(register, on_shutdown=lambda: ...)

serve() checks the magic cookie, negotiates the app version, serves
grpc.health.v1 ("plugin" is SERVING), plugin.GRPCController and
plugin.GRPCStdio, prints the handshake line (serving go-plugin's AutoMTLS
when the host asks for it), and stops cleanly on the controller's Shutdown,
SIGTERM/SIGINT or the host's death. See sdk/python/README.md.

Importing this package is cheap: grpc is imported only when serve() runs.
"""

from __future__ import annotations

from ._handshake import DEFAULT_COOKIE_KEY, DEFAULT_COOKIE_VALUE, HandshakeError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time
    from typing import Any, Callable, Optional

    from ._handshake import AppVersion

__version__ = "0.1.0"

__all__ = [
    "serve",
    "HandshakeError",
    "DEFAULT_COOKIE_KEY",
    "DEFAULT_COOKIE_VALUE",
    "__version__",
]

#: Default bound on captured stdout/stderr waiting for the host (bytes).
DEFAULT_STDIO_BUFFER_BYTES = 1 << 20


def serve(
    register: Optional[Callable[[Any], None]] = None,
    *,
    app_version: AppVersion = 1,
    network: str = "auto",
    magic_cookie_key: str = DEFAULT_COOKIE_KEY,
    magic_cookie_value: str = DEFAULT_COOKIE_VALUE,
    on_shutdown: Optional[Callable[[], None]] = None,
    grace: float = 2.0,
    install_logging: bool = True,
    log_level: Any = "info",
    capture_stdio: bool = True,
    stdio_buffer_bytes: int = DEFAULT_STDIO_BUFFER_BYTES,
    max_workers: int = 10,
    watch_host: bool = True,
) -> None:
    """Serve the plugin until the host stops it, then exit the process.

    register(server): called with the grpc.Server before it starts; add your
        own servicers to it.
    app_version: the app protocol version(s) this plugin speaks (an int or a
        list of ints); the highest one the host also accepts
        (PLUGIN_PROTOCOL_VERSIONS) is used.
    network: "auto" (a unix socket, tcp where there are none), "unix" or
        "tcp" (127.0.0.1, inside PLUGIN_MIN_PORT..PLUGIN_MAX_PORT when set).
    magic_cookie_key / magic_cookie_value: the environment variable the host
        sets; without it the plugin explains itself on stderr and exits 1.
    on_shutdown(): runs exactly once on every graceful stop (controller
        Shutdown, SIGTERM/SIGINT, host death), after the server has drained.
        If it raises, the exit status is 1.
    grace: seconds the server waits for in-flight RPCs when stopping.
    install_logging / log_level: put an hclog JSON handler (plugvisor_plugin.log)
        on the root logger, writing to file descriptor 2.
    capture_stdio / stdio_buffer_bytes: send sys.stdout / sys.stderr writes to
        the host through plugin.GRPCStdio, keeping at most this many bytes
        waiting (oldest dropped first).
    max_workers: threads serving RPCs (a StreamStdio call holds one).
    watch_host: exit when the parent process (the host) goes away.

    AutoMTLS: when the host sets PLUGIN_CLIENT_CERT (go-plugin's AutoMTLS),
    the plugin serves TLS that only that certificate's holder may connect
    to, and announces its own certificate in the handshake.

    Never returns. After a graceful stop it waits for non-daemon threads,
    runs the atexit handlers, flushes stdout/stderr and ends the process with
    os._exit (status 0; 1 when on_shutdown failed), so `finally:` blocks
    around serve() do not run. Raises SystemExit(1) when the plugin cannot
    start.
    """
    from . import _server

    _server.serve(
        register,
        app_version=app_version,
        network=network,
        magic_cookie_key=magic_cookie_key,
        magic_cookie_value=magic_cookie_value,
        on_shutdown=on_shutdown,
        grace=grace,
        install_logging=install_logging,
        log_level=log_level,
        capture_stdio=capture_stdio,
        stdio_buffer_bytes=stdio_buffer_bytes,
        max_workers=max_workers,
        watch_host=watch_host,
    )


def __getattr__(name: str) -> "Any":
    # `plugvisor_plugin.log` without an explicit `import plugvisor_plugin.log`.
    if name == "log":
        import importlib

        return importlib.import_module(".log", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
