#!/usr/bin/env python3
"""hello-python: a plugvisor plugin in Python, on the plugvisor_plugin SDK.

- reads its settings (plugin.json's settings_schema: greeting, shout);
- counts its activations in the host's key-value store;
- logs through the host API;
- checks a configuration change, refusing an empty greeting.

The host runs it with the bundle's own interpreter, venv/bin/python.
"""

from __future__ import annotations

from typing import Any

from plugvisor_plugin import Plugin, run


def greeting_of(configuration: dict[str, Any]) -> str:
    text = str(configuration.get("greeting") or "Hello")
    return text.upper() if configuration.get("shout") else text


class Hello(Plugin):
    activations = 0

    def on_activate(self) -> None:
        self.activations = int(self.api.kv.get("activations") or b"0") + 1
        self.api.kv.set("activations", str(self.activations).encode())
        self.api.log.info("activated", greeting=greeting_of(self.configuration), activations=self.activations)

    def on_configuration_change(self, configuration: dict[str, Any]) -> None:
        if not str(configuration.get("greeting", "")).strip():
            raise ValueError("the greeting must not be empty")
        self.api.log.info("configuration changed", greeting=greeting_of(configuration))

    def on_deactivate(self) -> None:
        self.api.log.info("goodbye", activations=self.activations)


if __name__ == "__main__":
    run(Hello())
