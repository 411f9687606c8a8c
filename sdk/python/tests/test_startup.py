"""What a plugin loads before its handshake line, and the load right after it.

A Python plugin's start-up is mostly imports, and the host waits for the
handshake line. These tests keep the SDK from loading, before that line,
anything beyond what grpc (and the health service) load themselves: no
generated protobuf code, no asyncio, inspect, json or html of the SDK's own,
none of run()'s lifecycle, broker, host-API or HTTP machinery. No timing
assertions: they look at sys.modules in the plugin process at the moment it
writes its handshake.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hostkit import EXAMPLE, TESTS, base_env, wait_for

from plugvisor_plugin import _deferred
from plugvisor_plugin.testing import PluginHost

PLUGINS = TESTS / "plugins"
RECORDER = PLUGINS / "modules_at_handshake.py"

#: What a bare grpcio plugin loads (tests/pyplugins/raw_grpcio/plugin.py): the SDK may add its own on top.
GRPC_BASELINE = """
import sys
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
grpc.server(futures.ThreadPoolExecutor(max_workers=1))
print("\\n".join(sorted(sys.modules)))
"""

#: The SDK's modules a plugin may load before its handshake.
SDK_BEFORE_HANDSHAKE = {
    "plugvisor_plugin",
    "plugvisor_plugin._apps",
    "plugvisor_plugin._deferred",
    "plugvisor_plugin._errors",
    "plugvisor_plugin._exit",
    "plugvisor_plugin._handshake",
    "plugvisor_plugin._options",
    "plugvisor_plugin._plugin",
    "plugvisor_plugin._server",
    "plugvisor_plugin._services",
    "plugvisor_plugin._stdio",
    "plugvisor_plugin._wire",
    "plugvisor_plugin.log",
}

#: Never before the handshake unless grpc itself loaded them.
HEAVY = ("asyncio", "inspect", "json", "html", "urllib", "tempfile", "shutil", "random", "cryptography", "ssl")


@pytest.fixture(scope="module")
def grpc_baseline() -> set[str]:
    out = subprocess.run([sys.executable, "-c", GRPC_BASELINE], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def eval_in(channel: grpc.Channel, expression: str) -> str:
    """class_plugin.py's pvtest.Eval: repr() of the expression, in the plugin."""
    call = channel.unary_unary("/pvtest.Eval/Eval", request_serializer=bytes, response_deserializer=bytes)
    return call(expression.encode(), timeout=30).decode()


def modules_at_handshake(script, tmp_path, env=None) -> set[str]:
    out = tmp_path / "modules.txt"
    with PluginHost(RECORDER, args=(str(out), str(script)), env=env, activate=False) as host:
        assert host.handshake is not None
    return set(out.read_text().split())


@pytest.mark.parametrize(
    "script",
    [PLUGINS / "serve_plugin.py", PLUGINS / "bare_plugin.py", EXAMPLE, PLUGINS / "asgi_plugin.py"],
    ids=["serve", "run", "hello-python", "run-asgi"],
)
def test_the_handshake_waits_for_nothing_grpc_does_not_load(script, tmp_path, grpc_baseline):
    loaded = modules_at_handshake(script, tmp_path)
    extra = loaded - grpc_baseline
    sdk = {m for m in extra if m.split(".")[0] == "plugvisor_plugin"}
    assert sdk <= SDK_BEFORE_HANDSHAKE, f"loaded before the handshake: {sorted(sdk - SDK_BEFORE_HANDSHAKE)}"
    heavy = sorted(m for m in extra if m.split(".")[0] in HEAVY or "_pb2" in m)
    assert heavy == [], f"loaded before the handshake, and grpc does not load them: {heavy}"


def test_run_loads_its_services_after_the_handshake_and_they_answer(tmp_path):
    # The same plugin, activated: the stand-ins hand each call to the loaded services.
    with PluginHost(EXAMPLE, plugin_id="hello-python", configuration={"greeting": "Hi"}) as host:
        assert host.implemented is not None
        assert set(host.implemented.hooks) == {"OnActivate", "OnConfigurationChange", "OnDeactivate", "ServeHTTP"}
        assert host.kv.data["activations"] == b"1"
        assert host.http("GET", "/status.json").json()["greeting"] == "Hi"
    with PluginHost(PLUGINS / "asgi_plugin.py") as host:
        assert host.logs.records[0].message == "activated"
        assert host.http("GET", "/").body == b"hello from asgi\n"


def test_the_services_load_right_after_the_handshake_by_themselves(spawn, sock_dir, tmp_path):
    # No host call needed: nothing but the plugin's own service is called here.
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_MARKER=str(tmp_path / "marker"))
    p = spawn(PLUGINS / "class_plugin.py", env=env)
    hs = p.handshake()
    loaded = "'plugvisor_plugin._lifecycle' in __import__('sys').modules"
    with grpc.insecure_channel(hs.target) as channel:
        wait_for(lambda: eval_in(channel, loaded) == "True", 30, "the services to load")
    p.signal(signal.SIGTERM)
    assert p.wait_exit() == 0


def test_the_load_imports_what_the_services_need_a_module_at_a_time(tmp_path):
    # The loader's list (abandoned between two modules at a stop) holds every
    # SDK module the services import, so none is imported in one big step.
    from plugvisor_plugin import _server

    listed = {"plugvisor_plugin" + m for m in _server._RUN_MODULES + _server._HTTP_MODULES + ("._wsgi", "._asgi")}
    packages = {"plugvisor_plugin._proto", "plugvisor_plugin._proto.plugvisor", "plugvisor_plugin._proto.plugvisor.v1"}
    expression = "sorted(m for m in __import__('sys').modules if m.startswith('plugvisor_plugin'))"
    with PluginHost(PLUGINS / "class_plugin.py", env={"PVTEST_MARKER": str(tmp_path / "marker")}) as host:
        modules = set(eval(eval_in(host.channel, expression)))
    assert modules - SDK_BEFORE_HANDSHAKE - packages <= listed


def test_a_host_that_calls_before_any_health_check_gets_its_answer(spawn, sock_dir, tmp_path):
    # As go-plugin's Go host may: the call waits for the load.
    from plugvisor_plugin._proto.plugvisor.v1 import lifecycle_pb2, lifecycle_pb2_grpc

    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_MARKER=str(tmp_path / "marker"))
    p = spawn(PLUGINS / "class_plugin.py", env=env)
    hs = p.handshake()
    with grpc.insecure_channel(hs.target) as channel:
        answer = lifecycle_pb2_grpc.LifecycleStub(channel).Implemented(lifecycle_pb2.ImplementedRequest(), timeout=30)
        assert set(answer.hooks) == {"OnActivate", "OnConfigurationChange", "OnDeactivate"}
    p.signal(signal.SIGTERM)
    assert p.wait_exit() == 0


def test_a_stop_before_any_call_leaves_the_services_unloaded_and_exits_0(spawn, sock_dir, tmp_path):
    # plugvisor ping: handshake, one health check, stop. Nothing was activated:
    # no on_deactivate, status 0, however far the load had got.
    marker = tmp_path / "marker"
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_MARKER=str(marker))
    for _ in range(3):
        p = spawn(PLUGINS / "class_plugin.py", env=env)
        hs = p.handshake()
        with grpc.insecure_channel(hs.target) as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="plugin"), timeout=30)
            channel.unary_unary("/plugin.GRPCController/Shutdown")(b"", timeout=30)
        assert p.wait_exit() == 0, p.stderr_text()
        assert "could not load" not in p.stderr_text()
    assert not marker.exists()


def test_register_is_called_when_overridden_on_the_class_or_the_instance(tmp_path):
    # run() skips the ServiceRecorder for a Plugin that adds no servicers; one
    # given as an instance attribute counts too.
    script = tmp_path / "instance_register.py"
    script.write_text(
        "import grpc\n"
        "from plugvisor_plugin import Plugin, run\n"
        "def register(server):\n"
        "    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)\n"
        "    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler('pvtest.Echo', {'Echo': handler}),))\n"
        "plugin = Plugin()\n"
        "plugin.register = register\n"
        "run(plugin)\n"
    )
    with PluginHost(script) as host:
        assert host.implemented is not None
        assert host.implemented.services == ("plugin.GRPCBroker", "pvtest.Echo")
    with PluginHost(PLUGINS / "bare_plugin.py") as host:
        assert host.implemented is not None and host.implemented.services == ("plugin.GRPCBroker",)


def test_the_switch_interval_is_put_back_after_the_load(tmp_path):
    with PluginHost(PLUGINS / "class_plugin.py", env={"PVTEST_MARKER": str(tmp_path / "marker")}) as host:
        assert eval_in(host.channel, "__import__('sys').getswitchinterval()") == repr(sys.getswitchinterval())


def test_a_failed_load_answers_internal_and_exits_1():
    from plugvisor_plugin._proto.plugvisor.v1 import lifecycle_pb2, lifecycle_pb2_grpc

    with PluginHost(PLUGINS / "broken_load_plugin.py", activate=False) as host:
        lifecycle = lifecycle_pb2_grpc.LifecycleStub(host.channel)
        with pytest.raises(grpc.RpcError) as e:
            lifecycle.Implemented(lifecycle_pb2.ImplementedRequest(), timeout=30)
        assert e.value.code() == grpc.StatusCode.INTERNAL
        assert e.value.details() == (
            "the plugin could not load its services: ImportError: plugvisor_plugin._lifecycle is broken on purpose"
        )
        assert host.wait(10) == 1
    assert "the plugin could not load its services; it stops" in host.stderr()


def test_the_stand_ins_match_the_generated_services():
    from plugvisor_plugin._proto import grpc_broker_pb2
    from plugvisor_plugin._proto.plugvisor.v1 import http_pb2, lifecycle_pb2

    def kinds(file, service):
        methods = file.DESCRIPTOR.services_by_name[service].methods
        return {
            m.name: f"{'stream' if m.client_streaming else 'unary'}_{'stream' if m.server_streaming else 'unary'}"
            for m in methods
        }

    assert _deferred.LIFECYCLE == ("plugvisor.v1.Lifecycle", kinds(lifecycle_pb2, "Lifecycle"))
    assert _deferred.BROKER == ("plugin.GRPCBroker", kinds(grpc_broker_pb2, "GRPCBroker"))
    assert _deferred.HTTP == ("plugvisor.v1.Http", kinds(http_pb2, "Http"))


def test_the_recorder_sees_what_a_plugin_imports_first(tmp_path):
    # The check above is only worth something if the recorder catches an eager import.
    script = tmp_path / "eager.py"
    script.write_text("import html, json\nfrom plugvisor_plugin import serve\nserve()\n")
    assert {"html", "json"} <= modules_at_handshake(script, tmp_path)


@pytest.mark.parametrize("automtls", [False, True], ids=["plain", "automtls"])
@pytest.mark.parametrize(
    "script", [EXAMPLE, PLUGINS / "asgi_plugin.py"], ids=["hello-python", "run-asgi"]
)
def test_the_zygote_preload_holds_everything_a_plugin_life_imports(script, automtls, tmp_path):
    # plugvisor's zygote imports plugvisor_plugin._preload before it forks a
    # plugin: whatever the SDK imports later is imported again by every forked
    # plugin, at its start and in its own memory.
    out = tmp_path / "modules.txt"
    recorder = PLUGINS / "modules_after_preload.py"
    with PluginHost(recorder, args=(str(out), str(script)), automtls=automtls, plugin_id="hello-python") as host:
        assert host.http("GET", "/").status == 200
        assert host.stop() == 0
    imported = set(out.read_text().split())
    the_examples_own = {"html", "html.entities"}  # its page's, on the first request
    assert sorted(imported - the_examples_own) == []
