"""Cleanup written around serve() runs on every graceful stop.

A plugin may clean up with `try: serve() finally: ...`, `with ...: serve()`
or `atexit.register(...)`. Each must run on the controller's Shutdown, on
SIGTERM and when the host dies, and then the process must still end the
quick way (the interpreter's module teardown skipped).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from hostkit import FAKE_HOST, TESTS, Handshake, base_env, pid_gone, wait_for

from plugvisor_plugin.testing import PluginHost

CLEANUP_PLUGIN = TESTS / "plugins" / "cleanup_plugin.py"
EXPECTED = {"finally": ["finally ran"], "with": ["with exit ran"], "atexit": ["atexit ran"]}
MODES = list(EXPECTED)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stop", ["controller", "sigterm"])
def test_cleanup_runs_on_stop(tmp_path, mode, stop):
    marker = tmp_path / "marker"
    host = PluginHost(CLEANUP_PLUGIN, env={"PVTEST_CLEANUP_MODE": mode, "PVTEST_MARKER": str(marker)})
    with host:
        if stop == "controller":
            host.request_shutdown()
        else:
            host.signal(signal.SIGTERM)
        assert host.wait() == 0
    # Exactly the cleanup: no "after serve" (serve() raised SystemExit) and no
    # "teardown ran" (the quick exit skipped the module teardown).
    assert lines(marker) == EXPECTED[mode]


@pytest.mark.parametrize("mode", MODES)
def test_cleanup_runs_when_the_host_dies(spawn, sock_dir, tmp_path, mode):
    marker = tmp_path / "marker"
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_MARKER=str(marker), PVTEST_CLEANUP_MODE=mode)
    host = spawn(FAKE_HOST, env=env, args=[str(CLEANUP_PLUGIN)])
    line = host.read_line(60)
    assert line, f"the fake host printed nothing; stderr:\n{host.stderr_text()}"
    pid_s, hs_line = line.strip().split(" ", 1)
    Handshake.parse(hs_line)
    os.kill(host.pid, signal.SIGKILL)  # the host only: the plugin is orphaned
    host.wait_exit()
    wait_for(lambda: pid_gone(int(pid_s)), 10, "the orphaned plugin to exit")
    assert lines(marker) == EXPECTED[mode]


def test_an_exception_in_cleanup_wins_over_the_quick_exit(tmp_path):
    # The interpreter prints the traceback and exits 1 its ordinary way, so
    # the module teardown runs (which proves the witness would notice it).
    marker = tmp_path / "marker"
    env = {"PVTEST_CLEANUP_MODE": "finally", "PVTEST_MARKER": str(marker), "PVTEST_AFTER_SERVE": "raise"}
    host = PluginHost(CLEANUP_PLUGIN, env=env)
    with host:
        host.request_shutdown()
        assert host.wait() == 1
    assert "cleanup failed on purpose" in host.stderr()
    assert lines(marker) == ["finally ran", "teardown ran"]
