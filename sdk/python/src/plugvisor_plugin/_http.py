"""plugvisor.v1.Http/ServeHTTP: the host's /plugins/{id}/... requests, for a
WSGI or ASGI app.

The request stream is the head, then body chunks; the host half-closing it
ends the body. The response stream is the head, then body chunks and
flushes. The call ending OK ends the response; any other status aborts it
(the client sees a broken connection, never a truncated success). A client
that goes away cancels the call. Bodies are streamed both ways: nothing
here holds a whole body, and gRPC's flow control is the backpressure.
"""

from __future__ import annotations

import logging
from typing import Iterable, Iterator, Optional, Protocol, Union

import grpc

from ._apps import AsgiApp, WsgiApp
from ._proto.plugvisor.v1 import http_pb2 as pb
from ._proto.plugvisor.v1 import http_pb2_grpc as pb_grpc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._server import Runtime

_log = logging.getLogger("plugvisor_plugin.http")

#: The largest body part sent in one message; a bigger chunk of the app's is split.
MAX_BODY_PART = 1 << 20
FLUSH = pb.HttpResponsePart(flush=pb.HttpFlush())
INTERNAL_ERROR_BODY = b"Internal Server Error\n"

HeaderItems = Iterable[tuple[Union[str, bytes], Union[str, bytes]]]


class ClientDisconnected(OSError):
    """The HTTP client went away (the ServeHTTP call was cancelled)."""


class RequestBody:
    """The request's body chunks, pulled from the call as the app reads them."""

    def __init__(self, parts: Iterator[pb.HttpRequestPart]) -> None:
        self._parts = parts
        self.done = False

    def next_chunk(self) -> Optional[bytes]:
        """The next non-empty chunk; None at the end of the body.
        Raises ClientDisconnected when the call was cancelled."""
        if self.done:
            return None
        try:
            for part in self._parts:
                if part.WhichOneof("part") == "body":
                    if part.body:
                        return part.body
                    continue
                raise ValueError("a second request head arrived in the body")
        except grpc.RpcError:
            self.done = True
            raise ClientDisconnected("the client went away while sending the request body") from None
        self.done = True
        return None


def head_part(status: int, headers: HeaderItems) -> pb.HttpResponsePart:
    out = []
    for name, value in headers:
        name_s = name.decode("latin-1") if isinstance(name, bytes) else name
        value_b = value if isinstance(value, bytes) else value.encode("latin-1")
        out.append(pb.HttpHeader(name=name_s.lower(), value=value_b))
    return pb.HttpResponsePart(head=pb.HttpResponseHead(status=status, headers=out))


def body_parts(data: bytes) -> Iterator[pb.HttpResponsePart]:
    view = memoryview(data)
    for start in range(0, len(view), MAX_BODY_PART):
        yield pb.HttpResponsePart(body=bytes(view[start : start + MAX_BODY_PART]))


def error_response() -> Iterator[pb.HttpResponsePart]:
    """A plain 500: what the client gets when the app failed before its head."""
    headers = [("content-type", "text/plain; charset=utf-8"), ("content-length", str(len(INTERNAL_ERROR_BODY)))]
    yield head_part(500, headers)
    yield pb.HttpResponsePart(body=INTERNAL_ERROR_BODY)


_HEX_DIGITS = "0123456789abcdefABCDEF"
_HEX_BYTE = {(a + b).encode(): bytes.fromhex(a + b) for a in _HEX_DIGITS for b in _HEX_DIGITS}


def unquote_to_bytes(text: str) -> bytes:
    """urllib.parse.unquote_to_bytes(text), without urllib: importing
    urllib.parse (ipaddress and all) would cost every plugin's start a few
    milliseconds. %XX decodes to the byte; a % not followed by two hex
    digits stays as it is; the rest is UTF-8."""
    data = text.encode("utf-8")
    if b"%" not in data:
        return data
    first, *rest = data.split(b"%")
    out = [first]
    for part in rest:
        byte = _HEX_BYTE.get(part[:2])
        if byte is None:
            out += (b"%", part)
        else:
            out += (byte, part[2:])
    return b"".join(out)


def header_values(head: pb.HttpRequestHead, name: str) -> list[bytes]:
    return [h.value for h in head.headers if h.name == name]


def host_and_port(head: pb.HttpRequestHead) -> tuple[str, int]:
    """SERVER_NAME / SERVER_PORT from the Host header (or the scheme's default port)."""
    default = 443 if head.scheme == "https" else 80
    values = header_values(head, "host") or header_values(head, ":authority")
    host = values[0].decode("latin-1") if values else "localhost"
    if host.startswith("["):  # [::1]:8080
        addr, _, rest = host[1:].partition("]")
        return addr, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, int(port)
    return host, default


def client_address(remote_addr: str) -> tuple[str, int]:
    """("IP", PORT) from "IP:PORT" or "[IPv6]:PORT"."""
    addr, sep, port = remote_addr.rpartition(":")
    if not sep:
        return remote_addr, 0
    return addr.strip("[]"), int(port) if port.isdigit() else 0


class Adapter(Protocol):
    def serve(
        self, head: pb.HttpRequestHead, body: RequestBody, context: grpc.ServicerContext
    ) -> Iterator[pb.HttpResponsePart]: ...

    def startup(self) -> None: ...

    def shutdown(self) -> None: ...

    def close(self) -> None: ...


class HttpComponent(pb_grpc.HttpServicer):
    """Serves plugvisor.v1.Http for one app; the lifecycle calls startup/shutdown."""

    def __init__(self, app: Union[WsgiApp, AsgiApp]) -> None:
        self.app = app
        self.adapter: Optional[Adapter] = None

    def load_adapter(self) -> None:
        """Import the app's adapter (WSGI or ASGI) now; register() does it otherwise."""
        if self.adapter is not None:
            return
        if isinstance(self.app, AsgiApp):
            from ._asgi import AsgiAdapter

            self.adapter = AsgiAdapter(self.app.app)  # starts its event loop thread
        else:
            from ._wsgi import WsgiAdapter

            self.adapter = WsgiAdapter(self.app.app)

    # -- Component --------------------------------------------------------------------
    def register(self, server: grpc.Server, runtime: Runtime) -> None:
        self.load_adapter()
        pb_grpc.add_HttpServicer_to_server(self, server)

    def stopping(self) -> None:
        pass

    def stopped(self) -> None:
        if self.adapter is not None:
            self.adapter.close()

    # -- what the lifecycle calls -------------------------------------------------------
    def startup(self) -> None:
        if self.adapter is not None:
            self.adapter.startup()

    def shutdown(self) -> None:
        if self.adapter is not None:
            self.adapter.shutdown()

    # -- the RPC ---------------------------------------------------------------------------
    def ServeHTTP(
        self, request_iterator: Iterator[pb.HttpRequestPart], context: grpc.ServicerContext
    ) -> Iterator[pb.HttpResponsePart]:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "head":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ServeHTTP: the first request part must be the head")
        assert self.adapter is not None
        return self.adapter.serve(first.head, RequestBody(request_iterator), context)
