"""`Plugin`: the class-based API. Override the hooks you need; run(MyPlugin()).

The hooks a subclass overrides are the ones reported to the host
(Lifecycle/Implemented), worked out once per class in __init_subclass__: a
hook you do not override is never called by the host.
"""

from __future__ import annotations

from ._errors import NoHostApi

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: keep `import plugvisor_plugin` light
    from typing import Any, ClassVar

    import grpc

    from ._hostapi import HostApi

#: Plugin method -> the hook name plugvisor.v1.Lifecycle uses for it.
HOOKS = {
    "on_activate": "OnActivate",
    "on_configuration_change": "OnConfigurationChange",
    "on_deactivate": "OnDeactivate",
}


class Plugin:
    """Base class of a plugin. Hooks run on the SDK's RPC threads.

    Attributes, set by the SDK before on_activate runs:
      plugin_id      the id the host knows this plugin by
      configuration  the effective configuration (a dict from the host's
                     JSON); replaced only after on_configuration_change
                     returned normally
      host_version   which host this is, e.g. "plugvisor 0.2.0"
      api            the host API (kv, log, configuration(), channel)
    """

    #: The hook names the host is told about; computed per subclass.
    implemented_hooks: ClassVar[frozenset[str]] = frozenset()

    plugin_id: str = ""
    configuration: dict[str, Any] = {}  # noqa: RUF012 - replaced, never mutated, by the SDK
    host_version: str = ""
    _api: HostApi | None = None
    _no_api_reason = "the plugin is not activated yet: the host API is there from on_activate on"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.implemented_hooks = frozenset(
            hook for method, hook in HOOKS.items() if getattr(cls, method) is not getattr(Plugin, method)
        )

    @property
    def api(self) -> HostApi:
        """The host API. Raises NoHostApi before activation, or when the host serves none."""
        if self._api is None:
            raise NoHostApi(self._no_api_reason)
        return self._api

    def on_activate(self) -> None:
        """The host started the plugin. Raise to refuse: the message goes to the operator."""

    def on_configuration_change(self, configuration: dict[str, Any]) -> None:
        """The operator changed the configuration (the new one is the
        argument; self.configuration is still the old one). Raise to refuse
        the change: the old configuration stays."""

    def on_deactivate(self) -> None:
        """The plugin is about to stop. Runs once per activation: when the
        host calls OnDeactivate, or else during the SDK's graceful stop."""

    def register(self, server: grpc.Server) -> None:
        """Add your own gRPC servicers (an embedder's hooks) to the server.
        Their service names are reported to the host."""
