"""plugvisor_plugin.testing.PluginHost checks what it promises to check."""

from __future__ import annotations

import os
import stat

import pytest
from hostkit import TEST_PLUGIN, TESTS, pid_gone, wait_for

from plugvisor_plugin.testing import PluginExitError, PluginHost, PluginStartError


def test_the_environment_is_plugvisors():
    with PluginHost(TEST_PLUGIN, plugin_id="env-check") as host:
        env = host.environment()
        assert env["MATTERMOST_PLUGIN"] == "Securely message teams, anywhere."
        assert env["PLUGIN_PROTOCOL_VERSIONS"] == "1"
        assert env["PLUGIN_MIN_PORT"] and env["PLUGIN_MAX_PORT"]
        assert env["PLUGVISOR_PLUGIN_INSTANCE"].startswith("env-check-")
        assert "PLUGIN_CLIENT_CERT" not in env
        sock_dir = host.socket_dir
        assert stat.S_IMODE(sock_dir.stat().st_mode) == 0o700
        assert host.handshake is not None and os.path.dirname(host.handshake.address) == str(sock_dir)
    assert not sock_dir.exists(), "the private directory is removed"


def test_leftover_processes_in_the_group_fail_the_stop():
    host = PluginHost(TESTS / "plugins" / "leaky_plugin.py").start()
    with pytest.raises(PluginExitError, match="still running after it exited"):
        host.stop()
    assert host.exit_status == 0
    assert pid_gone(host.pid)
    wait_for(lambda: not group_alive(host.pid), 5, "the leftover process to be killed")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_failing_exit_status_fails_the_stop(tmp_path):
    env = {"PVTEST_MARKER": str(tmp_path / "m"), "PVTEST_CLEANUP_RAISES": "1"}
    host = PluginHost(TEST_PLUGIN, env=env).start()
    with pytest.raises(PluginExitError, match="status 1") as e:
        host.stop()
    assert "cleanup failed on purpose" in e.value.stderr


def test_a_plugin_that_never_starts_is_reported_with_its_stderr():
    host = PluginHost(TEST_PLUGIN, env={"MATTERMOST_PLUGIN": "wrong"})
    with pytest.raises(PluginStartError, match="exited with status 1 before its handshake") as e:
        host.start()
    assert "this is a plugin" in e.value.stderr
