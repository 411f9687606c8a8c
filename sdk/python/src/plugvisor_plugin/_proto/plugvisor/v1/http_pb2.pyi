from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HttpHeader(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: bytes
    def __init__(self, name: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class HttpRequestHead(_message.Message):
    __slots__ = ("method", "path", "query", "headers", "remote_addr", "plugin_id", "mount_path", "http_version", "scheme")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_ADDR_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_ID_FIELD_NUMBER: _ClassVar[int]
    MOUNT_PATH_FIELD_NUMBER: _ClassVar[int]
    HTTP_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    method: str
    path: str
    query: str
    headers: _containers.RepeatedCompositeFieldContainer[HttpHeader]
    remote_addr: str
    plugin_id: str
    mount_path: str
    http_version: str
    scheme: str
    def __init__(self, method: _Optional[str] = ..., path: _Optional[str] = ..., query: _Optional[str] = ..., headers: _Optional[_Iterable[_Union[HttpHeader, _Mapping]]] = ..., remote_addr: _Optional[str] = ..., plugin_id: _Optional[str] = ..., mount_path: _Optional[str] = ..., http_version: _Optional[str] = ..., scheme: _Optional[str] = ...) -> None: ...

class HttpRequestPart(_message.Message):
    __slots__ = ("head", "body")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    head: HttpRequestHead
    body: bytes
    def __init__(self, head: _Optional[_Union[HttpRequestHead, _Mapping]] = ..., body: _Optional[bytes] = ...) -> None: ...

class HttpResponseHead(_message.Message):
    __slots__ = ("status", "headers")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    status: int
    headers: _containers.RepeatedCompositeFieldContainer[HttpHeader]
    def __init__(self, status: _Optional[int] = ..., headers: _Optional[_Iterable[_Union[HttpHeader, _Mapping]]] = ...) -> None: ...

class HttpFlush(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HttpResponsePart(_message.Message):
    __slots__ = ("head", "body", "flush")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    head: HttpResponseHead
    body: bytes
    flush: HttpFlush
    def __init__(self, head: _Optional[_Union[HttpResponseHead, _Mapping]] = ..., body: _Optional[bytes] = ..., flush: _Optional[_Union[HttpFlush, _Mapping]] = ...) -> None: ...
