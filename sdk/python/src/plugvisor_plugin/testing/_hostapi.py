"""An in-memory host API, served to the plugin over the broker by PluginHost.

It behaves as plugvisor's host API does: plugvisor.v1.KeyValue with limits
(INVALID_ARGUMENT for a bad key, RESOURCE_EXHAUSTED past a limit,
UNAVAILABLE while `available` is off), plugvisor.v1.Log collecting records
for assertions, and plugvisor.v1.Configuration answering with the
configuration the test last gave.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import grpc

from .._proto.plugvisor.v1 import host_pb2 as pb
from .._proto.plugvisor.v1 import host_pb2_grpc as pb_grpc

#: KeyValue/List's page size when the plugin asks for 0, and its cap.
LIST_DEFAULT_LIMIT = 1000
LIST_MAX_LIMIT = 10000


@dataclass(frozen=True)
class KvLimits:
    """The in-memory store's limits (plugvisor has limits of the same kinds)."""

    max_key_bytes: int = 1024
    max_value_bytes: int = 1 << 20
    #: All keys and values of the plugin together.
    max_total_bytes: int = 64 << 20


@dataclass(frozen=True)
class LogRecord:
    """One plugvisor.v1.Log/Write call: level is "trace", "debug", "info", "warn" or "error"."""

    level: str
    message: str
    fields: dict[str, str] = field(default_factory=dict)


_LEVEL_NAMES = {
    pb.LOG_LEVEL_UNSPECIFIED: "info",
    pb.LOG_LEVEL_TRACE: "trace",
    pb.LOG_LEVEL_DEBUG: "debug",
    pb.LOG_LEVEL_INFO: "info",
    pb.LOG_LEVEL_WARN: "warn",
    pb.LOG_LEVEL_ERROR: "error",
}


class KvStore(pb_grpc.KeyValueServicer):
    """The plugin's key-value store; `data` is a plain dict a test may read and seed."""

    def __init__(self, limits: KvLimits = KvLimits(), data: Optional[dict[str, bytes]] = None) -> None:
        self.limits = limits
        self.data: dict[str, bytes] = dict(data or {})
        #: Off: every call fails with UNAVAILABLE, as when the store is down.
        self.available = True
        self._lock = threading.Lock()

    def _check(self, context: grpc.ServicerContext, key: str, value: Optional[bytes] = None) -> None:
        if not self.available:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the key-value store is unavailable")
        if not key:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a key must not be empty")
        if len(key.encode()) > self.limits.max_key_bytes:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the key is {len(key.encode())} bytes, over the {self.limits.max_key_bytes}-byte key limit",
            )
        if value is not None:
            if len(value) > self.limits.max_value_bytes:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the value is {len(value)} bytes, over the {self.limits.max_value_bytes}-byte value limit",
                )
            total = self._total() - self._size(key) + len(key.encode()) + len(value)
            if total > self.limits.max_total_bytes:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the plugin's store would hold {total} bytes, over its {self.limits.max_total_bytes}-byte limit",
                )

    def _size(self, key: str) -> int:
        return len(key.encode()) + len(self.data[key]) if key in self.data else 0

    def _total(self) -> int:
        return sum(len(k.encode()) + len(v) for k, v in self.data.items())

    def Get(self, request: pb.KvGetRequest, context: grpc.ServicerContext) -> pb.KvGetResponse:
        with self._lock:
            self._check(context, request.key)
            value = self.data.get(request.key)
        return pb.KvGetResponse(found=value is not None, value=value or b"")

    def Set(self, request: pb.KvSetRequest, context: grpc.ServicerContext) -> pb.KvSetResponse:
        with self._lock:
            self._check(context, request.key, request.value)
            self.data[request.key] = request.value
        return pb.KvSetResponse()

    def Delete(self, request: pb.KvDeleteRequest, context: grpc.ServicerContext) -> pb.KvDeleteResponse:
        with self._lock:
            self._check(context, request.key)
            existed = self.data.pop(request.key, None) is not None
        return pb.KvDeleteResponse(existed=existed)

    def List(self, request: pb.KvListRequest, context: grpc.ServicerContext) -> pb.KvListResponse:
        if not self.available:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the key-value store is unavailable")
        limit = min(request.limit or LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT)
        after = request.start_after.encode()
        with self._lock:
            keys = sorted(
                (k for k in self.data if k.startswith(request.prefix) and k.encode() > after), key=str.encode
            )
        return pb.KvListResponse(keys=keys[:limit], more=len(keys) > limit)

    def CompareAndSet(
        self, request: pb.KvCompareAndSetRequest, context: grpc.ServicerContext
    ) -> pb.KvCompareAndSetResponse:
        new = request.value if request.HasField("value") else None
        with self._lock:
            self._check(context, request.key, new)
            expected = request.expected if request.HasField("expected") else None
            if self.data.get(request.key) != expected:
                return pb.KvCompareAndSetResponse(swapped=False)
            if new is None:
                self.data.pop(request.key, None)
            else:
                self.data[request.key] = new
        return pb.KvCompareAndSetResponse(swapped=True)


class LogCollector(pb_grpc.LogServicer):
    """Keeps every log line the plugin sent, in order."""

    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        #: Off: every Write fails with RESOURCE_EXHAUSTED, as past a rate limit.
        self.available = True
        self._cond = threading.Condition()

    def Write(self, request: pb.LogWriteRequest, context: grpc.ServicerContext) -> pb.LogWriteResponse:
        if not self.available:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the plugin's log rate limit was reached")
        record = LogRecord(_LEVEL_NAMES.get(request.level, "info"), request.message, dict(request.fields))
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()
        return pb.LogWriteResponse()

    def wait_for(self, predicate: Callable[[LogRecord], bool], timeout: float) -> LogRecord:
        """The first record for which predicate is true, waiting up to timeout seconds."""
        with self._cond:
            found = self._cond.wait_for(lambda: next(filter(predicate, self.records), None), timeout)
        if found is None:
            raise TimeoutError(f"no such log record within {timeout} s; got {self.records}")
        return found

    def __iter__(self) -> Iterator[LogRecord]:
        return iter(list(self.records))


class ConfigurationService(pb_grpc.ConfigurationServicer):
    """Answers with the configuration the host last activated or changed the plugin with."""

    def __init__(self) -> None:
        self.configuration: dict[str, object] = {}

    def Get(self, request: pb.ConfigurationGetRequest, context: grpc.ServicerContext) -> pb.ConfigurationGetResponse:
        return pb.ConfigurationGetResponse(configuration_json=json.dumps(self.configuration))


def add_host_api(server: grpc.Server, kv: KvStore, log: LogCollector, configuration: ConfigurationService) -> None:
    pb_grpc.add_KeyValueServicer_to_server(kv, server)
    pb_grpc.add_LogServicer_to_server(log, server)
    pb_grpc.add_ConfigurationServicer_to_server(configuration, server)
