"""Services that answer from the handshake on, with their code loaded after it.

run()'s services (plugvisor.v1.Lifecycle, go-plugin's broker, plugvisor.v1.Http)
need the generated protobuf code, the host-API client and the HTTP adapters:
tens of milliseconds of imports that the handshake does not need. So the
server starts with stand-ins for them: one method handler per method, made
from the table below (no generated code), taking the request as raw bytes.
Right after the handshake line a thread ("plugvisor-load") imports the real
services, a module at a time, and registers them with a collector instead
of the server: they load while the host connects and checks health. A call
that arrives before then waits for the load, then goes to the real handler,
with its own (de)serializers; a failed load answers INTERNAL and stops the
plugin with status 1. A stop before any host call used them (plugvisor
ping: one health check, then Shutdown) does not wait for the load, which
ends at its next module.

A unit test checks the table against the generated code.
"""

from __future__ import annotations

import logging
import sys
import threading

import grpc

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time
    from typing import Any, Callable, Generator, Iterable, Iterator, Mapping, Optional, Sequence

    from ._server import Component, Runtime

_log = logging.getLogger("plugvisor_plugin")

#: sys.setswitchinterval() while the services load (see DeferredServices._run).
LOAD_SWITCH_INTERVAL = 0.0005

UNARY_UNARY = "unary_unary"
STREAM_STREAM = "stream_stream"

#: service -> {method: kind}, as in proto/ (checked by a unit test).
LIFECYCLE = ("plugvisor.v1.Lifecycle", {
    "Implemented": UNARY_UNARY,
    "OnActivate": UNARY_UNARY,
    "OnConfigurationChange": UNARY_UNARY,
    "OnDeactivate": UNARY_UNARY,
})
BROKER = ("plugin.GRPCBroker", {"StartStream": STREAM_STREAM})
HTTP = ("plugvisor.v1.Http", {"ServeHTTP": STREAM_STREAM})


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class _Collector:
    """What the loaded components register with instead of the (started) server."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        for method, handler in method_handlers.items():
            self.registered[f"/{service_name}/{method}"] = handler

    def find(self, method: str) -> Optional[grpc.RpcMethodHandler[Any, Any]]:
        handler = self.registered.get(method)
        if handler is not None:
            return handler
        details = _CallDetails(method)
        for generic in self.generic:
            found = generic.service(details)
            if found is not None:
                return found
        return None


class DeferredServices:
    """Stand-ins on the server from the start; the real services from a loader thread.

    `services`: the (service, {method: kind}) entries to stand in for.
    `load(runtime)`: a generator that imports and builds the components (on
    the loader thread), yielding between its imports, where an abandoned
    load stops, and returning the components; each one's register() is
    then given a collector.
    """

    def __init__(
        self,
        services: Sequence[tuple[str, Mapping[str, str]]],
        load: Callable[[Runtime], Generator[None, None, Sequence[Component]]],
    ) -> None:
        self.services = tuple(services)
        self._load = load
        self._ready = threading.Event()
        self._collector = _Collector()
        self._resolved: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        #: The loaded components (empty until they are made; take part in the stop).
        self.components: tuple[Component, ...] = ()
        #: Why the load failed, or None.
        self.error: Optional[str] = None
        self._lock = threading.Lock()
        self._used = False
        self._abandoned = False
        self._started = False
        self._runtime: Optional[Runtime] = None

    # -- before the server starts -----------------------------------------------------------
    def stand_ins(self, runtime: Runtime) -> list[grpc.GenericRpcHandler]:
        """One generic handler per service, answering every method of the table."""
        self._runtime = runtime
        out = []
        for service, methods in self.services:
            handlers = {method: self._stand_in(f"/{service}/{method}", kind) for method, kind in methods.items()}
            out.append(grpc.method_handlers_generic_handler(service, handlers))
        return out

    def _stand_in(self, method: str, kind: str) -> grpc.RpcMethodHandler[Any, Any]:
        def serialize(response: Any) -> bytes:
            handler = self._resolved[method]
            return handler.response_serializer(response) if handler.response_serializer else response

        if kind == UNARY_UNARY:

            def unary_unary(request: bytes, context: grpc.ServicerContext) -> Any:
                handler = self._handler(method, context)
                assert handler.unary_unary is not None
                return handler.unary_unary(_deserialize(handler, request), context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, response_serializer=serialize)

        def stream_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            handler = self._handler(method, context)
            assert handler.stream_stream is not None
            if handler.request_deserializer is None:
                return handler.stream_stream(requests, context)
            deserialize = handler.request_deserializer
            return handler.stream_stream((deserialize(r) for r in requests), context)

        return grpc.stream_stream_rpc_method_handler(stream_stream, response_serializer=serialize)

    def _handler(self, method: str, context: grpc.ServicerContext) -> grpc.RpcMethodHandler[Any, Any]:
        with self._lock:
            if self._abandoned:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the plugin is stopping")
            self._used = True
        self._ready.wait()
        handler = self._resolved.get(method)
        if handler is None:  # the load failed
            context.abort(grpc.StatusCode.INTERNAL, f"the plugin could not load its services: {self.error}")
        assert handler is not None
        return handler

    # -- after the handshake ------------------------------------------------------------------
    def start(self) -> None:
        """Load the real services on a thread of their own, unless that began already."""
        with self._lock:
            if self._started or self._runtime is None:
                return
            self._started = True
        threading.Thread(target=self._run, args=(self._runtime,), name="plugvisor-load", daemon=True).start()

    def _run(self, runtime: Runtime) -> None:
        # The host's first health check arrives while this thread imports:
        # with Python's default 5 ms switch interval each of the handful of
        # GIL hand-offs that call needs could wait that long. A short one
        # while loading keeps the health check (and `plugvisor ping`) quick.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(LOAD_SWITCH_INTERVAL)
        try:
            self._load_all(runtime)
        finally:
            if sys.getswitchinterval() == LOAD_SWITCH_INTERVAL:  # unless the plugin changed it meanwhile
                sys.setswitchinterval(interval)
            self._ready.set()

    def _load_all(self, runtime: Runtime) -> None:
        try:
            steps = self._load(runtime)
            while True:
                if self._abandoned:
                    steps.close()
                    return
                try:
                    next(steps)
                except StopIteration as done:
                    components = self.components = tuple(done.value)
                    break
            for component in components:
                component.register(self._collector, runtime)  # type: ignore[arg-type]
            resolved = {}
            for service, methods in self.services:
                for method in methods:
                    name = f"/{service}/{method}"
                    found = self._collector.find(name)
                    if found is None:
                        raise RuntimeError(f"no component serves {name}")
                    resolved[name] = found
            self._resolved = resolved
        except BaseException as e:
            self.error = f"{type(e).__name__}: {e}"
            if self._abandoned:
                return  # the plugin is stopping anyway (and may be past starting threads)
            _log.exception("the plugin could not load its services; it stops")
            runtime.request_stop("the plugin could not load its services", failed=True)

    def abandon_unless_used(self) -> bool:
        """At a stop: whether no host call has used the services yet. If so
        they are abandoned (a later call is refused as UNAVAILABLE, and the
        stop need not wait for them to load: plugvisor ping stops a plugin
        right after its first health check); if not, the stop waits for the
        load and stops them."""
        with self._lock:
            if self._used:
                return False
            self._abandoned = True
            return True

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Whether the load has finished (successfully or not)."""
        return self._ready.wait(timeout)


def _deserialize(handler: grpc.RpcMethodHandler[Any, Any], request: bytes) -> Any:
    return handler.request_deserializer(request) if handler.request_deserializer else request
