"""bench/'s WSGI app: the same app behind plugvisor (plugin.py, through the
Python SDK's plugvisor.v1.Http) and served directly by gunicorn
(`gunicorn bench_app:app`), so that the two can be set side by side.

    GET  /small            13 bytes of text (the requests-per-second row)
    GET  /download?size=N  N bytes, in 1 MiB chunks (a streamed response)
    POST /upload           reads the body in 1 MiB chunks to the end; {"bytes": N}
    GET  /bench/kv?op=get|set&n=N&size=B
                           (plugin only) N host API kv calls, each timed:
                           {"latencies_us": [...]}; every set writes a
                           value that differs from the one before (SQLite
                           does not write a row whose value is unchanged,
                           so a set of the same value would time no fsync)

Standard library only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

SMALL = b"hello, world\n"
CHUNK = 1 << 20
_BLOCK = bytes((ord("a") + i % 26) for i in range(CHUNK))


def _download(size: int) -> Iterator[bytes]:
    while size > 0:
        n = min(size, CHUNK)
        yield _BLOCK if n == CHUNK else _BLOCK[:n]
        size -= n


def make_app(plugin: Any = None) -> Callable[..., Iterable[bytes]]:
    """The app; `plugin` (a plugvisor_plugin.Plugin) gives /bench/kv its host API."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if path == "/small" and method == "GET":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(SMALL)))])
            return [SMALL]
        if path == "/download" and method == "GET":
            size = int(query.get("size", ["0"])[0])
            start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
            return _download(size)
        if path == "/upload" and method == "POST":
            stream = environ["wsgi.input"]
            total = 0
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                total += len(chunk)
            body = json.dumps({"bytes": total}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/bench/kv" and method == "GET" and plugin is not None:
            op = query.get("op", [""])[0]
            n = int(query.get("n", ["0"])[0])
            size = int(query.get("size", ["0"])[0])
            if n < 1 or size < 1 or op not in ("get", "set"):
                start_response("400 Bad Request", [("Content-Type", "text/plain")])
                return [b"want op=get|set, n>=1 and size>=1\n"]
            kv = plugin.api.kv
            kv.set("bench", b"v" * size)
            values = [bytes([ord("a") + i]) + b"v" * (size - 1) for i in range(26)]
            latencies = []
            clock = time.perf_counter_ns
            for i in range(n):
                value = values[i % 26]
                t = clock()
                if op == "get":
                    kv.get("bench")
                else:
                    kv.set("bench", value)
                latencies.append((clock() - t) / 1e3)
            body = json.dumps({"op": op, "n": n, "size": size, "latencies_us": latencies}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return app


app = make_app()
