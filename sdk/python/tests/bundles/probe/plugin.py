#!/usr/bin/env python3
"""probe: a plugvisor bundle for the tests that run the real host (test_plugvisor.py).

It appends what happens to it to events.log in its working directory (the
bundle, under plugvisor), one line each, closed at once:

  activate N label=L limit=M tls=yes|no   on_activate; N counts activations in the host's kv
  change label=L                          on_configuration_change accepted it
  deactivate N                            on_deactivate
  with exit / finally / atexit            the cleanup written around run()

on_activate raises RuntimeError(fail_activation) when that setting is set;
on_configuration_change refuses the label "forbidden". Both log through the
host API ("probe activated", "probe reconfigured").

With the setting selftest on, on_activate first puts the host API through
its paces (kv calls, their errors, paging, configuration(), log fields)
and writes each check's outcome to selftest.json: {"check": "ok" or what
went wrong}. The host is expected to run with --kv-max-value-bytes 1000.
"""

import atexit
import json
import os

import plugvisor_plugin
from plugvisor_plugin import Plugin, run

EVENTS = os.path.join(os.getcwd(), "events.log")


def note(line):
    with open(EVENTS, "a") as f:
        f.write(line + "\n")


class Probe(Plugin):
    count = 0

    def on_activate(self):
        if self.configuration.get("fail_activation"):
            raise RuntimeError(self.configuration["fail_activation"])
        if self.configuration.get("selftest"):
            with open("selftest.json", "w") as f:
                json.dump(selftest(self), f, indent=1)
        self.count = int(self.api.kv.get("activations") or b"0") + 1
        self.api.kv.set("activations", str(self.count).encode())
        tls = "yes" if os.environ.get("PLUGIN_CLIENT_CERT") else "no"
        label, limit = self.configuration["label"], self.configuration["limit"]
        self.api.log.info("probe activated", count=self.count, label=label, limit=limit, tls=tls)
        note(f"activate {self.count} label={label} limit={limit} tls={tls}")

    def on_configuration_change(self, configuration):
        if configuration.get("label") == "forbidden":
            raise ValueError("the label 'forbidden' is refused by the probe")
        self.api.log.info("probe reconfigured", label=configuration["label"])
        note(f"change label={configuration['label']}")

    def on_deactivate(self):
        note(f"deactivate {self.count}")


def selftest(plugin):
    api = plugin.api
    kv = api.kv
    results = {}

    def check(name, fn, want):
        try:
            got = fn()
        except Exception as e:
            got = f"{type(e).__name__}: {e}"
        results[name] = "ok" if got == want else f"got {got!r}, want {want!r}"

    def raises(kind, fn):
        def call():
            try:
                fn()
            except kind as e:
                return type(e).__name__, isinstance(e, plugvisor_plugin.HostApiError)
            return "no exception"
        return call

    check("get of a missing key", lambda: kv.get("st/missing"), None)
    check("set then get", lambda: (kv.set("st/a", b"\x00\xffbytes"), kv.get("st/a"))[1], b"\x00\xffbytes")
    check("unicode key", lambda: (kv.set("st/ключ", "значение".encode()), kv.get("st/ключ"))[1], "значение".encode())
    check("empty value is a value", lambda: (kv.set("st/empty", b""), kv.get("st/empty"))[1], b"")
    check("delete existing", lambda: kv.delete("st/empty"), True)
    check("delete missing", lambda: kv.delete("st/empty"), False)
    check("cas absent -> set", lambda: kv.compare_and_set("st/cas", None, b"1"), True)
    check("cas absent again", lambda: kv.compare_and_set("st/cas", None, b"2"), False)
    check("cas wrong expected", lambda: kv.compare_and_set("st/cas", b"9", b"2"), False)
    check("cas right expected", lambda: kv.compare_and_set("st/cas", b"1", b"2"), True)
    check("cas value", lambda: kv.get("st/cas"), b"2")
    check("cas delete", lambda: (kv.compare_and_set("st/cas", b"2", None), kv.get("st/cas")), (True, None))
    # Paging: the SDK asks for pages of LIST_PAGE keys; a small page makes it turn pages here.
    from plugvisor_plugin import _hostapi

    _hostapi.LIST_PAGE = 3
    names = [f"page/{i:02d}" for i in range(8)]
    for name in names:
        kv.set(name, b"x")
    kv.set("pagf", b"not under the prefix")
    check("list pages through every key, in order", lambda: kv.list("page/"), names)
    check("list of an empty prefix", lambda: kv.list("nothing/"), [])
    check("list without a prefix holds them", lambda: set(names) <= set(kv.list()), True)
    _hostapi.LIST_PAGE = 1000
    check("empty key", raises(plugvisor_plugin.InvalidArgument, lambda: kv.get("")), ("InvalidArgument", True))
    check("key too long", raises(plugvisor_plugin.InvalidArgument, lambda: kv.set("k" * 513, b"")), ("InvalidArgument", True))
    check("value over the limit", raises(plugvisor_plugin.LimitExceeded, lambda: kv.set("st/big", b"v" * 1001)), ("LimitExceeded", True))
    check("value at the limit", lambda: (kv.set("st/big", b"v" * 1000), len(kv.get("st/big") or b""))[1], 1000)
    check("kv values must be bytes", raises(TypeError, lambda: kv.set("st/a", "text")), ("TypeError", False))
    check("configuration() is the configuration", lambda: api.configuration(), dict(plugin.configuration))
    api.log.warning("probe fields", number=5, flag=True, items=[1, "two"], text="with spaces")
    check("log never raises", lambda: api.log.error(""), None)
    return results


class Cleanup:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        note("with exit")
        return False


if __name__ == "__main__":
    atexit.register(note, "atexit")
    with Cleanup():
        try:
            run(Probe())
        finally:
            note("finally")
