"""The class-based API under a host: hooks, configuration, the host API over the broker.

Each test runs a real plugin process (tests/plugins/class_plugin.py or
bare_plugin.py) under plugvisor_plugin.testing.PluginHost, which does what
plugvisor does: Implemented, the broker stream and a host-API server (TLS
under AutoMTLS), OnActivate, OnConfigurationChange, OnDeactivate, Shutdown.
"""

from __future__ import annotations

import ast
import signal
from pathlib import Path

import grpc
import pytest
from hostkit import TESTS

from plugvisor_plugin.testing import ActivationRefused, ConfigurationRefused, KvLimits, PluginHost

CLASS_PLUGIN = TESTS / "plugins" / "class_plugin.py"
BARE_PLUGIN = TESTS / "plugins" / "bare_plugin.py"


def host(tmp_path: Path, **kwargs) -> PluginHost:
    env = {"PVTEST_MARKER": str(tmp_path / "marker"), **kwargs.pop("env", {})}
    return PluginHost(CLASS_PLUGIN, env=env, **kwargs)


def evaluate(h: PluginHost, expression: str) -> str:
    call = h.channel.unary_unary("/pvtest.Eval/Eval", request_serializer=bytes, response_deserializer=bytes)
    return call(expression.encode(), timeout=30).decode()


def marker(tmp_path: Path) -> list[str]:
    path = tmp_path / "marker"
    return path.read_text().splitlines() if path.exists() else []


# -- Implemented ---------------------------------------------------------------------


def test_implemented_lists_the_overridden_hooks_and_registered_services(tmp_path):
    with host(tmp_path) as h:
        assert h.implemented is not None
        assert h.implemented.hooks == ("OnActivate", "OnConfigurationChange", "OnDeactivate")
        assert h.implemented.services == ("plugin.GRPCBroker", "pvtest.Eval")


def test_a_plugin_without_overrides_reports_no_hooks():
    with PluginHost(BARE_PLUGIN) as h:
        assert h.implemented is not None
        assert h.implemented.hooks == ()
        assert h.implemented.services == ("plugin.GRPCBroker",)
        assert h.activated  # OnActivate is always called; it accepts


def test_serve_plugins_have_no_lifecycle():
    # serve() (no Plugin) answers Implemented with UNIMPLEMENTED: no hooks.
    with PluginHost(TESTS / "plugins" / "sdk_test_plugin.py") as h:
        assert h.implemented is None and h.host_api_broker_id == 0


# -- activation ------------------------------------------------------------------------


def test_activation_gets_configuration_and_the_host_api(tmp_path):
    with host(tmp_path, configuration={"greeting": "Hi"}, plugin_id="greeter") as h:
        assert h.host_api_broker_id not in (0, 1)
        assert h.kv.data == {"activations": b"1"}
        [record] = h.logs.records
        assert (record.level, record.message, record.fields) == ("info", "activated", {"count": "1", "greeting": "Hi"})
        seen = ast.literal_eval(evaluate(h, "self.plugin_id, self.configuration, self.host_version"))
        assert seen == ("greeter", {"greeting": "Hi"}, h.host_version)
        assert ast.literal_eval(evaluate(h, "self.api.configuration()")) == {"greeting": "Hi"}


def test_activations_are_counted_across_processes(tmp_path):
    data: dict[str, bytes] = {}
    for _ in range(2):
        with host(tmp_path, kv_data=data) as h:
            pass
        data = h.kv.data
    assert data["activations"] == b"2"


@pytest.mark.parametrize("automtls", [False, True], ids=["plaintext", "automtls"])
def test_refusing_activation_stops_the_plugin_with_the_message(tmp_path, automtls):
    h = host(tmp_path, configuration={"refuse": "no greeting is set"}, automtls=automtls)
    with pytest.raises(ActivationRefused) as e:
        h.start()
    assert e.value.refusal == "no greeting is set"
    assert h.exit_status == 0
    assert marker(tmp_path) == []  # a refused activation is not deactivated


def test_a_hook_that_raises_a_builtin_error_names_it(tmp_path):
    with pytest.raises(ActivationRefused) as e:
        host(tmp_path, configuration={"fail": True}).start()
    assert e.value.refusal == "KeyError: 'missing'"
    assert "Traceback" in e.value.stderr and "on_activate raised" in e.value.stderr


def test_configuration_that_is_not_an_object_is_refused(tmp_path):
    h = host(tmp_path, activate=False).start()
    try:
        from plugvisor_plugin._proto.plugvisor.v1 import lifecycle_pb2, lifecycle_pb2_grpc

        stub = lifecycle_pb2_grpc.LifecycleStub(h.channel)
        answer = stub.OnActivate(lifecycle_pb2.OnActivateRequest(configuration_json="[1, 2]"), timeout=30)
        assert "not an object" in answer.refused.message
    finally:
        h.stop()


def test_a_broker_connection_never_announced_refuses_activation_in_bounded_time(tmp_path):
    class SilentBroker(PluginHost):
        def _serve_host_api(self) -> int:
            return 7  # announced nowhere

    h = SilentBroker(CLASS_PLUGIN, env={"PVTEST_MARKER": str(tmp_path / "m"), "PVTEST_BROKER_TIMEOUT": "0.3"})
    with pytest.raises(ActivationRefused) as e:
        h.start()
    assert "did not announce broker connection 7 within 0.3 s" in e.value.refusal


# -- configuration changes ------------------------------------------------------------------


def test_configuration_change_accepted(tmp_path):
    with host(tmp_path, configuration={"greeting": "Hi"}) as h:
        h.configure({"greeting": "Yo"})
        assert ast.literal_eval(evaluate(h, "self.configuration")) == {"greeting": "Yo"}
        changed = h.logs.records[-1]
        assert changed.message == "configuration changed"
        assert changed.fields == {"old": '{"greeting": "Hi"}', "new": '{"greeting": "Yo"}'}


def test_configuration_change_refused_keeps_the_old_one(tmp_path):
    with host(tmp_path, configuration={"greeting": "Hi"}) as h:
        with pytest.raises(ConfigurationRefused) as e:
            h.configure({"reject": "loud"})
        assert e.value.refusal == "cannot use 'loud'"
        assert ast.literal_eval(evaluate(h, "self.configuration")) == {"greeting": "Hi"}
        assert h.configuration == {"greeting": "Hi"}


# -- deactivation ----------------------------------------------------------------------------


def test_on_deactivate_runs_once_when_the_host_calls_it(tmp_path):
    with host(tmp_path) as h:
        h.deactivate()
        assert marker(tmp_path) == ["deactivated"]
    assert marker(tmp_path) == ["deactivated"]


def test_on_deactivate_runs_on_a_stop_the_host_did_not_announce(tmp_path):
    with host(tmp_path) as h:
        h.signal(signal.SIGTERM)
        assert h.wait() == 0
    assert marker(tmp_path) == ["deactivated"]


# -- the key-value store ------------------------------------------------------------------------


def test_kv_round_trips(tmp_path):
    with host(tmp_path) as h:
        assert evaluate(h, "self.api.kv.get('nothing')") == "None"
        assert evaluate(h, "self.api.kv.set('a/1', b'\\x00one')") == "None"
        assert evaluate(h, "self.api.kv.get('a/1')") == repr(b"\x00one")
        assert h.kv.data["a/1"] == b"\x00one"
        evaluate(h, "self.api.kv.set('a/2', b'two'), self.api.kv.set('b', b'three')")
        assert evaluate(h, "self.api.kv.list('a/')") == repr(["a/1", "a/2"])
        assert evaluate(h, "self.api.kv.compare_and_set('b', b'wrong', b'x')") == "False"
        assert evaluate(h, "self.api.kv.compare_and_set('b', b'three', b'four')") == "True"
        assert evaluate(h, "self.api.kv.compare_and_set('new', None, b'v')") == "True"
        assert evaluate(h, "self.api.kv.compare_and_set('new', None, b'w')") == "False"
        assert evaluate(h, "self.api.kv.compare_and_set('new', b'v', None)") == "True"
        assert "new" not in h.kv.data and h.kv.data["b"] == b"four"
        assert evaluate(h, "self.api.kv.delete('b')") == "True"
        assert evaluate(h, "self.api.kv.delete('b')") == "False"
        assert evaluate(h, "self.api.kv.set('text', 'not bytes')").startswith("TypeError: kv values are bytes")


def test_kv_list_pages_through_every_key(tmp_path):
    seed = {f"k{i:05d}": b"" for i in range(2500)}
    with host(tmp_path, kv_data=seed) as h:
        keys = ast.literal_eval(evaluate(h, "self.api.kv.list('k')"))
    assert keys == sorted(seed)


def test_kv_errors_are_python_exceptions(tmp_path):
    limits = KvLimits(max_key_bytes=16, max_value_bytes=1000, max_total_bytes=5000)
    with host(tmp_path, kv_limits=limits) as h:
        assert evaluate(h, "self.api.kv.set('big', bytes(1001))") == (
            "LimitExceeded: kv.set('big'): the value is 1001 bytes, over the 1000-byte value limit"
        )
        assert evaluate(h, "self.api.kv.get('')") == "InvalidArgument: kv.get(''): a key must not be empty"
        assert evaluate(h, "self.api.kv.get('x' * 17)").startswith("InvalidArgument: ")
        assert evaluate(h, "[self.api.kv.set(f'k{i}', bytes(900)) for i in range(6)]").startswith(
            "LimitExceeded: kv.set('k5'): the plugin's store would hold"
        )
        # The classes are what a plugin catches: LimitExceeded is a HostApiError.
        assert evaluate(h, "__import__('plugvisor_plugin').LimitExceeded.__mro__[1].__name__") == "'HostApiError'"
        h.kv.available = False
        assert evaluate(h, "self.api.kv.get('a')") == "HostUnavailable: kv.get('a'): the key-value store is unavailable"
        assert evaluate(h, "isinstance(self.api.kv, object) and issubclass(__import__('plugvisor_plugin').HostUnavailable, ConnectionError)") == "True"


def test_a_log_line_the_host_refuses_goes_to_stderr(tmp_path):
    with host(tmp_path) as h:
        h.logs.available = False
        assert evaluate(h, "self.api.log.warning('disk almost full', free_mb=12)") == "None"  # never raises
        [record] = [r for r in h.log_records() if r["@message"] == "disk almost full"]
        assert record["@level"] == "warn" and record["free_mb"] == "12"
        assert "rate limit" in record["host_log_error"]


# -- AutoMTLS on the broker -----------------------------------------------------------------------


def test_the_host_api_over_automtls(tmp_path):
    with host(tmp_path, automtls=True, configuration={"greeting": "tls"}) as h:
        assert h.handshake is not None and h.handshake.server_cert is not None
        assert h.kv.data == {"activations": b"1"}
        assert evaluate(h, "self.api.kv.set('k', b'v'), self.api.kv.get('k')") == repr((None, b"v"))
        # The host-API socket speaks TLS and wants the plugin's certificate:
        # a plaintext client gets nowhere.
        [sock] = [p for p in h.socket_dir.iterdir() if p.name.startswith("host-api-")]
        with grpc.insecure_channel("unix:" + str(sock)) as plain, pytest.raises(grpc.RpcError):
            plain.unary_unary("/plugvisor.v1.KeyValue/Get")(b"", timeout=3)
