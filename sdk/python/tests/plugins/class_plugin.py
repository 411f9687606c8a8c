#!/usr/bin/env python3
"""A Plugin subclass for the tests, steered by its configuration.

on_activate        counts activations in kv "activations", logs "activated"
                   through the host API; refuses with configuration["refuse"]
                   when set; reads configuration["missing"] (a KeyError) when
                   configuration["fail"] is set
on_configuration_change  refuses a configuration with "reject" in it
on_deactivate      appends "deactivated" to PVTEST_MARKER

It also serves pvtest.Eval/Eval (request and response are raw bytes): the
request is a Python expression evaluated with `self` the plugin; the answer
is repr() of its value, or "ExceptionName: message".

PVTEST_BROKER_TIMEOUT  run(broker_timeout=...)
"""

import os

import grpc

from plugvisor_plugin import Plugin, run


def _ident(b):
    return b


class TestPlugin(Plugin):
    def on_activate(self):
        if self.configuration.get("refuse"):
            raise ValueError(self.configuration["refuse"])
        if self.configuration.get("fail"):
            self.configuration["missing"]
        n = int(self.api.kv.get("activations") or b"0") + 1
        self.api.kv.set("activations", str(n).encode())
        self.api.log.info("activated", count=n, greeting=self.configuration.get("greeting", ""))

    def on_configuration_change(self, configuration):
        if "reject" in configuration:
            raise ValueError(f"cannot use {configuration['reject']!r}")
        self.api.log.info("configuration changed", old=self.configuration, new=configuration)

    def on_deactivate(self):
        with open(os.environ["PVTEST_MARKER"], "a") as f:
            f.write("deactivated\n")

    def register(self, server):
        def evaluate(request, context):
            try:
                return repr(eval(request.decode(), {"self": self})).encode()
            except Exception as e:
                return f"{type(e).__name__}: {e}".encode()

        handler = grpc.unary_unary_rpc_method_handler(evaluate, request_deserializer=_ident, response_serializer=_ident)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("pvtest.Eval", {"Eval": handler}),))


if __name__ == "__main__":
    options = {}
    if os.environ.get("PVTEST_BROKER_TIMEOUT"):
        options["broker_timeout"] = float(os.environ["PVTEST_BROKER_TIMEOUT"])
    run(TestPlugin(), **options)
