"""Which gRPC services a plugin's own code registers.

Lifecycle/Implemented reports them to the host (`services`), so the host
knows, say, that this plugin serves chat.v1.MessageHooks. The register
callback gets this wrapper instead of the server: it forwards everything and
notes each service name on the way.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable, Mapping

import grpc


class ServiceRecorder(grpc.Server):
    """A grpc.Server that notes the service names added to it."""

    def __init__(self, server: grpc.Server) -> None:
        self._server = server
        self.services: list[str] = []

    def _note(self, name: str) -> None:
        if name and name not in self.services:
            self.services.append(name)

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        handlers = tuple(generic_rpc_handlers)
        for handler in handlers:
            # method_handlers_generic_handler() gives a ServiceRpcHandler; a
            # hand-made GenericRpcHandler may not say which service it serves.
            service_name = getattr(handler, "service_name", None)
            if callable(service_name):
                self._note(str(service_name()))
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self._note(service_name)
        self._server.add_registered_method_handlers(service_name, method_handlers)

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float | None) -> threading.Event:
        return self._server.stop(grace)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._server.wait_for_termination(timeout)
