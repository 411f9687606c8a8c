"""Python plugins under the real host, target/debug/plugvisor, driven as a user would.

`plugvisor run` on a folder of bundles (hello-python, and the tests' own
`probe` and `served` bundles in tests/bundles), `plugvisor status --json`,
`config get|set|unset`, `stop` / `start`, `kill -9` of a plugin, SIGTERM to
the host. The bundles are copied into the test's temporary directory
without a venv, so they run on this interpreter (`--interpreter`), with the
SDK from this source tree. Skipped when plugvisor is not built.
(plugvisor's HTTP listener does not exist yet: HTTP is tested through
PluginHost, in test_http.py.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
from hostkit import EXAMPLE_DIR, TESTS, pid_gone, wait_for
from plugvisor_run import Plugvisor, plugvisor_missing

pytestmark = pytest.mark.skipif(plugvisor_missing() is not None, reason=plugvisor_missing() or "")

PROBE = TESTS / "bundles" / "probe"


@pytest.fixture
def host(tmp_path):
    """host(*bundles, args=(), json_lines=True) -> Plugvisor on a plugins folder of copies of the bundles."""
    started: list[Plugvisor] = []
    plugins = tmp_path / "plugins"

    def start(*bundles: str, args: tuple[str, ...] = (), json_lines: bool = True) -> Plugvisor:
        plugins.mkdir(exist_ok=True)
        for name in bundles:
            target = plugins / name
            if target.exists():
                continue  # the same bundle (and its events.log) for a second host
            if name == "hello-python":
                target.mkdir()
                for f in ("plugin.json", "plugin.py"):
                    shutil.copy(EXAMPLE_DIR / f, target / f)
            else:
                shutil.copytree(TESTS / "bundles" / name, target)
        pv = Plugvisor(tmp_path, plugins, *args, json_lines=json_lines)
        started.append(pv)
        return pv

    start.plugins = plugins  # type: ignore[attr-defined]
    yield start
    for pv in started:
        pv.close()


def events_of(plugins: Path, bundle: str = "probe") -> list[str]:
    path = plugins / bundle / "events.log"
    return path.read_text().splitlines() if path.exists() else []


def log_line(plugin_id: str, message: str) -> str:
    """A plugin's log line in plugvisor's stderr: `... INFO plugin{id=ID}: MESSAGE fields...`."""
    return rf"^\S+\s+INFO plugin\{{id={re.escape(plugin_id)}\}}: {re.escape(message)}(?P<fields>.*)$"


# -- activation and its configuration ------------------------------------------------------------


def test_hello_python_activates_with_its_schema_defaults_and_stops_on_sigterm(host):
    pv = host("hello-python", json_lines=False)
    _, line = pv.wait_line(lambda s: s.endswith("restarts 0)") and "hello-python: Running (pid" in s, "Running")
    pid = int(re.search(r"pid (\d+)", line).group(1))
    fields = pv.wait_log(log_line("hello-python", "activated"))["fields"]
    assert fields.split() == ["activations=1", "greeting=Hello"]  # through the host API: no module=, no fallback
    assert pv.config_get("hello-python") == {"greeting": ("Hello", "default"), "shout": (False, "default")}
    status = pv.status_of("hello-python")
    assert (status["state"], status["pid"], status["runtime"]) == ("Running", pid, "python")

    assert pv.terminate() == 0
    out = "\n".join(pv.lines)
    assert "hello-python: stopped via GRPCController/Shutdown (exit status 0)" in out, out
    assert re.search(log_line("hello-python", "goodbye"), pv.stderr(), re.M)
    assert pid_gone(pid)


def test_configuration_from_a_config_file_table(host, tmp_path):
    (tmp_path / "plugvisor.toml").write_text(
        # tls in the file: AutoMTLS turned off (it is on by default).
        'tls = "off"\n\n[plugins.hello-python]\ngreeting = "Bonjour"\nshout = true\n\n[plugins.probe]\nlabel = "from-file"\nlimit = 7\n'
    )
    pv = host("hello-python", "probe", args=("--config", str(tmp_path / "plugvisor.toml")))
    pv.wait_running("hello-python")
    pv.wait_running("probe")
    assert pv.wait_log(log_line("hello-python", "activated"))["fields"].split() == ["activations=1", "greeting=BONJOUR"]
    assert pv.config_get("hello-python") == {"greeting": ("Bonjour", "config_file"), "shout": (True, "config_file")}
    # A number setting arrives as a number.
    assert events_of(host.plugins) == ["activate 1 label=from-file limit=7 tls=no"]
    assert pv.config_get("probe")["fail_activation"] == ("", "default")


# -- the kv store: crashes and restarts -------------------------------------------------------------


def test_the_kv_counter_survives_a_crash_and_a_restart_of_the_host(host):
    pv = host("hello-python")
    pv.wait_running("hello-python")
    first = pv.status_of("hello-python")["pid"]
    os.kill(first, signal.SIGKILL)
    i, crashed = pv.wait_event("hello-python", "crashed")
    assert crashed["exit"] == "killed by signal 9 (SIGKILL)"
    _, again = pv.wait_running("hello-python", i)
    assert again["status"]["restarts"] == 1 and again["status"]["pid"] != first
    status = pv.status_of("hello-python")
    assert status["restarts"] == 1 and "SIGKILL" in (status["last_error"] or "")
    wait_for(lambda: len(re.findall(log_line("hello-python", "activated"), pv.stderr(), re.M)) == 2, 30, "two activations")
    activations = [m.group("fields").split()[0] for m in re.finditer(log_line("hello-python", "activated"), pv.stderr(), re.M)]
    assert activations == ["activations=1", "activations=2"]
    assert pv.terminate() == 0
    pv.assert_no_plugin_left()

    # A new host on the same data directory: the count goes on.
    pv2 = host("hello-python")
    pv2.wait_running("hello-python")
    assert pv2.wait_log(log_line("hello-python", "activated"))["fields"].split()[0] == "activations=3"
    assert pv2.terminate() == 0


# -- configuration changes ---------------------------------------------------------------------------


def test_config_set_accepted_live_refused_by_the_plugin_and_refused_by_the_schema(host):
    pv = host("hello-python")
    _, running = pv.wait_running("hello-python")
    pid = running["status"]["pid"]

    r = pv.ctl("config", "set", "hello-python", "greeting=Bonjour")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "changed: the running plugin accepted it"
    assert pv.wait_log(log_line("hello-python", "configuration changed"))["fields"].split() == ["greeting=Bonjour"]

    # The plugin refuses: exit 1, its message, the old value stays.
    r = pv.ctl("config", "set", "hello-python", "greeting= ")
    assert r.returncode == 1
    assert r.stderr.strip() == 'plugvisor: plugin "hello-python" refused: the greeting must not be empty'
    assert pv.config_get("hello-python")["greeting"] == ("Bonjour", "operator")

    # The schema refuses a value of the wrong type before the plugin sees it.
    r = pv.ctl("config", "set", "hello-python", "shout=loudly")
    assert r.returncode == 1
    assert 'setting "shout": expected true or false, not "loudly"' in r.stderr
    assert pv.config_get("hello-python")["shout"] == (False, "default")

    # Unset: back to the default, offered to the plugin too.
    r = pv.ctl("config", "unset", "hello-python", "greeting")
    assert r.returncode == 0, r.stderr
    assert pv.config_get("hello-python")["greeting"] == ("Hello", "default")
    # All of it live: the same process.
    assert pv.status_of("hello-python")["pid"] == pid


def test_a_refusal_and_a_number_setting_of_the_probe(host):
    pv = host("probe")
    pv.wait_running("probe")
    r = pv.ctl("config", "set", "probe", "label=forbidden")
    assert (r.returncode, r.stderr.strip()) == (1, "plugvisor: plugin \"probe\" refused: the label 'forbidden' is refused by the probe")
    r = pv.ctl("config", "set", "probe", "limit=many")
    assert r.returncode == 1 and 'setting "limit"' in r.stderr, r.stderr
    r = pv.ctl("config", "set", "probe", "label=fine", "limit=12")
    assert r.returncode == 0, r.stderr
    assert pv.wait_log(log_line("probe", "probe reconfigured"))["fields"].split() == ["label=fine"]
    assert events_of(host.plugins)[-1] == "change label=fine"
    assert pv.config_get("probe")["limit"] == (12, "operator")


# -- the host API's log line ------------------------------------------------------------------------


def test_a_host_api_log_line_reaches_plugvisors_log_with_the_plugin_id(host):
    pv = host("probe")
    pv.wait_running("probe")
    line = pv.wait_log(log_line("probe", "probe activated"))
    assert line["fields"].split() == ["count=1", "label=plain", "limit=3", "tls=yes"]
    # Through the host API: the SDK's stderr fallback would add host_log_error (and module=).
    assert "host_log_error" not in pv.stderr()


def test_the_host_api_behaves_as_the_sdk_expects(host, tmp_path):
    # The SDK's own tests use PluginHost's in-memory host API; this is the real one.
    (tmp_path / "plugvisor.toml").write_text("[plugins.probe]\nselftest = true\n")
    pv = host("probe", args=("--config", str(tmp_path / "plugvisor.toml"), "--kv-max-value-bytes", "1000"))
    pv.wait_running("probe")
    results = json.loads((host.plugins / "probe" / "selftest.json").read_text())
    assert {name: outcome for name, outcome in results.items() if outcome != "ok"} == {}
    assert len(results) == 22
    # Fields that are not strings arrive as JSON, sorted by name; a warning is a WARN line.
    line = pv.wait_log(r"^\S+\s+WARN plugin\{id=probe\}: probe fields (?P<fields>.*)$")
    assert line["fields"] == 'flag=true items=[1, "two"] number=5 text=with spaces'


# -- a failed activation -----------------------------------------------------------------------------


def test_a_plugin_raising_in_on_activate_ends_failed_to_start_with_its_message(host, tmp_path):
    (tmp_path / "plugvisor.toml").write_text('[plugins.probe]\nfail_activation = "the probe refuses to start"\n')
    # hello-python keeps plugvisor running (with no plugin active it exits 1).
    pv = host("probe", "hello-python", args=("--config", str(tmp_path / "plugvisor.toml")))
    _, failed = pv.wait_event("probe", "failed_to_start")
    assert "the probe refuses to start" in failed["error"]
    pv.wait_running("hello-python")
    status = pv.status_of("probe")
    assert status["state"] == "FailedToStart" and status["pid"] is None
    assert "the probe refuses to start" in status["last_error"]
    assert events_of(host.plugins) == ["finally", "with exit", "atexit"]  # stopped cleanly, no on_deactivate

    # Fixed by the operator, started again: it runs.
    r = pv.ctl("config", "set", "probe", "fail_activation=")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "stored: the plugin is not running and gets it when it starts"
    r = pv.ctl("start", "probe")
    assert r.returncode == 0, r.stderr
    assert pv.status_of("probe")["state"] == "Running"
    assert events_of(host.plugins)[-1] == "activate 1 label=plain limit=3 tls=yes"


# -- AutoMTLS ------------------------------------------------------------------------------------------


def test_automtls_with_the_host_api(host):
    pv = host("probe", "hello-python", args=("--tls", "require"))
    pv.wait_running("probe")
    pv.wait_running("hello-python")
    # The host API (kv and log) works over the brokered TLS connection.
    assert pv.wait_log(log_line("probe", "probe activated"))["fields"].split()[-1] == "tls=yes"
    assert pv.wait_log(log_line("hello-python", "activated"))["fields"].split()[0] == "activations=1"
    r = pv.ctl("config", "set", "hello-python", "greeting=Salut")
    assert r.returncode == 0, r.stderr
    assert pv.terminate() == 0
    assert events_of(host.plugins) == ["activate 1 label=plain limit=3 tls=yes", "deactivate 1", "finally", "with exit", "atexit"]


# -- stopping: on_deactivate and the cleanup around run() ----------------------------------------------


def test_on_deactivate_and_the_cleanup_around_run_on_stop_and_on_sigterm(host):
    pv = host("probe")
    _, running = pv.wait_running("probe")
    first = running["status"]["pid"]
    cleanup = ["finally", "with exit", "atexit"]

    r = pv.ctl("stop", "probe")
    assert r.returncode == 0, r.stderr
    assert pv.status_of("probe")["state"] == "NotRunning"
    assert pid_gone(first)
    _, stopped = pv.wait_event("probe", "stopped")
    assert (stopped["method"], stopped["exit"]) == ("controller", "exit status 0")
    assert events_of(host.plugins) == ["activate 1 label=plain limit=3 tls=yes", "deactivate 1", *cleanup]

    r = pv.ctl("start", "probe")
    assert r.returncode == 0, r.stderr
    assert pv.status_of("probe")["state"] == "Running"
    r = pv.ctl("restart", "probe")
    assert r.returncode == 0, r.stderr
    assert pv.status_of("probe")["state"] == "Running"
    assert events_of(host.plugins)[5:] == ["activate 2 label=plain limit=3 tls=yes", "deactivate 2", *cleanup,
                                            "activate 3 label=plain limit=3 tls=yes"]
    assert pv.terminate() == 0
    assert events_of(host.plugins)[11:] == ["deactivate 3", *cleanup]
    pv.assert_no_plugin_left()


def test_the_cleanup_around_serve_on_stop_and_on_sigterm(host):
    # A bare serve() plugin: no hooks, so plugvisor stops it with the controller at once.
    pv = host("served")
    pv.wait_running("served")
    cleanup = ["on_shutdown", "finally", "with exit", "atexit"]
    r = pv.ctl("stop", "served")
    assert r.returncode == 0, r.stderr
    _, stopped = pv.wait_event("served", "stopped")
    assert (stopped["method"], stopped["exit"]) == ("controller", "exit status 0")
    assert events_of(host.plugins, "served") == ["register", *cleanup]
    r = pv.ctl("start", "served")
    assert r.returncode == 0, r.stderr
    assert pv.terminate() == 0
    assert events_of(host.plugins, "served") == ["register", *cleanup] * 2
    pv.assert_no_plugin_left()


def test_a_host_killed_with_sigkill_takes_its_plugins_along(host):
    # plugvisor gives its plugins a parent-death SIGKILL: nothing of theirs runs
    # (the README says so: on_shutdown and cleanup run on graceful stops only).
    pv = host("probe")
    _, running = pv.wait_running("probe")
    pid = running["status"]["pid"]
    pv.proc.kill()
    pv.proc.wait(10)
    wait_for(lambda: pid_gone(pid), 10, "the plugin to die with its host")
    assert events_of(host.plugins) == ["activate 1 label=plain limit=3 tls=yes"]
