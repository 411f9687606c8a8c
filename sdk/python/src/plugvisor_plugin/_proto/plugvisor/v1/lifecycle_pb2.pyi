from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImplementedRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ImplementedResponse(_message.Message):
    __slots__ = ("hooks", "services")
    HOOKS_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    hooks: _containers.RepeatedScalarFieldContainer[str]
    services: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hooks: _Optional[_Iterable[str]] = ..., services: _Optional[_Iterable[str]] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class OnActivateRequest(_message.Message):
    __slots__ = ("plugin_id", "configuration_json", "host_api_broker_id", "host_version")
    PLUGIN_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIGURATION_JSON_FIELD_NUMBER: _ClassVar[int]
    HOST_API_BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_VERSION_FIELD_NUMBER: _ClassVar[int]
    plugin_id: str
    configuration_json: str
    host_api_broker_id: int
    host_version: str
    def __init__(self, plugin_id: _Optional[str] = ..., configuration_json: _Optional[str] = ..., host_api_broker_id: _Optional[int] = ..., host_version: _Optional[str] = ...) -> None: ...

class OnActivateResponse(_message.Message):
    __slots__ = ("refused",)
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    refused: Refusal
    def __init__(self, refused: _Optional[_Union[Refusal, _Mapping]] = ...) -> None: ...

class OnConfigurationChangeRequest(_message.Message):
    __slots__ = ("configuration_json",)
    CONFIGURATION_JSON_FIELD_NUMBER: _ClassVar[int]
    configuration_json: str
    def __init__(self, configuration_json: _Optional[str] = ...) -> None: ...

class OnConfigurationChangeResponse(_message.Message):
    __slots__ = ("refused",)
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    refused: Refusal
    def __init__(self, refused: _Optional[_Union[Refusal, _Mapping]] = ...) -> None: ...

class OnDeactivateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OnDeactivateResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
