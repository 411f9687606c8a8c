"""HTTP requests through plugvisor.v1.Http/ServeHTTP, as the host sends them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Sequence, Union

import grpc

from .._errors import rpc_status
from .._proto.plugvisor.v1 import http_pb2 as pb
from .._proto.plugvisor.v1 import http_pb2_grpc as pb_grpc

#: Request body parts the test host sends at most (a bigger bytes body is split).
REQUEST_PART = 64 * 1024

Body = Union[bytes, Iterable[bytes]]
Headers = Sequence[tuple[str, Union[str, bytes]]]


class HttpAborted(Exception):
    """The plugin ended ServeHTTP with an error status instead of a response
    (after its head: the client would have seen a broken connection).
    `status` and `body` are what had arrived by then."""

    def __init__(self, code: Optional[grpc.StatusCode], details: str, status: Optional[int], body: bytes) -> None:
        super().__init__(f"ServeHTTP ended with {code.name if code else 'an error'}: {details}")
        self.code = code
        self.details = details
        self.status = status
        self.body = body


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, bytes]]
    #: The body parts as the plugin sent them (flushes not included).
    parts: list[bytes] = field(default_factory=list)
    #: How many HttpFlush parts came.
    flushes: int = 0

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)

    def header(self, name: str) -> Optional[str]:
        """The first value of a header (any case), or None."""
        name = name.lower()
        return next((v.decode("latin-1") for n, v in self.headers if n == name), None)

    def json(self) -> object:
        import json

        return json.loads(self.body)


def request_parts(
    method: str, path: str, query: str, headers: Headers, body: Body, head_fields: dict[str, str]
) -> Iterator[pb.HttpRequestPart]:
    head = pb.HttpRequestHead(
        method=method,
        path=path,
        query=query,
        headers=[
            pb.HttpHeader(name=n.lower(), value=v if isinstance(v, bytes) else v.encode("latin-1")) for n, v in headers
        ],
        **head_fields,
    )
    yield pb.HttpRequestPart(head=head)
    chunks: Iterable[bytes] = [body] if isinstance(body, (bytes, bytearray)) else body
    for chunk in chunks:
        for start in range(0, len(chunk), REQUEST_PART):
            yield pb.HttpRequestPart(body=bytes(chunk[start : start + REQUEST_PART]))


class HttpStream:
    """A response read part by part: `status` and `headers` at once, then
    iterate for the body chunks; cancel() is the client going away."""

    def __init__(self, call: Iterator[pb.HttpResponsePart], timeout: float) -> None:
        self._call = call
        self.flushes = 0
        self.status = 0
        self.headers: list[tuple[str, bytes]] = []
        first = self._next()
        if first is None or first.WhichOneof("part") != "head":
            raise HttpAborted(None, "the response did not start with a head", None, b"")
        self.status = first.head.status
        self.headers = [(h.name, h.value) for h in first.head.headers]

    def _next(self) -> Optional[pb.HttpResponsePart]:
        try:
            return next(self._call)
        except StopIteration:
            return None
        except grpc.RpcError as e:
            code, details = rpc_status(e)
            raise HttpAborted(code, details, self.status or None, b"") from None

    def __iter__(self) -> Iterator[bytes]:
        while (part := self._next()) is not None:
            kind = part.WhichOneof("part")
            if kind == "body":
                yield part.body
            elif kind == "flush":
                self.flushes += 1

    def cancel(self) -> None:
        self._call.cancel()  # type: ignore[attr-defined]


def open_stream(channel: grpc.Channel, parts: Iterator[pb.HttpRequestPart], timeout: float) -> HttpStream:
    call = pb_grpc.HttpStub(channel).ServeHTTP(parts, timeout=timeout)
    return HttpStream(call, timeout)


def collect(stream: HttpStream) -> HttpResponse:
    parts: list[bytes] = []
    try:
        for chunk in stream:
            parts.append(chunk)
    except HttpAborted as e:
        raise HttpAborted(e.code, e.details, stream.status, b"".join(parts)) from None
    return HttpResponse(stream.status, stream.headers, parts, stream.flushes)
