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

from ._apps import AsgiApp, WsgiApp
from ._errors import BrokerTimeout, HostApiError, HostUnavailable, InvalidArgument, LimitExceeded, NoHostApi
from ._handshake import DEFAULT_COOKIE_KEY, DEFAULT_COOKIE_VALUE, HandshakeError
from ._plugin import Plugin

__version__ = "0.2.0"

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time
    import sys
    from typing import Any, Callable, Optional

    import grpc

    from ._hostapi import HostApi as HostApi
    from ._options import DEFAULTS as DEFAULTS
    from ._options import Options as Options

    if sys.version_info >= (3, 11):
        from typing import Unpack
    else:
        from typing_extensions import Unpack

__all__ = [
    "DEFAULTS",
    "DEFAULT_COOKIE_KEY",
    "DEFAULT_COOKIE_VALUE",
    "AsgiApp",
    "BrokerTimeout",
    "HandshakeError",
    "HostApi",
    "HostApiError",
    "HostUnavailable",
    "InvalidArgument",
    "LimitExceeded",
    "NoHostApi",
    "Options",
    "Plugin",
    "WsgiApp",
    "__version__",
    "run",
    "serve",
]


def serve(register: Optional[Callable[[grpc.Server], None]] = None, **options: Unpack[Options]) -> None:
    """Serve the plugin until the host stops it, then raise SystemExit.

    register(server) gets the grpc.Server before it starts: add your
    servicers there. The options (plugvisor_plugin.Options) have defaults.

    After a graceful stop (controller Shutdown, SIGTERM/SIGINT, host death)
    it raises SystemExit(0), or SystemExit(1) when on_shutdown raised, so
    `finally:` blocks, `with` statements and atexit handlers around it run;
    the process then ends without the interpreter's slow teardown. Raises
    SystemExit(1) when the plugin cannot start.
    """
    from . import _server

    _server.run_plugin(register, options)


def run(plugin: Plugin, *, http: object = None, **options: Unpack[Options]) -> None:
    """Run a Plugin until the host stops it, then raise SystemExit (as serve()).

    Beside everything serve() does, it serves plugvisor.v1.Lifecycle (the
    hooks the plugin overrides), go-plugin's broker (for the host API) and,
    given http=, a WSGI or ASGI app through plugvisor.v1.Http. The plugin's
    register(server) adds servicers of its own, whose service names are
    reported to the host.
    """
    from . import _server

    _server.run_plugin_object(plugin, http, options)


def __getattr__(name: str) -> Any:
    # Submodules and names that cost an import, on first use.
    import importlib

    if name in ("log", "testing"):
        return importlib.import_module("." + name, __name__)
    if name in ("Options", "DEFAULTS"):
        return getattr(importlib.import_module("._options", __name__), name)
    if name == "HostApi":
        return importlib.import_module("._hostapi", __name__).HostApi
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
