"""Everything a plugin's start imports, imported ahead of it.

plugvisor's zygote imports this module before it forks Python plugins: a
forked plugin then finds these modules in memory, shared with every other
plugin of its venv, instead of importing them itself (a third of a forked
start went to these imports). An exec'd plugin never imports it: the SDK's
own imports stay lazy there, so a plugin loads only what it uses.

Importing it starts no thread and creates no gRPC channel or server.
"""

import concurrent.futures.thread  # noqa: F401
import json  # noqa: F401

import grpc._channel
import grpc._server
import grpc.experimental  # noqa: F401
import grpc_health.v1.health  # noqa: F401

from . import (  # noqa: F401
    _apps,
    _asgi,
    _broker,
    _deferred,
    _exit,
    _hostapi,
    _http,
    _lifecycle,
    _server,
    _services,
    _stdio,
    _wire,
    _wsgi,
    log,
)

try:  # AutoMTLS, the host's default, needs cryptography
    import cryptography.hazmat.backends.openssl  # noqa: F401

    from . import _tls  # noqa: F401
except ImportError:
    pass
