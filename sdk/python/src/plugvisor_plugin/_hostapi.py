"""The host API client: what `Plugin.api` is.

The host serves plugvisor.v1.Log, KeyValue and Configuration (and the
embedder's own services) on a connection go-plugin's broker hands the
plugin. Calls are plain blocking gRPC calls with a deadline; a failed one
raises one of plugvisor_plugin's HostApiError classes, never grpc.RpcError.
"""

from __future__ import annotations

import json
import logging
from typing import Callable, Optional, TypeVar

import grpc

from ._errors import HostApiError, HostUnavailable, InvalidArgument, LimitExceeded, rpc_status
from ._proto.plugvisor.v1 import host_pb2 as pb
from ._proto.plugvisor.v1 import host_pb2_grpc as pb_grpc

#: Seconds a host-API call may take before it fails with HostApiError.
DEFAULT_TIMEOUT = 10.0
#: Keys asked for per KeyValue/List page.
LIST_PAGE = 1000

_T = TypeVar("_T")
_log = logging.getLogger("plugvisor_plugin.host")


def _call(what: str, method: Callable[..., _T], request: object, timeout: float) -> _T:
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as e:
        raise _error(what, e) from None


_ERRORS: dict[grpc.StatusCode, type[HostApiError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.RESOURCE_EXHAUSTED: LimitExceeded,
    grpc.StatusCode.UNAVAILABLE: HostUnavailable,
}


def _error(what: str, e: grpc.RpcError) -> HostApiError:
    code, details = rpc_status(e)
    message = f"{what}: {details or (code.name if code else 'failed')}"
    kind = _ERRORS.get(code, HostApiError) if code is not None else HostApiError
    return kind(message, code, details)


class KeyValue:
    """The plugin's own durable key-value store: str keys, bytes values."""

    def __init__(self, channel: grpc.Channel, api: HostApi) -> None:
        self._stub = pb_grpc.KeyValueStub(channel)
        self._api = api

    def get(self, key: str) -> Optional[bytes]:
        """The value of key, or None when there is none."""
        request = pb.KvGetRequest(key=key)
        r = _call(f"kv.get({key!r})", self._stub.Get, request, self._api.timeout)
        return r.value if r.found else None

    def set(self, key: str, value: bytes) -> None:
        """Store value under key (durable once this returns)."""
        request = pb.KvSetRequest(key=key, value=_as_bytes(value))
        _call(f"kv.set({key!r})", self._stub.Set, request, self._api.timeout)

    def delete(self, key: str) -> bool:
        """Remove key; whether it was there."""
        request = pb.KvDeleteRequest(key=key)
        r = _call(f"kv.delete({key!r})", self._stub.Delete, request, self._api.timeout)
        return bool(r.existed)

    def list(self, prefix: str = "") -> list[str]:
        """Every key starting with prefix, in byte order (fetched a page at a time)."""
        keys: list[str] = []
        start_after = ""
        while True:
            request = pb.KvListRequest(prefix=prefix, start_after=start_after, limit=LIST_PAGE)
            page = _call(f"kv.list({prefix!r})", self._stub.List, request, self._api.timeout)
            keys.extend(page.keys)
            if not page.more or not page.keys:
                return keys
            start_after = page.keys[-1]

    def compare_and_set(self, key: str, expected: Optional[bytes], value: Optional[bytes]) -> bool:
        """Set key to value only if it now holds expected; whether it did.

        expected None: the key must not exist. value None: delete the key.
        """
        request = pb.KvCompareAndSetRequest(key=key)
        if expected is not None:
            request.expected = _as_bytes(expected)
        if value is not None:
            request.value = _as_bytes(value)
        r = _call(f"kv.compare_and_set({key!r})", self._stub.CompareAndSet, request, self._api.timeout)
        return bool(r.swapped)


def _as_bytes(value: bytes) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"kv values are bytes, not {type(value).__name__} (encode text first)")
    return bytes(value)


#: Host log level -> the logging level of the stderr fallback.
_LOGGING_LEVELS: dict[int, int] = {
    pb.LOG_LEVEL_TRACE: logging.DEBUG - 5,
    pb.LOG_LEVEL_DEBUG: logging.DEBUG,
    pb.LOG_LEVEL_INFO: logging.INFO,
    pb.LOG_LEVEL_WARN: logging.WARNING,
    pb.LOG_LEVEL_ERROR: logging.ERROR,
}


class HostLog:
    """Log lines in the host's log, with the plugin's id and keyword fields.

    Logging never raises: when the host refuses a line (a rate limit, say)
    or cannot be reached, the line goes to stderr as hclog JSON instead,
    which the host reads too.
    """

    def __init__(self, channel: grpc.Channel, api: HostApi) -> None:
        self._stub = pb_grpc.LogStub(channel)
        self._api = api

    def trace(self, message: str, **fields: object) -> None:
        self._write(pb.LOG_LEVEL_TRACE, message, fields)

    def debug(self, message: str, **fields: object) -> None:
        self._write(pb.LOG_LEVEL_DEBUG, message, fields)

    def info(self, message: str, **fields: object) -> None:
        self._write(pb.LOG_LEVEL_INFO, message, fields)

    def warning(self, message: str, **fields: object) -> None:
        self._write(pb.LOG_LEVEL_WARN, message, fields)

    warn = warning

    def error(self, message: str, **fields: object) -> None:
        self._write(pb.LOG_LEVEL_ERROR, message, fields)

    def _write(self, level: int, message: str, fields: dict[str, object]) -> None:
        text = {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in fields.items()}
        request = pb.LogWriteRequest(level=level, message=str(message), fields=text)  # type: ignore[arg-type]
        try:
            self._stub.Write(request, timeout=self._api.timeout)
        except grpc.RpcError as e:
            err = _error("log", e)
            _log.log(_LOGGING_LEVELS.get(level, logging.INFO), str(message), extra={**text, "host_log_error": str(err)})


class HostApi:
    """The host's API for this plugin: `kv`, `log`, `configuration()`, and
    `channel` for the embedder's own services (e.g. chat.v1.ChatApi)."""

    def __init__(self, channel: grpc.Channel, timeout: float = DEFAULT_TIMEOUT) -> None:
        #: The host-API connection: make stubs of the embedder's services on it.
        self.channel = channel
        #: The deadline of each call the SDK makes, in seconds.
        self.timeout = timeout
        self.kv = KeyValue(channel, self)
        self.log = HostLog(channel, self)
        self._config = pb_grpc.ConfigurationStub(channel)

    def configuration(self) -> dict[str, object]:
        """The plugin's effective configuration, as the host has it now."""
        r = _call("configuration", self._config.Get, pb.ConfigurationGetRequest(), self.timeout)
        value = json.loads(r.configuration_json or "{}")
        if not isinstance(value, dict):
            raise HostApiError("configuration: the host sent JSON that is not an object")
        return value

    def close(self) -> None:
        self.channel.close()
