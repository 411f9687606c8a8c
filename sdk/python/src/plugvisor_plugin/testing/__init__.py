"""A small plugin host for your own tests: run a plugin as plugvisor would.

    from plugvisor_plugin.testing import PluginHost

    def test_counts_activations():
        with PluginHost("plugin.py", configuration={"greeting": "Hi"}) as host:
            assert host.kv.data["activations"] == b"1"
            assert host.logs.records[0].message == "activated"
            host.configure({"greeting": "Yo"})   # raises ConfigurationRefused on a refusal
        # leaving the block deactivated and stopped the plugin, and checked
        # that it exited with status 0 and left no process behind

PluginHost starts the script with the interpreter running the tests, in a
session (process group) of its own, with the environment plugvisor gives a
plugin: the magic cookie, PLUGIN_PROTOCOL_VERSIONS, PLUGIN_MIN_PORT /
PLUGIN_MAX_PORT, a private (0700) PLUGIN_UNIX_SOCKET_DIR,
PLUGVISOR_PLUGIN_INSTANCE and, with automtls=True, PLUGIN_CLIENT_CERT. It
reads the handshake line, connects (pinning the plugin's certificate under
AutoMTLS) and waits until grpc.health.v1 says "plugin" is SERVING. Then, as
plugvisor does, it asks plugvisor.v1.Lifecycle/Implemented; for a plugin
that serves go-plugin's broker it starts plugin.GRPCBroker/StartStream and
serves an in-memory host API (kv, log, configuration, and the servicers you
pass in host_services) on a unix socket of its own, TLS under AutoMTLS; and
it calls OnActivate with your configuration. ServeHTTP requests go through
http().

Nothing here needs pytest; errors are exceptions that say what happened and
carry the plugin's stderr.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Callable, Iterator, Mapping, Optional, Sequence, Union

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .. import __version__, _wire
from .._errors import rpc_status
from .._handshake import DEFAULT_COOKIE_KEY, DEFAULT_COOKIE_VALUE, ENV_CLIENT_CERT, ENV_UNIX_SOCKET_DIR
from .._proto import grpc_broker_pb2 as broker_pb
from .._proto import grpc_broker_pb2_grpc as broker_grpc
from .._proto.plugvisor.v1 import lifecycle_pb2 as lifecycle_pb
from .._proto.plugvisor.v1 import lifecycle_pb2_grpc as lifecycle_grpc
from ._hostapi import ConfigurationService, KvLimits, KvStore, LogCollector, LogRecord, add_host_api
from ._http import Body, Headers, HttpAborted, HttpResponse, HttpStream, collect, open_stream, request_parts

__all__ = [
    "ActivationRefused",
    "ConfigurationRefused",
    "Handshake",
    "HttpAborted",
    "HttpResponse",
    "HttpStream",
    "Implemented",
    "KvLimits",
    "KvStore",
    "LogCollector",
    "LogRecord",
    "PluginError",
    "PluginExitError",
    "PluginHost",
    "PluginStartError",
]

#: Seconds a plugin may take from spawn to SERVING (generous: CI machines are busy).
DEFAULT_START_TIMEOUT = 30.0
#: Seconds a plugin may take to exit once asked to stop.
DEFAULT_STOP_TIMEOUT = 10.0
#: Ports a plugin may listen on when it uses tcp (go-plugin's default range).
DEFAULT_PORT_RANGE = (10000, 25000)
#: Seconds a lifecycle call (Implemented, OnActivate, ...) may take.
DEFAULT_HOOK_TIMEOUT = 30.0

HostService = Callable[[grpc.Server], None]

PathLike = Union[str, "os.PathLike[str]"]


class PluginError(Exception):
    """Something about the plugin process went wrong; `stderr` is what it wrote there."""

    def __init__(self, message: str, stderr: str = "") -> None:
        tail = stderr.strip()
        super().__init__(f"{message}\n--- plugin stderr ---\n{tail}" if tail else message)
        self.stderr = stderr


class PluginStartError(PluginError):
    """The plugin did not get to SERVING."""


class PluginExitError(PluginError):
    """The plugin did not stop cleanly: a non-zero status, a timeout or leftover processes."""


class ActivationRefused(PluginError):
    """OnActivate answered with a refusal; `refusal` is the plugin's message.
    The host stopped the plugin, as plugvisor does."""

    def __init__(self, refusal: str, stderr: str = "") -> None:
        super().__init__(f"the plugin refused to activate: {refusal}", stderr)
        self.refusal = refusal


class ConfigurationRefused(PluginError):
    """OnConfigurationChange answered with a refusal; the old configuration stays."""

    def __init__(self, refusal: str, stderr: str = "") -> None:
        super().__init__(f"the plugin refused the configuration: {refusal}", stderr)
        self.refusal = refusal


@dataclass(frozen=True)
class Implemented:
    """What Lifecycle/Implemented said."""

    hooks: tuple[str, ...]
    services: tuple[str, ...]


@dataclass(frozen=True)
class Handshake:
    """The plugin's handshake line, split up."""

    core_version: int
    app_version: int
    network: str
    address: str
    protocol: str
    server_cert: Optional[bytes] = None
    """The plugin's AutoMTLS certificate (DER), from the sixth field."""

    @property
    def target(self) -> str:
        """The address as a grpc target."""
        return "unix:" + self.address if self.network == "unix" else self.address

    @classmethod
    def parse(cls, line: str) -> Handshake:
        parts = line.strip().split("|")
        if len(parts) < 5:
            raise ValueError(f"not a go-plugin handshake line: {line!r}")
        cert = None
        if len(parts) > 5 and parts[5]:
            field = parts[5]
            cert = base64.b64decode(field + "=" * (-len(field) % 4))
        return cls(int(parts[0]), int(parts[1]), parts[2], parts[3], parts[4], cert)


def _ident(data: bytes) -> bytes:
    return data


class PluginHost:
    """One plugin process, run as plugvisor runs it.

    script: the plugin's main file; cwd (default: the script's folder) is the
        working directory, as plugvisor uses the bundle's.
    python: the interpreter (default: the one running the tests).
    env: extra environment variables (over the inherited environment,
        from which every PLUGIN_* / PLUGVISOR_* variable is removed).
    automtls: turn on go-plugin's AutoMTLS, as `plugvisor --tls` does.
    app_versions: what goes in PLUGIN_PROTOCOL_VERSIONS.
    plugin_id: the id plugvisor would take from plugin.json.
    configuration: what OnActivate delivers (a JSON object).
    activate: run the lifecycle on start (Implemented, the broker, OnActivate).
    host_services: callables that add servicers (say, a fake chat.v1.ChatApi)
        to the host-API server, beside kv, log and configuration.
    kv_limits / kv_data: the in-memory store's limits and first contents.

    start() (or `with`) runs it; stop() deactivates it and stops it through
    the controller, then checks the exit. Every process, server and
    temporary directory is gone after stop() or kill(), whatever happened.
    """

    def __init__(
        self,
        script: PathLike,
        *,
        python: Optional[str] = None,
        args: Sequence[str] = (),
        cwd: Optional[PathLike] = None,
        env: Optional[Mapping[str, str]] = None,
        automtls: bool = False,
        app_versions: Sequence[int] = (1,),
        plugin_id: str = "test-plugin",
        configuration: Optional[Mapping[str, object]] = None,
        activate: bool = True,
        host_services: Sequence[HostService] = (),
        kv_limits: KvLimits = KvLimits(),
        kv_data: Optional[Mapping[str, bytes]] = None,
        host_version: str = f"plugvisor_plugin.testing {__version__}",
        start_timeout: float = DEFAULT_START_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        hook_timeout: float = DEFAULT_HOOK_TIMEOUT,
    ) -> None:
        self.script = Path(script).resolve()
        # Absolute: the plugin runs in its own folder.
        self.python = os.path.abspath(python) if python and os.sep in python else (python or sys.executable)
        self.args = list(args)
        self.cwd = Path(cwd) if cwd is not None else self.script.parent
        self.extra_env = dict(env or {})
        self.automtls = automtls
        self.app_versions = tuple(app_versions)
        self.plugin_id = plugin_id
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.hook_timeout = hook_timeout
        self.activate_on_start = activate
        self.host_services = tuple(host_services)
        self.host_version = host_version
        #: The plugin's key-value store (read or seed `kv.data`; `kv.available = False` fails it).
        self.kv = KvStore(kv_limits, dict(kv_data or {}))
        #: Every plugvisor.v1.Log line the plugin sent (`logs.records`).
        self.logs = LogCollector()
        self._configuration = ConfigurationService()
        self._configuration.configuration = dict(configuration or {})
        #: Lifecycle/Implemented's answer; None when the plugin serves no Lifecycle.
        self.implemented: Optional[Implemented] = None
        #: The broker id the host API was announced on (0: none).
        self.host_api_broker_id = 0
        self.activated = False
        self._deactivated = False
        self._host_server: Optional[grpc.Server] = None
        self._host_executor: Optional[Executor] = None
        self._broker_out: queue.Queue[Optional[broker_pb.ConnInfo]] = queue.Queue()
        self._broker_call: Optional[grpc.RpcContext] = None

        self.process: Optional[subprocess.Popen[bytes]] = None
        self.handshake: Optional[Handshake] = None
        self.exit_status: Optional[int] = None
        self._channel: Optional[grpc.Channel] = None
        self._work_dir: Optional[str] = None
        self._stderr_file: Optional[str] = None
        self._final_stderr = ""
        self._host_key_pem: Optional[bytes] = None
        self._host_cert_pem: Optional[bytes] = None
        self._stdout_buf = b""
        self._stdio_chunks: list[tuple[int, bytes]] = []
        self._stdio_lock = threading.Lock()

    # -- what a test uses --------------------------------------------------
    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the plugin has not been started")
        return self.process.pid

    @property
    def channel(self) -> grpc.Channel:
        """A grpc channel to the plugin (TLS pinned to its certificate under AutoMTLS)."""
        if self._channel is None:
            raise RuntimeError("the plugin is not running; call start() first")
        return self._channel

    @property
    def socket_dir(self) -> Path:
        """The private directory given as PLUGIN_UNIX_SOCKET_DIR."""
        if self._work_dir is None:
            raise RuntimeError("the plugin has not been started")
        return Path(self._work_dir) / "sock"

    def stderr(self) -> str:
        """What the plugin wrote on its stderr so far (hclog JSON lines among it)."""
        if self._stderr_file is None:
            return self._final_stderr
        try:
            return Path(self._stderr_file).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_records(self) -> list[dict[str, object]]:
        """The hclog JSON records the plugin wrote on stderr."""
        import json

        out = []
        for line in self.stderr().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    out.append(record)
        return out

    @property
    def configuration(self) -> dict[str, object]:
        """The configuration the plugin was last activated with or accepted."""
        return dict(self._configuration.configuration)

    def stdio(self, stream: int = 1) -> str:
        """What the plugin printed on stdout (1) or stderr (2), as received
        through plugin.GRPCStdio."""
        with self._stdio_lock:
            data = b"".join(d for ch, d in self._stdio_chunks if ch == stream)
        return data.decode(errors="replace")

    # -- start -----------------------------------------------------------------
    def environment(self) -> dict[str, str]:
        """The environment the plugin gets."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PLUGIN_", "PLUGVISOR_")) and k != DEFAULT_COOKIE_KEY
        }
        env[DEFAULT_COOKIE_KEY] = DEFAULT_COOKIE_VALUE
        env["PLUGIN_PROTOCOL_VERSIONS"] = ",".join(str(v) for v in self.app_versions)
        env["PLUGIN_MIN_PORT"], env["PLUGIN_MAX_PORT"] = (str(p) for p in DEFAULT_PORT_RANGE)
        env[ENV_UNIX_SOCKET_DIR] = str(self.socket_dir)
        env["PLUGVISOR_PLUGIN_INSTANCE"] = f"{self.plugin_id}-{os.getpid()}-{id(self):x}"
        if self._host_cert_pem is not None:
            env[ENV_CLIENT_CERT] = self._host_cert_pem.decode()
        env.update(self.extra_env)
        return env

    def start(self) -> PluginHost:
        """Spawn the plugin and wait until it is SERVING."""
        if self.process is not None:
            raise RuntimeError("this PluginHost was started already")
        # Short, private: a unix socket path must fit in ~107 bytes.
        self._work_dir = tempfile.mkdtemp(prefix="pvhost", dir="/tmp" if os.path.isdir("/tmp") else None)
        os.mkdir(self.socket_dir, 0o700)
        try:
            self._start()
        except BaseException:
            self.kill()
            raise
        return self

    def _start(self) -> None:
        if self.automtls:
            from .. import _tls

            identity = _tls.generate_server_identity()  # go-plugin's host makes the same shape
            self._host_cert_pem, self._host_key_pem = identity.cert_pem, identity.key_pem
        assert self._work_dir is not None
        self._stderr_file = os.path.join(self._work_dir, "stderr")
        with open(self._stderr_file, "wb") as err:
            self.process = subprocess.Popen(
                [self.python, str(self.script), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                env=self.environment(),
                cwd=str(self.cwd),
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        line = self._read_line(deadline)
        try:
            self.handshake = Handshake.parse(line)
        except ValueError as e:
            raise PluginStartError(str(e), self.stderr()) from None
        if self.automtls and self.handshake.server_cert is None:
            raise PluginStartError("AutoMTLS is on but the handshake has no server certificate", self.stderr())
        self._channel = self._connect(self.handshake.target)
        self._wait_serving(deadline)
        threading.Thread(target=self._read_stdio, name="pvhost-stdio", daemon=True).start()
        if self.activate_on_start:
            self._activate()

    # -- lifecycle -----------------------------------------------------------------
    def _lifecycle(self) -> lifecycle_grpc.LifecycleStub:
        return lifecycle_grpc.LifecycleStub(self.channel)

    def _activate(self) -> None:
        try:
            answer = self._lifecycle().Implemented(lifecycle_pb.ImplementedRequest(), timeout=self.hook_timeout)
        except grpc.RpcError as e:
            if rpc_status(e)[0] == grpc.StatusCode.UNIMPLEMENTED:
                return  # no Lifecycle: no hooks, Running as it is
            raise
        self.implemented = Implemented(tuple(answer.hooks), tuple(answer.services))
        if "plugin.GRPCBroker" in self.implemented.services:
            self.host_api_broker_id = self._serve_host_api()
        request = lifecycle_pb.OnActivateRequest(
            plugin_id=self.plugin_id,
            configuration_json=json.dumps(self._configuration.configuration),
            host_api_broker_id=self.host_api_broker_id,
            host_version=self.host_version,
        )
        response = self._lifecycle().OnActivate(request, timeout=self.hook_timeout)
        if response.HasField("refused"):
            self.stop(check=False)
            raise ActivationRefused(response.refused.message, self.stderr())
        self.activated = True

    def _serve_host_api(self) -> int:
        """Start the broker stream and the host-API server; the broker id it is announced on."""
        requests = self._broker_out

        def outgoing() -> Iterator[broker_pb.ConnInfo]:
            while (item := requests.get()) is not None:
                yield item

        responses = broker_grpc.GRPCBrokerStub(self.channel).StartStream(outgoing())
        self._broker_call = responses
        threading.Thread(target=_drain, args=(responses,), name="pvhost-broker", daemon=True).start()

        from concurrent import futures

        self._host_executor = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="pvhost-api")
        server = grpc.server(self._host_executor)
        add_host_api(server, self.kv, self.logs, self._configuration)
        for add in self.host_services:
            add(server)
        path = str(self.socket_dir / f"host-api-{os.urandom(4).hex()}.sock")
        if self.automtls:
            assert self.handshake is not None and self.handshake.server_cert is not None
            from cryptography import x509
            from cryptography.hazmat.primitives import serialization

            plugin_cert = x509.load_der_x509_certificate(self.handshake.server_cert)
            assert self._host_key_pem is not None and self._host_cert_pem is not None
            credentials = grpc.ssl_server_credentials(
                [(self._host_key_pem, self._host_cert_pem)],
                root_certificates=plugin_cert.public_bytes(serialization.Encoding.PEM),
                require_client_auth=True,
            )
            server.add_secure_port("unix:" + path, credentials)
        else:
            server.add_insecure_port("unix:" + path)
        server.start()
        self._host_server = server
        broker_id = random.randint(2, 1 << 31)  # any non-zero id: plugins must not assume 1
        requests.put(broker_pb.ConnInfo(service_id=broker_id, network="unix", address=path))
        return broker_id

    def configure(self, configuration: Mapping[str, object]) -> None:
        """Change the configuration as an operator would: OnConfigurationChange
        when the plugin lists it (raising ConfigurationRefused on a refusal,
        which keeps the old one), else just the new configuration."""
        if self.implemented is not None and "OnConfigurationChange" in self.implemented.hooks:
            request = lifecycle_pb.OnConfigurationChangeRequest(configuration_json=json.dumps(dict(configuration)))
            response = self._lifecycle().OnConfigurationChange(request, timeout=self.hook_timeout)
            if response.HasField("refused"):
                raise ConfigurationRefused(response.refused.message, self.stderr())
        self._configuration.configuration = dict(configuration)

    # -- HTTP ----------------------------------------------------------------------------
    def http(
        self,
        method: str,
        path: str = "/",
        *,
        query: str = "",
        headers: Headers = (),
        body: Body = b"",
        timeout: Optional[float] = None,
        remote_addr: str = "127.0.0.1:54321",
        scheme: str = "http",
    ) -> HttpResponse:
        """Send an HTTP request through ServeHTTP, as plugvisor forwards
        /plugins/{id}{path}; the whole response. body may be bytes or an
        iterable of chunks (streamed). Raises HttpAborted when the plugin
        aborts the call."""
        return collect(self.http_stream(method, path, query=query, headers=headers, body=body, timeout=timeout,
                                        remote_addr=remote_addr, scheme=scheme))

    def http_stream(
        self,
        method: str,
        path: str = "/",
        *,
        query: str = "",
        headers: Headers = (),
        body: Body = b"",
        timeout: Optional[float] = None,
        remote_addr: str = "127.0.0.1:54321",
        scheme: str = "http",
    ) -> HttpStream:
        """Like http(), but the response comes part by part (HttpStream)."""
        if not any(name.lower() == "host" for name, _ in headers):
            headers = [("host", "localhost:8065"), *headers]
        head_fields = {
            "remote_addr": remote_addr,
            "plugin_id": self.plugin_id,
            "mount_path": f"/plugins/{self.plugin_id}",
            "http_version": "HTTP/1.1",
            "scheme": scheme,
        }
        parts = request_parts(method, path, query, headers, body, head_fields)
        return open_stream(self.channel, parts, self.hook_timeout if timeout is None else timeout)

    def deactivate(self) -> None:
        """OnDeactivate, when the plugin lists it (once)."""
        if self._deactivated or not self.activated:
            return
        self._deactivated = True
        if self.implemented is not None and "OnDeactivate" in self.implemented.hooks:
            self._lifecycle().OnDeactivate(lifecycle_pb.OnDeactivateRequest(), timeout=self.hook_timeout)

    def _read_line(self, deadline: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while b"\n" not in self._stdout_buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PluginStartError(f"no handshake line within {self.start_timeout} s", self.stderr())
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                status = self.process.wait()
                raise PluginStartError(f"the plugin exited with status {status} before its handshake", self.stderr())
            self._stdout_buf += chunk
        line, _, self._stdout_buf = self._stdout_buf.partition(b"\n")
        return line.decode(errors="replace")

    def _connect(self, target: str) -> grpc.Channel:
        # A subchannel pool of its own: never share a connection with another host.
        options: list[tuple[str, object]] = [("grpc.use_local_subchannel_pool", 1)]
        if not self.automtls:
            return grpc.insecure_channel(target, options=options)
        assert self.handshake is not None and self.handshake.server_cert is not None
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        pinned = x509.load_der_x509_certificate(self.handshake.server_cert).public_bytes(serialization.Encoding.PEM)
        creds = grpc.ssl_channel_credentials(
            root_certificates=pinned, private_key=self._host_key_pem, certificate_chain=self._host_cert_pem
        )
        return grpc.secure_channel(target, creds, options=[*options, ("grpc.ssl_target_name_override", "localhost")])

    def _wait_serving(self, deadline: float) -> None:
        stub = health_pb2_grpc.HealthStub(self.channel)
        request = health_pb2.HealthCheckRequest(service="plugin")
        last = "no answer"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                message = f"health never said SERVING within {self.start_timeout} s ({last})"
                raise PluginStartError(message, self.stderr())
            try:
                status = stub.Check(request, timeout=left, wait_for_ready=True).status
            except grpc.RpcError as e:
                last = f"{e.code().name}: {e.details()}"
                if self.process is not None and self.process.poll() is not None:
                    message = f"the plugin exited with status {self.process.returncode}"
                    raise PluginStartError(message, self.stderr()) from None
                continue
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
            last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            time.sleep(0.02)

    def _read_stdio(self) -> None:
        try:
            stream = self.channel.unary_stream(
                "/plugin.GRPCStdio/StreamStdio",
                request_serializer=_ident,
                response_deserializer=_wire.decode_stdio_data,
            )(b"")
            for chunk in stream:
                with self._stdio_lock:
                    self._stdio_chunks.append(chunk)
        except (grpc.RpcError, RuntimeError, ValueError):
            pass  # the plugin stopped, or serves no stdio

    # -- stop ----------------------------------------------------------------------
    def request_shutdown(self) -> None:
        """Call plugin.GRPCController/Shutdown (the plugin answers, then stops)."""
        self.channel.unary_unary(
            "/plugin.GRPCController/Shutdown", request_serializer=_ident, response_deserializer=_ident
        )(b"", timeout=self.stop_timeout)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Send a signal to the plugin process."""
        os.kill(self.pid, sig)

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the plugin to exit and clean up; its exit status.

        Raises PluginExitError when it has not exited in time, or when
        processes of its group outlived it (both are killed first).
        """
        assert self.process is not None
        try:
            status = self.process.wait(self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            stderr = self.stderr()
            self.kill()
            raise PluginExitError(f"the plugin did not exit within {timeout or self.stop_timeout} s", stderr) from None
        self.exit_status = status
        leftovers = _group_alive(self.process.pid)
        stderr = self.stderr()
        self.kill()
        if leftovers:
            raise PluginExitError("processes of the plugin's group were still running after it exited", stderr)
        return status

    def stop(self, *, check: bool = True) -> int:
        """Stop the plugin as plugvisor does (controller Shutdown, then
        SIGTERM if that fails) and return its exit status; with check (the
        default) a status other than 0 raises PluginExitError."""
        if self.process is None or self.exit_status is not None:
            return self.exit_status or 0
        try:
            self.deactivate()
        except grpc.RpcError:
            pass  # plugvisor goes on with the stop too
        try:
            self.request_shutdown()
        except grpc.RpcError:
            if self.process.poll() is None:
                self.signal(signal.SIGTERM)
        status = self.wait()
        if check and status != 0:
            raise PluginExitError(f"the plugin exited with status {status}", self.stderr())
        return status

    def kill(self) -> None:
        """SIGKILL the plugin's whole process group and remove what start() made."""
        self._broker_out.put(None)
        if self._broker_call is not None:
            self._broker_call.cancel()
            self._broker_call = None
        if self._host_server is not None:
            self._host_server.stop(None)
            self._host_server = None
        if self._host_executor is not None:
            self._host_executor.shutdown(wait=False)
            self._host_executor = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                pass
            if self.exit_status is None and self.process.returncode is not None:
                self.exit_status = self.process.returncode
            if self.process.stdout is not None:
                self.process.stdout.close()
        if self._work_dir is not None:
            self._final_stderr = self.stderr()
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None
            self._stderr_file = None

    def __enter__(self) -> PluginHost:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if exc_type is not None:
            self.kill()  # the test failed already: do not hide that behind a stop error
            return
        self.stop()


def _drain(responses: Iterator[broker_pb.ConnInfo]) -> None:
    try:
        for _ in responses:
            pass  # the plugin listens for nothing: it announces no connections
    except grpc.RpcError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

