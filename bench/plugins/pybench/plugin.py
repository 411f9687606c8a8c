#!/usr/bin/env python3
"""pybench: bench/'s Python plugin, on the plugvisor_plugin SDK.

- OnConfigurationChange logs through the host API only when its greeting
  changes (as the Go SDK's test plugin does for its settings), so repeating
  the same greeting times the hook alone, whatever else changes;
- serves bench_app's WSGI app (the one gunicorn serves directly in bench/),
  whose /bench/kv times host API kv calls from inside the plugin.
"""

from __future__ import annotations

from typing import Any

import bench_app
from plugvisor_plugin import Plugin, run


class Bench(Plugin):
    def on_configuration_change(self, configuration: dict[str, Any]) -> None:
        if configuration.get("greeting") != self.configuration.get("greeting"):
            self.api.log.info("configuration changed", greeting=str(configuration.get("greeting")))


if __name__ == "__main__":
    plugin = Bench()
    run(plugin, http=bench_app.make_app(plugin))
