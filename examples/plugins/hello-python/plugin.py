#!/usr/bin/env python3
"""hello-python: a plugvisor plugin in Python, on the plugvisor_plugin SDK.

- reads its settings (plugin.json's settings_schema: greeting, shout);
- counts its activations in the host's key-value store;
- logs through the host API;
- checks a configuration change, refusing an empty greeting;
- serves a page at /plugins/hello-python/ and its state at
  /plugins/hello-python/status.json, from a plain WSGI app (any WSGI or
  ASGI app would do: Flask, Django, FastAPI, ...).

The host runs it with the bundle's own interpreter, venv/bin/python.

What only the web app needs (html, json) is imported on the first request,
so the plugin's start does not wait for it: a Python plugin's start-up is
mostly imports, and the host counts it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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

    def status(self) -> dict[str, Any]:
        return {
            "plugin_id": self.plugin_id,
            "greeting": greeting_of(self.configuration),
            "configuration": self.configuration,
            "activations": self.activations,
        }


PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>hello-python</title></head>
<body>
<h1>{greeting} from Python!</h1>
<p>Activated {activations} time(s). <a href="{base}/status.json">status.json</a></p>
</body>
</html>
"""


def web_app(plugin: Hello) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        import html
        import json

        path = environ.get("PATH_INFO") or "/"
        if path == "/status.json":
            body, kind, status = json.dumps(plugin.status()).encode(), "application/json", "200 OK"
        elif path == "/":
            state = plugin.status()
            body = PAGE.format(
                greeting=html.escape(state["greeting"]),
                activations=state["activations"],
                base=html.escape(environ.get("SCRIPT_NAME", "")),
            ).encode()
            kind, status = "text/html; charset=utf-8", "200 OK"
        else:
            body, kind, status = b"not found\n", "text/plain", "404 Not Found"
        start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]

    return app


if __name__ == "__main__":
    hello = Hello()
    run(hello, http=web_app(hello))
