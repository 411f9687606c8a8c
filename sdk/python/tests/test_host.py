"""The SDK seen from a host: real plugin processes, real gRPC.

These tests play the host's part: set the environment, spawn the plugin in
its own process group, read the handshake line, connect with grpc, call the
health, controller and stdio services, send signals, and watch the process
exit. Bounds on time are generous; the point is what happens, not how fast.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Tuple

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hostkit import (
    EXAMPLE,
    EXAMPLE_DIR,
    EXIT_TIMEOUT,
    FAKE_HOST,
    RAW_PLUGIN,
    TEST_PLUGIN,
    Handshake,
    base_env,
    pid_gone,
    wait_for,
)

SERVING = health_pb2.HealthCheckResponse.SERVING


def _ident(b):
    return b


def health_status(target: str, service: str = "plugin") -> int:
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def call(channel: grpc.Channel, method: str, request: bytes = b"", timeout: float = 10) -> bytes:
    return channel.unary_unary(method, request_serializer=_ident, response_deserializer=_ident)(
        request, timeout=timeout
    )


def controller_shutdown(channel: grpc.Channel) -> bytes:
    return call(channel, "/plugin.GRPCController/Shutdown")


class StdioReader:
    """Consumes plugin.GRPCStdio/StreamStdio in a thread."""

    def __init__(self, channel: grpc.Channel) -> None:
        from plugvisor_plugin._wire import decode_stdio_data

        self.items: List[Tuple[int, bytes]] = []
        self.error = None
        self.ended = threading.Event()
        self._call = channel.unary_stream(
            "/plugin.GRPCStdio/StreamStdio", request_serializer=_ident, response_deserializer=decode_stdio_data
        )(b"")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._call:
                self.items.append(item)
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.ended.set()

    def text(self, channel: int) -> str:
        return b"".join(d for c, d in list(self.items) if c == channel).decode(errors="replace")

    def cancel(self) -> None:
        self._call.cancel()


def log_records(stderr: str) -> List[dict]:
    out = []
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def marker_lines(path: Path) -> List[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- the example plugin -----------------------------------------------------------------------


def test_example_handshake_health_and_sigterm(spawn, sock_dir):
    p = spawn(EXAMPLE, env=base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir)), cwd=EXAMPLE_DIR)
    hs = p.handshake()
    assert re.fullmatch(r"1\|1\|unix\|[^|]+\|grpc\n", p.handshake_line)
    sock = Path(hs.address)
    assert sock.parent == sock_dir and sock.name.startswith("plugin") and sock.name.endswith(".sock")
    assert stat.S_ISSOCK(sock.stat().st_mode)

    assert health_status(hs.target, "plugin") == SERVING
    assert health_status(hs.target, "") == SERVING

    p.signal(signal.SIGTERM)
    assert p.wait_exit() == 0
    assert not sock.exists(), "the socket file must be removed on exit"
    assert p.rest_of_stdout() == "", "nothing but the handshake may reach stdout"
    records = log_records(p.stderr_text())
    # Started without the lifecycle (a bare go-plugin host): no activation,
    # so nothing but the SDK's own records.
    assert [r["@message"] for r in records] == ["plugin is shutting down"]
    for r in records:
        assert {"@level", "@message", "@timestamp", "@module"} <= set(r)


def test_example_runs_from_its_own_venv(spawn, sock_dir):
    """The bundle's venv holds a real (non-editable) install of the SDK."""
    py = EXAMPLE_DIR / "venv" / "bin" / "python"
    if not py.exists():
        pytest.skip("examples/plugins/hello-python/venv is missing; run scripts/setup-python")
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir))
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    where = subprocess.run(
        [str(py), "-c", "import plugvisor_plugin; print(plugvisor_plugin.__file__)"],
        env=env, cwd=str(EXAMPLE_DIR), capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert "/venv/" in where and "sdk/python/src" not in where, where

    p = spawn(EXAMPLE, env=env, python=str(py), cwd=EXAMPLE_DIR)
    hs = p.handshake()
    assert health_status(hs.target) == SERVING
    with grpc.insecure_channel(hs.target) as ch:
        assert controller_shutdown(ch) == b""
    assert p.wait_exit() == 0


# -- controller shutdown ---------------------------------------------------------------------


def test_controller_shutdown_answers_then_exits_with_cleanup(spawn, sock_dir, tmp_path):
    marker = tmp_path / "marker"
    # A long grace: exiting promptly must not depend on waiting it out, even
    # with a stdio stream open.
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_MARKER=str(marker), PVTEST_GRACE="60")
    p = spawn(TEST_PLUGIN, env=env)
    hs = p.handshake()
    with grpc.insecure_channel(hs.target) as ch:
        reader = StdioReader(ch)
        assert call(ch, "/pvtest.Test/Print", b"before shutdown") == b"ok"
        wait_for(lambda: "before shutdown" in reader.text(1), 10, "the stdio stream to be live")
        assert controller_shutdown(ch) == b""  # the answer arrives before the process goes
        assert p.wait_exit(EXIT_TIMEOUT) == 0
        assert reader.ended.wait(10)
        assert reader.error is None, f"the stdio stream should end cleanly, got {reader.error}"
    assert marker_lines(marker) == ["cleanup ran"]
    assert not Path(hs.address).exists()
    reasons = [r.get("reason") for r in log_records(p.stderr_text()) if r["@message"] == "plugin is shutting down"]
    assert reasons == ["controller Shutdown RPC"]


def test_shutdown_twice_runs_cleanup_once(spawn, sock_dir, tmp_path):
    marker = tmp_path / "marker"
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_MARKER=str(marker))
    p = spawn(TEST_PLUGIN, env=env)
    hs = p.handshake()
    with grpc.insecure_channel(hs.target) as ch:
        controller_shutdown(ch)
        try:
            controller_shutdown(ch)
        except grpc.RpcError:
            pass  # the server may already be gone: fine
    assert p.wait_exit() == 0
    assert marker_lines(marker) == ["cleanup ran"]


def test_inflight_rpc_completes_during_drain(spawn, sock_dir, tmp_path):
    marker = tmp_path / "marker"
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_MARKER=str(marker), PVTEST_GRACE="30")
    p = spawn(TEST_PLUGIN, env=env)
    hs = p.handshake()
    result = {}
    with grpc.insecure_channel(hs.target) as ch:
        t = threading.Thread(target=lambda: result.update(r=call(ch, "/pvtest.Test/Sleep", b"1.5", timeout=30)))
        t.start()
        wait_for(lambda: "rpc Sleep started" in p.stderr_text(), 30, "the call to reach the plugin")
        p.signal(signal.SIGTERM)
        t.join(30)
    assert result.get("r") == b"slept", "an RPC in flight at stop time should be allowed to finish"
    assert p.wait_exit() == 0
    assert marker_lines(marker) == ["cleanup ran"]


def test_cleanup_failure_gives_exit_status_1(spawn, sock_dir, tmp_path):
    marker = tmp_path / "marker"
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_MARKER=str(marker), PVTEST_CLEANUP_RAISES="1")
    p = spawn(TEST_PLUGIN, env=env)
    hs = p.handshake()
    with grpc.insecure_channel(hs.target) as ch:
        controller_shutdown(ch)
    assert p.wait_exit() == 1
    assert marker_lines(marker) == ["cleanup ran"]
    errors = [r for r in log_records(p.stderr_text()) if r["@level"] == "error"]
    assert errors and "cleanup failed on purpose" in errors[0].get("exception", "")


def test_stuck_handler_does_not_keep_the_process_alive(spawn, sock_dir, tmp_path):
    marker = tmp_path / "marker"
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_MARKER=str(marker), PVTEST_GRACE="0.5")
    p = spawn(TEST_PLUGIN, env=env)
    hs = p.handshake()
    with grpc.insecure_channel(hs.target) as ch:
        fut = ch.unary_unary("/pvtest.Test/StuckSleep", request_serializer=_ident, response_deserializer=_ident).future(
            b"600", timeout=600
        )
        wait_for(lambda: "rpc StuckSleep started" in p.stderr_text(), 30, "the call to reach the plugin")
        controller_shutdown(ch)
        assert p.wait_exit(30) == 0
        fut.cancel()
    assert marker_lines(marker) == ["cleanup ran"]


def test_exit_waits_for_threads_and_runs_atexit_after_on_shutdown(spawn, sock_dir, tmp_path):
    # serve() ends the process with os._exit, but only after doing what the
    # interpreter's exit would: join non-daemon threads, then atexit handlers.
    marker = tmp_path / "marker"
    env = base_env(
        PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_MARKER=str(marker), PVTEST_ATEXIT="1", PVTEST_THREAD_SECONDS="0.3"
    )
    p = spawn(TEST_PLUGIN, env=env)
    hs = p.handshake()
    with grpc.insecure_channel(hs.target) as ch:
        controller_shutdown(ch)
    assert p.wait_exit() == 0
    assert marker_lines(marker) == ["cleanup ran", "thread done", "atexit ran"]


def test_register_failure_exits_1_with_the_traceback(spawn, tmp_path):
    marker = tmp_path / "marker"
    env = base_env(PVTEST_MARKER=str(marker), PVTEST_REGISTER_RAISES="1", PVTEST_PRINT_IN_REGISTER="said before failing")
    p = spawn(TEST_PLUGIN, env=env)
    assert p.wait_exit() == 1
    err = p.stderr_text()
    assert "Traceback" in err and "register failed on purpose" in err
    # What was captured is not lost: it goes to the real stdout. No handshake.
    assert p.rest_of_stdout() == "said before failing\n"
    assert not marker.exists(), "on_shutdown is for plugins that started"


# -- signals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_gracefully(spawn, sock_dir, tmp_path, sig):
    marker = tmp_path / "marker"
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_MARKER=str(marker), PVTEST_GRACE="60")
    p = spawn(TEST_PLUGIN, env=env)
    hs = p.handshake()
    with grpc.insecure_channel(hs.target) as ch:
        reader = StdioReader(ch)
        assert health_status(hs.target) == SERVING
        p.signal(sig)
        assert p.wait_exit(EXIT_TIMEOUT) == 0
        reader.ended.wait(10)
    assert marker_lines(marker) == ["cleanup ran"]
    assert not Path(hs.address).exists()
    reasons = [r.get("reason") for r in log_records(p.stderr_text()) if r["@message"] == "plugin is shutting down"]
    assert reasons == [f"signal {sig.name}"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tgkill is Linux-only")
def test_sigterm_delivered_to_another_thread_still_stops(spawn, sock_dir, tmp_path):
    """The kernel may hand a process signal to any thread; Python runs handlers
    only in the main thread, which must still wake up (regression: it slept on
    a pipe read forever)."""
    import ctypes

    marker = tmp_path / "marker"
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_MARKER=str(marker))
    p = spawn(TEST_PLUGIN, env=env)
    hs = p.handshake()
    assert health_status(hs.target) == SERVING
    pid = p.proc.pid
    others = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
    assert others, "the plugin should have grpc threads"
    SYS_TGKILL = {"x86_64": 234, "aarch64": 131}[os.uname().machine]
    assert ctypes.CDLL(None, use_errno=True).syscall(SYS_TGKILL, pid, others[0], signal.SIGTERM) == 0
    assert p.wait_exit(EXIT_TIMEOUT) == 0
    assert marker_lines(marker) == ["cleanup ran"]


def test_second_signal_cuts_the_drain_short(spawn, sock_dir, tmp_path):
    marker = tmp_path / "marker"
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_MARKER=str(marker), PVTEST_GRACE="120")
    p = spawn(TEST_PLUGIN, env=env)
    hs = p.handshake()
    result = {}

    def slow_call(ch):
        try:
            result["r"] = call(ch, "/pvtest.Test/Sleep", b"300", timeout=300)
        except grpc.RpcError as e:
            result["err"] = e.code()

    with grpc.insecure_channel(hs.target) as ch:
        t = threading.Thread(target=slow_call, args=(ch,), daemon=True)
        t.start()
        wait_for(lambda: "rpc Sleep started" in p.stderr_text(), 30, "the call to reach the plugin")
        p.signal(signal.SIGTERM)
        wait_for(lambda: "plugin is shutting down" in p.stderr_text(), 10, "the drain to start")
        time.sleep(0.3)
        assert p.proc.poll() is None, "the first signal should wait for the in-flight RPC"
        p.signal(signal.SIGTERM)
        assert p.wait_exit(EXIT_TIMEOUT) == 0
        t.join(10)
    assert "err" in result, f"the in-flight RPC should have been cut off, got {result}"
    assert marker_lines(marker) == ["cleanup ran"]


# -- host death ------------------------------------------------------------------------------------


def test_plugin_exits_when_its_host_dies(spawn, tmp_path, sock_dir):
    marker = tmp_path / "marker"
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_MARKER=str(marker))
    host = spawn(FAKE_HOST, env=env, args=[str(TEST_PLUGIN)])
    line = host.read_line(60)
    assert line, f"the fake host printed nothing; stderr:\n{host.stderr_text()}"
    pid_s, hs_line = line.strip().split(" ", 1)
    plugin_pid = int(pid_s)
    hs = Handshake.parse(hs_line)
    assert health_status(hs.target) == SERVING

    os.kill(host.pid, signal.SIGKILL)  # the host only; the plugin is left orphaned
    host.wait_exit()
    assert not pid_gone(plugin_pid)
    wait_for(lambda: pid_gone(plugin_pid), 10, "the orphaned plugin to exit")
    wait_for(lambda: marker_lines(marker) == ["cleanup ran"], 5, "the plugin's cleanup marker")
    assert not Path(hs.address).exists()
    # The fake host passed its stderr (our file) on to the plugin.
    reasons = [r.get("reason") for r in log_records(host.stderr_text()) if r["@message"] == "plugin is shutting down"]
    assert reasons == ["host process exited"]


# -- stdio --------------------------------------------------------------------------------------------


def test_stream_stdio_delivers_prints(spawn, sock_dir):
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_PRINT_IN_REGISTER="printed in register")
    p = spawn(TEST_PLUGIN, env=env)
    hs = p.handshake()
    assert p.handshake_line.startswith("1|1|unix|"), "a print() in register() must not come before the handshake"
    with grpc.insecure_channel(hs.target) as ch:
        reader = StdioReader(ch)
        assert call(ch, "/pvtest.Test/Print", b"hello stream") == b"ok"
        wait_for(lambda: "hello stream" in reader.text(1) and "err:hello stream" in reader.text(2), 10,
                 "the print() to arrive on the stream")
        assert "printed in register\n" in reader.text(1)
        assert "err:" not in reader.text(1) and "err:hello stream\n" in reader.text(2)
        controller_shutdown(ch)
        assert p.wait_exit() == 0
    # Captured output went to the stream, not to the real stdout/stderr.
    assert p.rest_of_stdout() == ""
    assert "hello stream" not in p.stderr_text()


def test_stdio_queue_is_bounded_and_never_blocks(spawn, sock_dir):
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_STDIO_BUFFER="4096")
    p = spawn(TEST_PLUGIN, env=env)
    hs = p.handshake()
    with grpc.insecure_channel(hs.target) as ch:
        # Nobody reads the stream yet: 1 MB of output must not block the plugin.
        assert call(ch, "/pvtest.Test/Flood", b"10000", timeout=60) == b"ok"
        reader = StdioReader(ch)
        wait_for(lambda: "flood line 009999" in reader.text(1), 10, "the newest line")
        out = reader.text(1)
        assert "flood line 000000" not in out, "the oldest output should have been dropped"
        assert len(out) <= 4096
        assert "dropped" in reader.text(2)
        controller_shutdown(ch)
    assert p.wait_exit() == 0


def test_undelivered_output_is_written_out_at_exit(spawn, sock_dir):
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir))
    p = spawn(TEST_PLUGIN, env=env)
    hs = p.handshake()
    with grpc.insecure_channel(hs.target) as ch:
        call(ch, "/pvtest.Test/Print", b"nobody streamed this")
        controller_shutdown(ch)
    assert p.wait_exit() == 0
    assert "nobody streamed this" in p.rest_of_stdout()
    assert "err:nobody streamed this" in p.stderr_text()


# -- cookie, versions, networks -----------------------------------------------------------------------


@pytest.mark.parametrize("cookie_value", [None, "wrong"])
def test_without_the_cookie_the_plugin_explains_and_exits_1(spawn, cookie_value):
    env = base_env(cookie=False)
    if cookie_value is not None:
        env["MATTERMOST_PLUGIN"] = cookie_value
    p = spawn(EXAMPLE, env=env)
    assert p.wait_exit() == 1
    err = p.stderr_text()
    assert "this is a plugin" in err and "plugvisor" in err
    assert "Traceback" not in err
    assert p.rest_of_stdout() == ""


def test_custom_cookie(spawn, sock_dir):
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_COOKIE_KEY="MY_HOST", PVTEST_COOKIE_VALUE="let me in")
    p = spawn(TEST_PLUGIN, env=env)  # only the default cookie is set
    assert p.wait_exit() == 1
    assert "this is a plugin" in p.stderr_text()

    env["MY_HOST"] = "let me in"
    p = spawn(TEST_PLUGIN, env=env)
    hs = p.handshake()
    assert health_status(hs.target) == SERVING


@pytest.mark.parametrize(
    "host_versions, plugin_versions, want",
    [("1,2,3", "2,3,4", 3), (None, "2,3,4", 4), ("1", "1", 1), ("7,2", "2,7", 7)],
)
def test_version_negotiation_in_the_handshake(spawn, sock_dir, host_versions, plugin_versions, want):
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_APP_VERSIONS=plugin_versions)
    if host_versions is None:
        env.pop("PLUGIN_PROTOCOL_VERSIONS")
    else:
        env["PLUGIN_PROTOCOL_VERSIONS"] = host_versions
    p = spawn(TEST_PLUGIN, env=env)
    assert p.handshake().app == want


def test_no_common_version_is_a_clear_error(spawn):
    env = base_env(PLUGIN_PROTOCOL_VERSIONS="5,6", PVTEST_APP_VERSIONS="2,3")
    p = spawn(TEST_PLUGIN, env=env)
    assert p.wait_exit() == 1
    err = p.stderr_text()
    assert "5, 6" in err and "2, 3" in err and "Traceback" not in err
    assert p.rest_of_stdout() == ""


def _two_ports_first_taken():
    """A listening socket on port P, with P+1 free: returns (sock, P)."""
    for _ in range(50):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        if port < 65535:
            probe = socket.socket()
            try:
                probe.bind(("127.0.0.1", port + 1))
                return s, port
            except OSError:
                pass
            finally:
                probe.close()
        s.close()
    pytest.skip("could not find two adjacent ports")


def test_tcp_skips_ports_in_use(spawn):
    taken, port = _two_ports_first_taken()
    try:
        env = base_env(PVTEST_NETWORK="tcp", PLUGIN_MIN_PORT=str(port), PLUGIN_MAX_PORT=str(port + 1))
        p = spawn(TEST_PLUGIN, env=env)
        hs = p.handshake()
        assert (hs.network, hs.address) == ("tcp", f"127.0.0.1:{port + 1}")
        assert health_status(hs.target) == SERVING
        with grpc.insecure_channel(hs.target) as ch:
            controller_shutdown(ch)
        assert p.wait_exit() == 0
    finally:
        taken.close()


def test_tcp_without_a_free_port_is_a_clear_error(spawn):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        env = base_env(PVTEST_NETWORK="tcp", PLUGIN_MIN_PORT=str(port), PLUGIN_MAX_PORT=str(port))
        p = spawn(TEST_PLUGIN, env=env)
        assert p.wait_exit() == 1
        assert f"no free tcp port on 127.0.0.1 between PLUGIN_MIN_PORT={port}" in p.stderr_text()
        assert p.rest_of_stdout() == ""
    finally:
        taken.close()


def test_tcp_without_a_range_uses_any_port(spawn):
    p = spawn(TEST_PLUGIN, env=base_env(PVTEST_NETWORK="tcp"))
    hs = p.handshake()
    assert hs.network == "tcp" and re.fullmatch(r"127\.0\.0\.1:\d+", hs.address)
    assert health_status(hs.target) == SERVING


def test_without_a_socket_dir_the_socket_lives_in_a_private_dir(spawn):
    p = spawn(TEST_PLUGIN, env=base_env())
    hs = p.handshake()
    assert hs.network == "unix"
    d = Path(hs.address).parent
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert health_status(hs.target) == SERVING
    p.signal(signal.SIGTERM)
    assert p.wait_exit() == 0
    assert not d.exists(), "the private socket directory should be removed on exit"


# -- the raw grpcio plugin (tests/pyplugins/raw_grpcio) ----------------------------------------------------


def test_raw_grpcio_plugin(spawn, tmp_path):
    marker = tmp_path / "marker"
    p = spawn(RAW_PLUGIN, env=base_env(PLUGVISOR_TEST_MARKER=str(marker)))
    hs = p.handshake()
    assert re.fullmatch(r"1\|1\|tcp\|127\.0\.0\.1:\d+\|grpc\n", p.handshake_line)
    assert health_status(hs.target) == SERVING
    with grpc.insecure_channel(hs.target) as ch:
        with pytest.raises(grpc.RpcError) as e:
            controller_shutdown(ch)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    p.signal(signal.SIGTERM)
    assert p.wait_exit() == 0
    assert marker_lines(marker) == ["SIGTERM"]
