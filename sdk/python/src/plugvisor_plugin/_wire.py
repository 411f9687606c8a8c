"""Hand-written protobuf (de)serializers for the two tiny go-plugin messages.

plugin.Empty and google.protobuf.Empty have no fields: zero bytes on the
wire. plugin.StdioData is

    message StdioData {
      enum Channel { INVALID = 0; STDOUT = 1; STDERR = 2; }
      Channel channel = 1;   // tag 0x08, varint
      bytes data = 2;        // tag 0x12, length-delimited
    }

Writing these by hand spares the SDK a grpcio-tools code generation step and
the import of generated modules.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time
    from typing import Tuple

INVALID = 0
STDOUT = 1
STDERR = 2

_WT_VARINT = 0
_WT_I64 = 1
_WT_LEN = 2
_WT_I32 = 5


def encode_empty(_message: object = None) -> bytes:
    return b""


class Empty:
    """A decoded plugin.Empty / google.protobuf.Empty."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Empty()"


EMPTY = Empty()


def decode_empty(data: bytes) -> Empty:
    # Unknown fields are allowed by protobuf; an Empty ignores them. grpc
    # treats a None result as a failed deserialization, hence the object.
    return EMPTY


def _encode_varint(n: int) -> bytes:
    if n < 0:
        n &= (1 << 64) - 1  # protobuf encodes negative int32/enum as 10-byte varint
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _decode_varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def encode_stdio_data(message: Tuple[int, bytes]) -> bytes:
    """Serialize (channel, data) as a plugin.StdioData message."""
    channel, data = message
    out = bytearray()
    if channel:
        out.append(0x08)
        out += _encode_varint(channel)
    if data:
        out.append(0x12)
        out += _encode_varint(len(data))
        out += data
    return bytes(out)


def decode_stdio_data(buf: bytes) -> Tuple[int, bytes]:
    """Parse a plugin.StdioData message into (channel, data).

    Unknown fields are skipped, as protobuf requires; the last occurrence of
    a repeated scalar field wins.
    """
    channel = 0
    data = b""
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = _decode_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == _WT_VARINT:
            value, pos = _decode_varint(buf, pos)
            if field == 1:
                channel = value if value < (1 << 63) else value - (1 << 64)
        elif wire_type == _WT_LEN:
            length, pos = _decode_varint(buf, pos)
            if pos + length > n:
                raise ValueError("truncated length-delimited field")
            if field == 2:
                data = bytes(buf[pos : pos + length])
            pos += length
        elif wire_type == _WT_I64:
            pos += 8
        elif wire_type == _WT_I32:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        if pos > n:
            raise ValueError("truncated field")
    return channel, data
