"""The plugin side of go-plugin's gRPC protocol, on grpcio: what serve() and
run() share.

grpc is imported once the cheap checks (magic cookie, app version) passed,
so running a plugin by hand fails fast and `import plugvisor_plugin` stays
light. Before the handshake line only what it needs is loaded: grpc, the
health service, the controller and stdio (hand-written codecs, no generated
code). run()'s services (lifecycle, broker, HTTP) stand in from the start
and load on a thread right after the handshake (see _deferred).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import threading
import time

from . import _exit, _wire
from . import _handshake as hs
from ._options import resolve
from ._stdio import CLOSED, CapturedText, StdioHub, write_all

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (grpc imports it anyway, but later)
    from types import FrameType
    from typing import Any, Callable, Generator, Iterator, Mapping, Optional, Protocol, Tuple

    import grpc

    from ._deferred import DeferredServices
    from ._options import Options
    from ._plugin import Plugin
    from ._tls import ServerIdentity, TlsFrontend

    Register = Callable[[grpc.Server], None]

    class Runtime(Protocol):
        """What a Component may use of the running plugin."""

        @property
        def tls_identity(self) -> ServerIdentity | None:
            """The plugin's AutoMTLS certificate and key (None without AutoMTLS)."""

        @property
        def host_cert_pem(self) -> bytes | None:
            """The host's certificate (PLUGIN_CLIENT_CERT), None without AutoMTLS."""

        def request_stop(self, reason: str, failed: bool = False) -> None:
            """Stop the plugin gracefully, as a SIGTERM would; failed: exit with status 1."""

    class Component(Protocol):
        """A part of the plugin that run() adds beside the user's servicers."""

        def register(self, server: grpc.Server, runtime: Runtime) -> None:
            """Add services to the server."""

        def stopping(self) -> None:
            """The stop began: end long-lived streams so the drain is quick."""

        def stopped(self) -> None:
            """The server has drained; runs before on_shutdown."""


_log = logging.getLogger("plugvisor_plugin")

#: How often the host-death watcher looks at os.getppid().
HOST_WATCH_INTERVAL = 0.25
#: How long a StreamStdio call waits for output before it checks on its RPC.
_STDIO_POLL = 0.5
#: What run()'s services import, leaves first (see run_plugin_object's load).
_RUN_MODULES: tuple[str, ...] = (
    "._proto.grpc_broker_pb2",
    "._proto.grpc_broker_pb2_grpc",
    "._broker",
    "json",
    "._proto.plugvisor.v1.host_pb2",
    "._proto.plugvisor.v1.host_pb2_grpc",
    "._hostapi",
    "._proto.plugvisor.v1.lifecycle_pb2",
    "._proto.plugvisor.v1.lifecycle_pb2_grpc",
    "._lifecycle",
)
_HTTP_MODULES: tuple[str, ...] = ("._proto.plugvisor.v1.http_pb2", "._proto.plugvisor.v1.http_pb2_grpc", "._http")
#: How long a stop waits for run()'s services to finish loading (they take
#: part in it: on_deactivate, the broker's stream).
_LOAD_WAIT = 10.0


class _Stopper:
    """One-shot "please stop" from signal handlers, RPC threads or watchers.

    request() only assigns attributes and writes a byte to a pipe, so it is
    safe inside a signal handler; the main thread blocks reading that pipe.
    """

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        self.reason: Optional[str] = None
        self.hurry = False

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        try:
            os.write(self._w, b"x")
        except OSError:
            pass  # pipe full: a wake-up is already pending

    def wait(self) -> str:
        # Python runs signal handlers only in the main thread, between
        # bytecodes; a signal the kernel hands to a grpc thread does not
        # interrupt this read. signal.set_wakeup_fd (see
        # _install_signal_handlers) makes such a signal write to this pipe,
        # and the timeout is a second line of defence.
        while self.reason is None:
            ready, _, _ = select.select([self._r], [], [], 0.25)
            if ready:
                try:
                    os.read(self._r, 64)
                except (InterruptedError, BlockingIOError):
                    pass
        return self.reason

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


def run_plugin_object(plugin: Plugin, http: object, options: Mapping[str, Any]) -> None:
    """run(): serve a Plugin's lifecycle, the broker and (with http) its app."""
    from ._apps import check
    from ._plugin import Plugin

    if http is not None:
        check(http)  # a wrong http= fails at once; WSGI or ASGI is told apart later
    # A Plugin that adds no servicers of its own needs no ServiceRecorder.
    register = plugin.register if getattr(plugin.register, "__func__", None) is not Plugin.register else None

    def deferred(opts: Options, services: list[str]) -> DeferredServices:
        from . import _deferred

        def load(runtime: Runtime) -> Generator[None, None, list[Component]]:
            # On the loader thread, after the handshake (grpc is imported):
            # the modules one at a time, so that a stop that comes first
            # ends the load at the next yield, a module's import away.
            from ._apps import AsgiApp, detect

            app_kind = detect(http) if http is not None else None
            modules = _RUN_MODULES
            if app_kind is not None:
                modules += _HTTP_MODULES + (("._asgi",) if isinstance(app_kind, AsgiApp) else ("._wsgi",))
            for name in modules:
                yield
                __import__(__package__ + name if name.startswith(".") else name)

            from ._broker import Broker
            from ._lifecycle import Lifecycle

            broker = Broker(opts["broker_timeout"])
            out: list[Component] = [broker]
            app = None
            if app_kind is not None:
                from ._http import HttpComponent

                app = HttpComponent(app_kind)
                app.load_adapter()  # an ASGI app's event loop starts here
            out.append(Lifecycle(plugin, broker, services, app))
            if app is not None:
                out.append(app)
            return out

        served = [_deferred.LIFECYCLE, _deferred.BROKER] + ([_deferred.HTTP] if http is not None else [])
        return _deferred.DeferredServices(served, load)

    run_plugin(register, options, deferred)


def _program_name() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    return os.path.basename(argv0) or "plugin"


def _die(message: str) -> None:
    try:
        sys.stderr.flush()
    except Exception:
        pass
    os.write(2, message.encode("utf-8", "backslashreplace"))
    raise SystemExit(1)


def _port_is_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Same option grpc uses, so TIME_WAIT leftovers do not count as taken.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def run_plugin(
    register: Optional[Register],
    options: Mapping[str, Any],
    deferred: Optional[Callable[[Options, list[str]], DeferredServices]] = None,
) -> None:
    """Run until the host stops the plugin, then raise SystemExit.

    SystemExit(1) when the plugin cannot start. After a graceful stop,
    SystemExit(0) (1 when on_shutdown raised), with the process's quick end
    armed (see _exit). `deferred(options, services)` describes the services
    run() adds (stand-ins until they load, after the handshake), once the
    cheap checks passed; `services` is filled with the names of the
    services `register` adds.
    """
    # Remember the host before anything slow happens: if it dies during our
    # imports we must still notice that our parent changed.
    initial_ppid = os.getppid()
    opts = resolve(options)
    prog = _program_name()
    if not hs.cookie_ok(os.environ, opts["magic_cookie_key"], opts["magic_cookie_value"]):
        _die(hs.not_a_program_message(prog))
    try:
        version = hs.negotiate_app_version(opts["app_version"], os.environ.get(hs.ENV_PROTOCOL_VERSIONS))
    except hs.HandshakeError as e:
        _die(f"{prog}: cannot start: {e}\n")

    services: list[str] = []
    extra = deferred(opts, services) if deferred is not None else None
    runner = _Runner(prog, version, opts, register, extra, services, initial_ppid)
    try:
        code = runner.run()
    except hs.HandshakeError as e:
        _die(f"{prog}: cannot start: {e}\n")
    if threading.current_thread() is threading.main_thread():
        _exit.arm(code)
    raise SystemExit(code)


class _Runner:
    def __init__(
        self,
        prog: str,
        version: int,
        opts: Options,
        register: Optional[Register],
        deferred: Optional[DeferredServices],
        services: Optional[list[str]],
        initial_ppid: int,
    ) -> None:
        self.prog = prog
        self.version = version
        self.opts = opts
        self.network = opts["network"]
        self.grace = float(opts["grace"])
        self.register = register
        self.deferred = deferred
        #: A part of the plugin failed after the handshake (exit status 1).
        self.failed = False
        self.services = services
        self.initial_ppid = initial_ppid

        self.stopper = _Stopper()
        self.hub: Optional[StdioHub] = None
        self._saved_stdio: Optional[Tuple[Any, Any]] = None
        self.server: Any = None
        self.executor: Any = None
        self.health: Any = None
        self.socket_path: Optional[str] = None
        # AutoMTLS: grpc's own TLS (credentials), or a front end that
        # terminates TLS and relays to grpc (frontend, listening on
        # listener); our certificate and the host's.
        self.credentials: Any = None
        self.frontend: Optional[TlsFrontend] = None
        self.listener: Optional[socket.socket] = None
        self.identity: Optional[ServerIdentity] = None
        self.client_pem: Optional[bytes] = None
        self.own_socket_dir: Optional[str] = None
        self._shutdown_ran = False

    # -- Runtime, for components --------------------------------------------
    @property
    def tls_identity(self) -> Optional[ServerIdentity]:
        return self.identity

    @property
    def host_cert_pem(self) -> Optional[bytes]:
        return self.client_pem

    def request_stop(self, reason: str, failed: bool = False) -> None:
        if failed:
            self.failed = True
        self.stopper.request(reason)

    # -- start ------------------------------------------------------------
    def run(self) -> int:
        if self.opts["install_logging"]:
            from . import log as _logmod

            _logmod.install(self.opts["log_level"])
        if self.opts["capture_stdio"]:
            self._capture()
        try:
            # Handlers first: a stop asked for during start-up is carried out
            # (gracefully) right after the handshake.
            self._install_signal_handlers()
            client_pem = os.environ.get(hs.ENV_CLIENT_CERT, "")
            if client_pem.strip():
                self._setup_tls(client_pem)
            self._build_server()
            if self.deferred is not None:
                self.server.add_generic_rpc_handlers(self.deferred.stand_ins(self))
            if self.register is not None:
                from ._services import ServiceRecorder

                recorder = ServiceRecorder(self.server)
                self.register(recorder)
                if self.services is not None:
                    self.services.extend(recorder.services)
            network, address = self._bind()
            if self.frontend is not None:
                self.server.add_insecure_port("unix:" + self.frontend.backend_path)
            self.server.start()
            if self.frontend is not None:
                assert self.listener is not None
                self.frontend.start(self.listener)
            if self.opts["watch_host"]:
                self._start_host_watch()
            cert_der = self.identity.cert_der if self.identity is not None else None
            line = hs.format_handshake(self.version, network, address, cert_der)
            write_all(1, line.encode(), strict=True)
        except BaseException:
            self._abort_startup()
            raise
        if self.deferred is not None:
            self.deferred.start()  # while the host connects and checks health
        reason = self.stopper.wait()
        return self._shutdown(reason)

    def _capture(self) -> None:
        out, err = sys.stdout, sys.stderr
        for s in (out, err):
            try:
                if s is not None:
                    s.flush()
            except Exception:
                pass
        self._saved_stdio = (out, err)
        self.hub = StdioHub(self.opts["stdio_buffer_bytes"])
        sys.stdout = CapturedText(self.hub, _wire.STDOUT, "<stdout>", fd=1)
        sys.stderr = CapturedText(self.hub, _wire.STDERR, "<stderr>", fd=2)

    def _restore_stdio(self) -> None:
        if self._saved_stdio is None:
            return
        out, err = self._saved_stdio
        if isinstance(sys.stdout, CapturedText):
            sys.stdout.flush()
            sys.stdout = out
        if isinstance(sys.stderr, CapturedText):
            sys.stderr.flush()
            sys.stderr = err
        self._saved_stdio = None
        if self.hub is not None:
            self.hub.close()
            self.hub.flush_to_fds()

    def _abort_startup(self) -> None:
        self._restore_stdio()
        if self.server is not None:
            try:
                self.server.stop(None)
            except Exception:
                pass
        self._close_frontend()
        self._remove_socket()

    def _close_frontend(self) -> None:
        if self.frontend is not None:
            self.frontend.close()
            self.frontend = None
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def _setup_tls(self, client_pem: str) -> None:
        """go-plugin AutoMTLS: the host's certificate is the only trusted
        client; ours goes in the handshake. `cryptography` is imported here
        only, so plugins without TLS never load it."""
        try:
            from . import _tls
        except ImportError as e:
            raise hs.HandshakeError(
                f"the host asked for AutoMTLS ({hs.ENV_CLIENT_CERT} is set) and that needs the "
                f"'cryptography' package, which does not import ({e}); install it in the "
                "plugin's environment (pip install cryptography) or turn AutoMTLS off in the host"
            ) from None
        trust = _tls.load_client_cert(client_pem)
        identity = _tls.generate_server_identity()
        if trust.grpc_native:
            self.credentials = _tls.server_credentials(identity, trust.pem)
        else:
            self.frontend = _tls.TlsFrontend(identity, trust.pem, _log)
            _log.debug("AutoMTLS: the host's key needs OpenSSL; TLS is served by a front end")
        self.identity = identity
        self.client_pem = trust.pem

    def _add_port(self, address: str) -> int:
        """Listen on address ("unix:PATH" or "127.0.0.1:PORT") like grpc's
        server.add_insecure_port: the bound port (1 for a unix socket), or
        RuntimeError. With AutoMTLS the port serves TLS."""
        if self.frontend is None:
            if self.credentials is not None:
                return int(self.server.add_secure_port(address, self.credentials))
            return int(self.server.add_insecure_port(address))
        # The TLS front end listens on a socket of our own.
        if address.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = address[len("unix:"):]
        else:
            host, _, port = address.rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            target = (host, int(port))
        try:
            sock.bind(target)
            sock.listen(128)
        except OSError as e:
            sock.close()
            raise RuntimeError(f"cannot listen on {address}: {e}") from None
        self.listener = sock
        return 1 if sock.family == socket.AF_UNIX else sock.getsockname()[1]

    def _build_server(self) -> None:
        from concurrent import futures

        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        self.executor = futures.ThreadPoolExecutor(
            max_workers=self.opts["max_workers"], thread_name_prefix="plugvisor-grpc"
        )
        # so_reuseport=0: otherwise a port already in use by someone else
        # would bind "successfully" and the two servers would share it.
        self.server = grpc.server(self.executor, options=[("grpc.so_reuseport", 0)])

        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        serving = health_pb2.HealthCheckResponse.SERVING
        self.health.set("plugin", serving)
        self.health.set("", serving)

        controller = grpc.method_handlers_generic_handler(
            "plugin.GRPCController",
            {
                "Shutdown": grpc.unary_unary_rpc_method_handler(
                    self._rpc_shutdown,
                    request_deserializer=_wire.decode_empty,
                    response_serializer=_wire.encode_empty,
                )
            },
        )
        stdio = grpc.method_handlers_generic_handler(
            "plugin.GRPCStdio",
            {
                "StreamStdio": grpc.unary_stream_rpc_method_handler(
                    self._rpc_stream_stdio,
                    request_deserializer=_wire.decode_empty,
                    response_serializer=_wire.encode_stdio_data,
                )
            },
        )
        self.server.add_generic_rpc_handlers((controller, stdio))

    def _bind(self) -> Tuple[str, str]:
        want_unix = self.network == "unix" or (
            self.network == "auto" and hasattr(socket, "AF_UNIX")
        )
        if self.network == "unix" and not hasattr(socket, "AF_UNIX"):
            raise hs.HandshakeError("network='unix' was asked for but this platform has no unix sockets")
        if want_unix:
            bound = self._bind_unix()
            if bound is not None:
                return bound
        return self._bind_tcp()

    def _bind_unix(self) -> Optional[Tuple[str, str]]:
        directory = os.environ.get(hs.ENV_UNIX_SOCKET_DIR) or ""
        if not directory:
            import tempfile

            directory = tempfile.mkdtemp(prefix="plugvisor-plugin-")  # mode 0700
            self.own_socket_dir = directory
        path = hs.unix_socket_path(os.path.abspath(directory))
        if not hs.unix_path_fits(path):
            msg = (
                f"the unix socket path {path!r} is longer than the "
                f"{hs.MAX_UNIX_PATH_BYTES} bytes a socket address holds"
            )
            if self.network == "unix":
                raise hs.HandshakeError(msg + f"; set {hs.ENV_UNIX_SOCKET_DIR} to a shorter directory")
            _log.warning(msg + "; listening on tcp instead")
            self._remove_socket()
            return None
        try:
            ok = self._add_port("unix:" + path)
        except RuntimeError as e:
            raise hs.HandshakeError(f"cannot listen on unix socket {path}: {e}") from None
        if not ok:
            raise hs.HandshakeError(f"cannot listen on unix socket {path}")
        self.socket_path = path
        return "unix", path

    def _bind_tcp(self) -> Tuple[str, str]:
        rng = hs.port_range(os.environ)
        if rng is None:
            try:
                port = self._add_port("127.0.0.1:0")
            except RuntimeError as e:
                raise hs.HandshakeError(f"cannot listen on 127.0.0.1: {e}") from None
            if not port:
                raise hs.HandshakeError("cannot listen on 127.0.0.1")
            return "tcp", f"127.0.0.1:{port}"
        lo, hi = rng
        for port in hs.port_candidates(lo, hi):
            if not _port_is_free(port):
                continue
            try:
                bound = self._add_port(f"127.0.0.1:{port}")
            except RuntimeError:
                continue
            if bound == port:
                return "tcp", f"127.0.0.1:{port}"
        raise hs.HandshakeError(
            f"no free tcp port on 127.0.0.1 between {hs.ENV_MIN_PORT}={lo} and "
            f"{hs.ENV_MAX_PORT}={hi}; widen the host's port range or stop what holds those ports"
        )

    def _remove_socket(self) -> None:
        if self.socket_path:
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
            except OSError as e:
                _log.warning("could not remove the unix socket", extra={"path": self.socket_path, "error": str(e)})
            self.socket_path = None
        if self.own_socket_dir:
            import shutil

            shutil.rmtree(self.own_socket_dir, ignore_errors=True)
            self.own_socket_dir = None

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            _log.warning("serve() is not running in the main thread; SIGTERM/SIGINT are not handled")
            return

        def on_signal(signum: int, _frame: Optional[FrameType]) -> None:
            if self.stopper.reason is not None:
                # A second signal while draining: stop waiting for RPCs.
                self.stopper.hurry = True
            self.stopper.request(f"signal {signal.Signals(signum).name}")

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        # Wake the main thread even when another thread receives the signal.
        signal.set_wakeup_fd(self.stopper._w, warn_on_full_buffer=False)

    def _start_host_watch(self) -> None:
        # Why polling and not prctl(PR_SET_PDEATHSIG): the death signal fires
        # when the *thread* that forked us exits, not the host process, so a
        # host that spawns from a short-lived worker thread (tokio's blocking
        # pool, Go's runtime) would stop its plugins at random. A changed
        # parent pid means exactly "the host process is gone".
        initial = self.initial_ppid
        if initial == 1:
            return  # started by init (or the host is pid 1): nothing to watch

        def watch() -> None:
            while True:
                time.sleep(HOST_WATCH_INTERVAL)
                if os.getppid() != initial:
                    self.stopper.request("host process exited")
                    return

        threading.Thread(target=watch, name="plugvisor-host-watch", daemon=True).start()

    # -- RPCs ---------------------------------------------------------------
    def _rpc_shutdown(self, _request: _wire.Empty, context: grpc.ServicerContext) -> bytes:
        # Stop only after the response has gone out: add_callback runs when
        # the RPC has terminated.
        def trigger() -> None:
            self.stopper.request("controller Shutdown RPC")

        if not context.add_callback(trigger):
            trigger()
        return b""

    def _rpc_stream_stdio(self, _request: _wire.Empty, context: grpc.ServicerContext) -> Iterator[Tuple[int, bytes]]:
        hub = self.hub
        if hub is None:
            # capture_stdio=False: nothing will ever be sent; end when asked to.
            while context.is_active() and self.stopper.reason is None:
                time.sleep(_STDIO_POLL)
            return
        context.add_callback(hub.wake)
        while True:
            item = hub.get(_STDIO_POLL)
            if item is CLOSED:
                return
            if item is None:
                if not context.is_active():
                    return
                continue
            assert isinstance(item, tuple)
            yield item

    # -- stop -----------------------------------------------------------------
    def _shutdown(self, reason: str) -> int:
        if self._shutdown_ran:
            return 0
        self._shutdown_ran = True
        started = time.monotonic()
        _log.info("plugin is shutting down", extra={"reason": reason})
        try:
            self.health.enter_graceful_shutdown()
        except Exception:
            pass
        if self.hub is not None:
            # Output streams end once drained, so they do not hold the stop up.
            self.hub.close()
        components: tuple[Component, ...] = ()
        if self.deferred is not None and not self.deferred.abandon_unless_used():
            if not self.deferred.wait(_LOAD_WAIT):
                _log.error("run()'s services did not finish loading; stopping without them")
            components = self.deferred.components
        for component in components:
            self._guarded(component.stopping)
        done = self.server.stop(self.grace)
        deadline = time.monotonic() + self.grace + 1.0
        hurried = False
        while not done.wait(0.05):
            if self.stopper.hurry and not hurried:
                hurried = True
                self.server.stop(0)
            if time.monotonic() > deadline:
                break
        try:
            self.executor.shutdown(wait=False)
        except Exception:
            pass
        self._close_frontend()

        code = 1 if self.failed else 0
        for component in components:
            if not self._guarded(component.stopped):
                code = 1
        on_shutdown = self.opts["on_shutdown"]
        if on_shutdown is not None:
            try:
                on_shutdown()
            except Exception:
                _log.exception("on_shutdown raised; exiting with status 1")
                code = 1
        self._restore_stdio()
        self._remove_socket()
        # The stop pipe stays open: a late signal handler may still write to it.
        _log.debug(
            "plugin stopped",
            extra={"reason": reason, "seconds": round(time.monotonic() - started, 3)},
        )
        return code

    @staticmethod
    def _guarded(step: Callable[[], None]) -> bool:
        try:
            step()
            return True
        except Exception:
            _log.exception("a step of the plugin's stop failed; exiting with status 1")
            return False
