"""plugvisor.v1.Lifecycle, served for a `Plugin`: hooks, configuration, the host API.

The host's order for each process: Implemented, then OnActivate (always:
it carries the configuration and the host API's broker id), later
OnConfigurationChange and OnDeactivate when listed. A hook that raises
answers with a Refusal carrying the exception's message; gRPC errors are
left for transport failures.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any, Optional, Protocol

import grpc

from ._broker import SERVICE as BROKER_SERVICE
from ._broker import Broker
from ._errors import BrokerTimeout
from ._hostapi import HostApi
from ._proto.plugvisor.v1 import lifecycle_pb2 as pb
from ._proto.plugvisor.v1 import lifecycle_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from ._plugin import Plugin
    from ._server import Runtime

_log = logging.getLogger("plugvisor_plugin")

SERVE_HTTP = "ServeHTTP"


class AppLifespan(Protocol):
    """What the lifecycle needs of the HTTP app (ASGI lifespan; nothing for WSGI)."""

    def startup(self) -> None: ...

    def shutdown(self) -> None: ...


def refusal_message(e: BaseException) -> str:
    """What the operator sees for an exception a hook raised.

    The message alone for the exceptions plugins raise on purpose; built-in
    errors such as KeyError also name their type, or "'greeting'" would be
    all one sees.
    """
    text = str(e).strip()
    kind = type(e)
    if kind.__module__ == "builtins" and kind not in (Exception, ValueError, RuntimeError):
        return f"{kind.__name__}: {text}" if text else kind.__name__
    return text or kind.__name__


def parse_configuration(configuration_json: str) -> dict[str, Any]:
    value = json.loads(configuration_json or "{}")
    if not isinstance(value, dict):
        raise ValueError(f"the configuration is JSON but not an object: {configuration_json[:80]!r}")
    return value


class Lifecycle(pb_grpc.LifecycleServicer):
    """The Lifecycle servicer and the run() component that owns the plugin's activation."""

    def __init__(
        self, plugin: Plugin, broker: Broker, services: list[str], http: Optional[AppLifespan] = None
    ) -> None:
        self.plugin = plugin
        self.broker = broker
        self.services = services
        self.http = http
        self._lock = threading.Lock()
        self._active = False

    # -- Component ------------------------------------------------------------------
    def register(self, server: grpc.Server, runtime: Runtime) -> None:
        pb_grpc.add_LifecycleServicer_to_server(self, server)

    def stopping(self) -> None:
        pass

    def stopped(self) -> None:
        # A stop the host did not announce with OnDeactivate (SIGTERM, the
        # host's death): the plugin's cleanup still runs.
        self._deactivate("the plugin is stopping")
        api = self.plugin._api
        if api is not None:
            api.close()

    # -- RPCs -------------------------------------------------------------------------
    def Implemented(self, request: pb.ImplementedRequest, context: grpc.ServicerContext) -> pb.ImplementedResponse:
        hooks = sorted(self.plugin.implemented_hooks | ({SERVE_HTTP} if self.http is not None else set()))
        return pb.ImplementedResponse(hooks=hooks, services=[BROKER_SERVICE, *self.services])

    def OnActivate(self, request: pb.OnActivateRequest, context: grpc.ServicerContext) -> pb.OnActivateResponse:
        with self._lock:
            try:
                configuration = parse_configuration(request.configuration_json)
            except ValueError as e:
                return _refuse_activation(f"cannot read the configuration: {e}")
            plugin = self.plugin
            plugin.plugin_id = request.plugin_id
            plugin.host_version = request.host_version
            plugin.configuration = configuration
            if request.host_api_broker_id:
                try:
                    channel = self.broker.dial(request.host_api_broker_id)
                except BrokerTimeout as e:
                    return _refuse_activation(str(e))
                if plugin._api is not None:
                    plugin._api.close()
                plugin._api = HostApi(channel)
            else:
                plugin._api = None
                plugin._no_api_reason = "the host serves no host API to this plugin (host_api_broker_id was 0)"
            try:
                plugin.on_activate()
            except Exception as e:
                _log.exception("on_activate raised: the plugin refuses to activate")
                return _refuse_activation(refusal_message(e))
            if self.http is not None:
                try:
                    self.http.startup()
                except Exception as e:
                    _log.exception("the HTTP app's startup failed: the plugin refuses to activate")
                    self._run_on_deactivate()
                    return _refuse_activation(f"the HTTP app's startup failed: {refusal_message(e)}")
            self._active = True
            _log.debug("activated", extra={"plugin_id": plugin.plugin_id})
            return pb.OnActivateResponse()

    def OnConfigurationChange(
        self, request: pb.OnConfigurationChangeRequest, context: grpc.ServicerContext
    ) -> pb.OnConfigurationChangeResponse:
        with self._lock:
            try:
                configuration = parse_configuration(request.configuration_json)
            except ValueError as e:
                return _refuse_change(f"cannot read the configuration: {e}")
            try:
                self.plugin.on_configuration_change(configuration)
            except Exception as e:
                _log.warning("on_configuration_change refused the change", extra={"error": refusal_message(e)})
                return _refuse_change(refusal_message(e))
            self.plugin.configuration = configuration
            return pb.OnConfigurationChangeResponse()

    def OnDeactivate(self, request: pb.OnDeactivateRequest, context: grpc.ServicerContext) -> pb.OnDeactivateResponse:
        self._deactivate("the host called OnDeactivate")
        return pb.OnDeactivateResponse()

    # -- deactivation, once ---------------------------------------------------------------
    def _deactivate(self, why: str) -> None:
        with self._lock:
            if not self._active:
                return
            self._active = False
            _log.debug("deactivating", extra={"reason": why})
            if self.http is not None:
                try:
                    self.http.shutdown()
                except Exception:
                    _log.exception("the HTTP app's shutdown failed")
            self._run_on_deactivate()

    def _run_on_deactivate(self) -> None:
        try:
            self.plugin.on_deactivate()
        except Exception:
            _log.exception("on_deactivate raised")


def _refuse_activation(message: str) -> pb.OnActivateResponse:
    return pb.OnActivateResponse(refused=pb.Refusal(message=message))


def _refuse_change(message: str) -> pb.OnConfigurationChangeResponse:
    return pb.OnConfigurationChangeResponse(refused=pb.Refusal(message=message))
