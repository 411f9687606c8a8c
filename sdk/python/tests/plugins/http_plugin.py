#!/usr/bin/env python3
"""A Plugin serving a real Flask (WSGI) or FastAPI (ASGI) app, for the HTTP tests.

PVTEST_FRAMEWORK  "flask" or "fastapi"
PVTEST_GRACE      run(grace=...)
PVTEST_MARKER     file the app appends events to: "stream closed" when a
                  streaming response is stopped, "startup" / "shutdown" for
                  FastAPI's lifespan

Routes (both apps):
  GET  /where          JSON: what the app saw of the request (paths, query, headers, client, server)
  POST /upload         reads the body in 64 KiB chunks: JSON {"bytes": n, "sha256": hex}
  GET  /stream?n=N     N chunks "chunk I\\n", one at a time
  GET  /forever        a chunk every 20 ms until the client goes away
  GET  /fail-before    raises before any response
  GET  /fail-after     sends one chunk, then raises
"""

import hashlib
import os
import time

from plugvisor_plugin import Plugin, run

MARKER = os.environ.get("PVTEST_MARKER", os.devnull)
CHUNK = 64 * 1024


def note(line):
    with open(MARKER, "a") as f:
        f.write(line + "\n")


def flask_app():
    from flask import Flask, Response, jsonify, request

    app = Flask("http-plugin")
    app.config["PROPAGATE_EXCEPTIONS"] = True  # errors reach the SDK, which answers 500

    @app.get("/where")
    def where():
        env = request.environ
        keys = ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR",
                "REMOTE_PORT", "CONTENT_TYPE", "HTTP_X_TEST", "wsgi.url_scheme", "SERVER_PROTOCOL")
        body = {k: env.get(k) for k in keys}
        body["args"] = request.args.to_dict()
        body["url"] = request.url
        response = jsonify(body)
        response.headers["X-Echo"] = request.headers.get("X-Test", "")
        response.headers.add("Set-Cookie", "a=1")
        response.headers.add("Set-Cookie", "b=2")
        return response

    @app.post("/upload")
    def upload():
        digest, n = hashlib.sha256(), 0
        stream = request.stream
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            n += len(chunk)
        return jsonify(bytes=n, sha256=digest.hexdigest())

    @app.get("/stream")
    def stream():
        n = int(request.args.get("n", "3"))
        return Response((f"chunk {i}\n".encode() for i in range(n)), mimetype="text/plain")

    @app.get("/forever")
    def forever():
        def chunks():
            try:
                i = 0
                while True:
                    yield f"tick {i}\n".encode()
                    i += 1
                    time.sleep(0.02)
            finally:
                note("stream closed")

        return Response(chunks(), mimetype="text/plain")

    @app.get("/fail-before")
    def fail_before():
        raise RuntimeError("failed before the head")

    @app.get("/fail-after")
    def fail_after():
        def chunks():
            yield b"first\n"
            raise RuntimeError("failed after the head")

        return Response(chunks(), mimetype="text/plain")

    return app


def fastapi_app():
    import asyncio
    import contextlib

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    @contextlib.asynccontextmanager
    async def lifespan(app):
        note("startup")
        yield {"started": True}
        note("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/where")
    async def where(request: Request):
        scope = request.scope
        body = {
            "path": scope["path"],
            "root_path": scope["root_path"],
            "raw_path": scope["raw_path"].decode(),
            "query_string": scope["query_string"].decode(),
            "client": list(scope["client"]),
            "server": list(scope["server"]),
            "scheme": scope["scheme"],
            "http_version": scope["http_version"],
            "x_test": request.headers.get("x-test"),
            "args": dict(request.query_params),
            "url": str(request.url),
            "state": request.state.started,
        }
        response = JSONResponse(body, headers={"X-Echo": request.headers.get("x-test", "")})
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    @app.post("/upload")
    async def upload(request: Request):
        digest, n = hashlib.sha256(), 0
        async for chunk in request.stream():
            digest.update(chunk)
            n += len(chunk)
        return {"bytes": n, "sha256": digest.hexdigest()}

    @app.get("/stream")
    async def stream(n: int = 3):
        async def chunks():
            for i in range(n):
                yield f"chunk {i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/forever")
    async def forever():
        async def chunks():
            try:
                i = 0
                while True:
                    yield f"tick {i}\n".encode()
                    i += 1
                    await asyncio.sleep(0.02)
            finally:
                note("stream closed")

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/fail-before")
    async def fail_before():
        raise RuntimeError("failed before the head")

    @app.get("/fail-after")
    async def fail_after():
        async def chunks():
            yield b"first\n"
            raise RuntimeError("failed after the head")

        return StreamingResponse(chunks(), media_type="text/plain")

    return app


class HttpPlugin(Plugin):
    def on_activate(self):
        self.api.log.info("activated")


if __name__ == "__main__":
    framework = os.environ["PVTEST_FRAMEWORK"]
    options = {"grace": float(os.environ["PVTEST_GRACE"])} if os.environ.get("PVTEST_GRACE") else {}
    run(HttpPlugin(), http=flask_app() if framework == "flask" else fastapi_app(), **options)
