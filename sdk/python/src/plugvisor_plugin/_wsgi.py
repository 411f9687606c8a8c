"""A WSGI (PEP 3333) app behind plugvisor.v1.Http.

The app runs on the RPC's thread. environ follows PEP 3333: SCRIPT_NAME is
the mount path ("/plugins/{id}"), PATH_INFO the rest of the path,
percent-decoded (bytes as latin-1, WSGI's "native strings"), QUERY_STRING as
sent, CONTENT_TYPE / CONTENT_LENGTH and HTTP_* from the headers,
REMOTE_ADDR / REMOTE_PORT from the client's address, SERVER_NAME /
SERVER_PORT from the Host header, and wsgi.input reading body chunks from
the call as the app asks for them (wsgi.input_terminated: reading to the end
is safe without CONTENT_LENGTH).

A response that is not a list or tuple (a generator, Flask's iterator)
streams: each chunk goes out as its own body part followed by a flush. On a
client disconnect the iteration stops and the app's iterable is closed
(its generator sees GeneratorExit). An exception before the head gives a
500; after it, the call is aborted with INTERNAL.
"""

from __future__ import annotations

import io
import logging
import sys
from typing import Any, Callable, Iterable, Iterator, Optional

import grpc

from ._http import (
    FLUSH,
    ClientDisconnected,
    RequestBody,
    body_parts,
    client_address,
    error_response,
    head_part,
    host_and_port,
    unquote_to_bytes,
)
from ._proto.plugvisor.v1 import http_pb2 as pb

_log = logging.getLogger("plugvisor_plugin.http")

#: How much of the body wsgi.input reads ahead.
INPUT_BUFFER = 64 * 1024

WsgiCallable = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _RawBody(io.RawIOBase):
    def __init__(self, body: RequestBody) -> None:
        super().__init__()
        self._body = body
        self._chunk = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._chunk:
            chunk = self._body.next_chunk()
            if chunk is None:
                return 0
            self._chunk = memoryview(chunk)
        n = min(len(buffer), len(self._chunk))
        buffer[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        return n


def wsgi_input(body: RequestBody) -> io.BufferedReader:
    """A file-like wsgi.input over the request's body chunks."""
    return io.BufferedReader(_RawBody(body), INPUT_BUFFER)


def environ_for(head: pb.HttpRequestHead, body: RequestBody) -> dict[str, Any]:
    server_name, server_port = host_and_port(head)
    remote, remote_port = client_address(head.remote_addr)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": head.method,
        "SCRIPT_NAME": head.mount_path.rstrip("/"),
        "PATH_INFO": unquote_to_bytes(head.path or "/").decode("latin-1"),
        "QUERY_STRING": head.query,
        "SERVER_NAME": server_name,
        "SERVER_PORT": str(server_port),
        "SERVER_PROTOCOL": head.http_version or "HTTP/1.1",
        "REMOTE_ADDR": remote,
        "REMOTE_PORT": str(remote_port),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": head.scheme or "http",
        "wsgi.input": wsgi_input(body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "plugvisor.plugin_id": head.plugin_id,
    }
    for header in head.headers:
        value = header.value.decode("latin-1")
        if header.name == "content-type":
            environ["CONTENT_TYPE"] = value
        elif header.name == "content-length":
            environ["CONTENT_LENGTH"] = value
        elif not header.name.startswith(":"):
            key = "HTTP_" + header.name.upper().replace("-", "_")
            if key in environ:  # a repeated header: one value, as a proxy would fold it
                value = environ[key] + ("; " if key == "HTTP_COOKIE" else ", ") + value
            environ[key] = value
    return environ


class _Response:
    """start_response, and what it was told."""

    def __init__(self) -> None:
        self.status: Optional[int] = None
        self.headers: list[tuple[str, str]] = []
        self.head_sent = False
        self.written: list[bytes] = []

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            if self.head_sent:
                raise exc_info[1].with_traceback(exc_info[2])
        elif self.status is not None:
            raise RuntimeError("start_response was called twice without exc_info")
        try:
            self.status = int(status.split(" ", 1)[0])
        except ValueError:
            raise ValueError(f"start_response: bad status {status!r}") from None
        self.headers = list(headers)
        return self.written.append  # the legacy write(): sent before the iterable's chunks


class WsgiAdapter:
    def __init__(self, app: WsgiCallable) -> None:
        self.app = app

    def startup(self) -> None:
        pass  # WSGI has no lifespan

    def shutdown(self) -> None:
        pass

    def close(self) -> None:
        pass

    def serve(
        self, head: pb.HttpRequestHead, body: RequestBody, context: grpc.ServicerContext
    ) -> Iterator[pb.HttpResponsePart]:
        response = _Response()
        try:
            result = self.app(environ_for(head, body), response.start_response)
        except Exception:
            _log.exception("the WSGI app failed", extra={"method": head.method, "path": head.path})
            yield from error_response()
            return
        failure: Optional[str] = None
        try:
            streaming = not isinstance(result, (list, tuple))
            chunks: Iterator[bytes] = iter(result)
            while True:
                if response.written:
                    chunk = response.written.pop(0)
                else:
                    try:
                        chunk = next(chunks)
                    except StopIteration:
                        break
                    except ClientDisconnected:
                        return
                    except Exception as e:
                        _log.exception("the WSGI app failed", extra={"method": head.method, "path": head.path})
                        if not response.head_sent:
                            yield from error_response()
                            return
                        failure = f"the app failed after sending the response head: {type(e).__name__}: {e}"
                        break
                if not context.is_active():
                    return  # the client went away: finally closes the app's iterable
                if not chunk:
                    continue
                if not response.head_sent:
                    if response.status is None:
                        _log.error("the WSGI app sent a body without calling start_response", extra={"path": head.path})
                        yield from error_response()
                        return
                    yield self._head(response)
                yield from body_parts(chunk)
                if streaming:
                    yield FLUSH
            if failure is None and not response.head_sent:
                if response.status is None:
                    _log.error("the WSGI app returned without calling start_response", extra={"path": head.path})
                    yield from error_response()
                    return
                yield self._head(response)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    _log.exception("closing the WSGI app's response failed")
        if failure is not None:
            context.abort(grpc.StatusCode.INTERNAL, failure)

    @staticmethod
    def _head(response: _Response) -> pb.HttpResponsePart:
        assert response.status is not None
        response.head_sent = True
        return head_part(response.status, response.headers)
