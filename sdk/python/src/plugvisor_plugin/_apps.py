"""Which kind of web app run(http=...) was given: WSGI or ASGI.

Cheap (no grpc, no asyncio), so that the wrappers can be imported from
plugvisor_plugin itself.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: keep `import plugvisor_plugin` light
    from typing import Any, Callable, Union


class WsgiApp:
    """Serve `app` as a WSGI (PEP 3333) application: Flask, Django, ..."""

    def __init__(self, app: Callable[..., Any]) -> None:
        if not callable(app):
            raise TypeError(f"a WSGI app is callable; {app!r} is not")
        self.app = app


class AsgiApp:
    """Serve `app` as an ASGI 3 application: FastAPI, Starlette, ..."""

    def __init__(self, app: Callable[..., Any]) -> None:
        if not callable(app):
            raise TypeError(f"an ASGI app is callable; {app!r} is not")
        self.app = app


def check(app: object) -> None:
    """TypeError unless `app` can be served: a wrapper or a callable (cheap: no inspect)."""
    if not isinstance(app, (WsgiApp, AsgiApp)) and not callable(app):
        raise _not_an_app(app)


def _not_an_app(app: object) -> TypeError:
    return TypeError(f"http= takes a WSGI or ASGI app, not {type(app).__name__}")


def detect(app: object) -> Union[WsgiApp, AsgiApp]:
    """WsgiApp or AsgiApp for `app`: given wrappers are kept; an app whose
    call is a coroutine function (async def __call__ or an async function)
    is ASGI, any other callable WSGI."""
    import inspect

    if isinstance(app, (WsgiApp, AsgiApp)):
        return app
    if not callable(app):
        raise _not_an_app(app)
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(type(app).__call__):
        return AsgiApp(app)
    return WsgiApp(app)
