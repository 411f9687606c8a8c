"""The keyword options of serve() and run(): their one definition.

`Options` names each option and its type (serve() and run() take
`**options: Unpack[Options]`, so type checkers check them); `DEFAULTS`
holds each default. Nothing else repeats them: the entry points forward the
keywords, the runtime reads `resolve(options)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, TypedDict

from ._handshake import DEFAULT_COOKIE_KEY, DEFAULT_COOKIE_VALUE

if TYPE_CHECKING:
    from ._handshake import AppVersion

#: Captured stdout/stderr that may wait for the host (bytes).
DEFAULT_STDIO_BUFFER_BYTES = 1 << 20
#: Seconds in-flight RPCs get to finish when the plugin stops.
DEFAULT_GRACE = 2.0
#: Threads serving RPCs (made as needed). Every open stream holds one, and
#: a health check waits behind them when all are taken: with a few long
#: HTTP responses (server-sent events) open, 10 was too few.
DEFAULT_MAX_WORKERS = 32
#: Seconds the broker waits for the host to announce a connection.
DEFAULT_BROKER_TIMEOUT = 10.0


class Options(TypedDict, total=False):
    """Keyword options of serve() and run(); every one has a default (DEFAULTS)."""

    app_version: AppVersion
    """App protocol version(s) the plugin speaks, an int or a list; the highest
    one the host also accepts (PLUGIN_PROTOCOL_VERSIONS) wins. Default 1."""
    network: str
    """"auto" (a unix socket; tcp where there are none), "unix", or "tcp"
    (127.0.0.1, inside PLUGIN_MIN_PORT..PLUGIN_MAX_PORT when set). Default "auto"."""
    magic_cookie_key: str
    """The environment variable the host must set. Default MATTERMOST_PLUGIN."""
    magic_cookie_value: str
    """Its expected value. Default "Securely message teams, anywhere."."""
    on_shutdown: Callable[[], None] | None
    """Called once on every graceful stop, after the server has drained; if it
    raises, the exit status is 1. Default None."""
    grace: float
    """Seconds in-flight RPCs get to finish when stopping. Default 2.0."""
    install_logging: bool
    """Put the hclog JSON handler (plugvisor_plugin.log) on the root logger. Default True."""
    log_level: int | str
    """The root logger's level when install_logging is on. Default "info"."""
    capture_stdio: bool
    """Send sys.stdout / sys.stderr writes to the host through plugin.GRPCStdio. Default True."""
    stdio_buffer_bytes: int
    """How much captured output may wait for the host; the oldest goes first. Default 1 MiB."""
    max_workers: int
    """Threads serving RPCs, made as needed; every open stream (stdio, broker, an HTTP
    request) holds one, and health checks wait when all are taken. Default 32."""
    watch_host: bool
    """Stop when the parent process (the host) goes away. Default True."""
    broker_timeout: float
    """run() only: seconds a broker dial waits for the host to announce the
    connection (go-plugin's own is a fixed 5 s). Default 10.0."""


DEFAULTS: Options = {
    "app_version": 1,
    "network": "auto",
    "magic_cookie_key": DEFAULT_COOKIE_KEY,
    "magic_cookie_value": DEFAULT_COOKIE_VALUE,
    "on_shutdown": None,
    "grace": DEFAULT_GRACE,
    "install_logging": True,
    "log_level": "info",
    "capture_stdio": True,
    "stdio_buffer_bytes": DEFAULT_STDIO_BUFFER_BYTES,
    "max_workers": DEFAULT_MAX_WORKERS,
    "watch_host": True,
    "broker_timeout": DEFAULT_BROKER_TIMEOUT,
}


def resolve(options: Mapping[str, Any]) -> Options:
    """The defaults overlaid with `options`; TypeError/ValueError for a bad one."""
    unknown = sorted(set(options) - set(Options.__annotations__))
    if unknown:
        known = ", ".join(Options.__annotations__)
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; the options are: {known}")
    out: Options = {**DEFAULTS, **options}  # type: ignore[typeddict-item]  # keys checked above
    if out["network"] not in ("auto", "unix", "tcp"):
        raise ValueError(f"network must be 'auto', 'unix' or 'tcp', not {out['network']!r}")
    for name in ("grace", "broker_timeout"):
        value = out[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number of seconds, not {value!r}")
    on_shutdown = out["on_shutdown"]
    if on_shutdown is not None and not callable(on_shutdown):
        raise TypeError("on_shutdown must be callable")
    if out["max_workers"] < 1:
        raise ValueError("max_workers must be at least 1")
    return out
