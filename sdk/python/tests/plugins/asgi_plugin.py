#!/usr/bin/env python3
"""A Plugin serving a bare ASGI app (no framework): its start must not wait
for asyncio's adapter, which loads after the handshake."""

from plugvisor_plugin import Plugin, run


class Asgi(Plugin):
    def on_activate(self):
        self.api.log.info("activated")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        assert (await receive())["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello from asgi\n"})


if __name__ == "__main__":
    run(Asgi(), http=app)
