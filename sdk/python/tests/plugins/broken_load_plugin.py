#!/usr/bin/env python3
"""A Plugin whose lifecycle service cannot load: after the handshake, the
import of plugvisor_plugin._lifecycle raises ImportError, once a host call
is waiting for the services (so that the test sees both the call failing
and the plugin exiting 1, in that order, every time)."""

import sys
import threading

from plugvisor_plugin import Plugin, _deferred, run

call_waiting = threading.Event()
_handler = _deferred.DeferredServices._handler


def handler(self, method, context):
    call_waiting.set()
    return _handler(self, method, context)


_deferred.DeferredServices._handler = handler


class BrokenLifecycle:
    """A meta path finder: the lifecycle module fails to import."""

    def find_spec(self, name, path=None, target=None):
        if name == "plugvisor_plugin._lifecycle":
            call_waiting.wait(30)
            raise ImportError("plugvisor_plugin._lifecycle is broken on purpose")
        return None


sys.meta_path.insert(0, BrokenLifecycle())


class Broken(Plugin):
    def on_activate(self):
        pass


if __name__ == "__main__":
    run(Broken())
