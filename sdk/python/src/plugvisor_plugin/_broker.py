"""go-plugin's GRPCBroker, plugin side, without multiplexing.

The host calls plugin.GRPCBroker/StartStream once and keeps the stream open
for the life of the process. When it serves something for the plugin (the
host API), it listens on a socket of its own and sends
ConnInfo{service_id, network, address} on that stream; the plugin dials
that address when it needs service `service_id`. Every ConnInfo is kept, by
id, for the process's life. dial() waits a bounded time for its id (go-plugin
waits a fixed 5 s), and with AutoMTLS connects over TLS: it presents the
plugin's own certificate (the one in its handshake) and trusts only the
host's (PLUGIN_CLIENT_CERT), server name "localhost", as go-plugin does.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Iterator, Optional

import grpc

from ._errors import BrokerTimeout
from ._proto import grpc_broker_pb2 as pb
from ._proto import grpc_broker_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from ._server import Runtime

_log = logging.getLogger("plugvisor_plugin")

SERVICE = "plugin.GRPCBroker"


class Broker(pb_grpc.GRPCBrokerServicer):
    """Serves StartStream and dials what the host announces on it."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._cond = threading.Condition()
        self._announced: dict[int, pb.ConnInfo] = {}
        self._closed = False
        self._runtime: Optional[Runtime] = None

    # -- Component --------------------------------------------------------------
    def register(self, server: grpc.Server, runtime: Runtime) -> None:
        self._runtime = runtime
        pb_grpc.add_GRPCBrokerServicer_to_server(self, server)

    def stopping(self) -> None:
        # The streams end now, so that they do not hold the drain up.
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def stopped(self) -> None:
        pass

    # -- the RPC --------------------------------------------------------------------
    def StartStream(
        self, request_iterator: Iterator[pb.ConnInfo], context: grpc.ServicerContext
    ) -> Iterator[pb.ConnInfo]:
        # Reading blocks, so it has a thread of its own; this one holds the
        # response side open (nothing to send: the plugin listens for nothing).
        reader = threading.Thread(target=self._receive, args=(request_iterator,), name="plugvisor-broker", daemon=True)
        reader.start()
        context.add_callback(self._wake)
        with self._cond:
            while not self._closed and context.is_active():
                self._cond.wait()
        yield from ()  # a generator: the (empty) response stream

    def _receive(self, request_iterator: Iterator[pb.ConnInfo]) -> None:
        try:
            for info in request_iterator:
                if info.knock.knock:
                    _log.warning("the host sent a multiplexed broker knock; this plugin does not multiplex")
                    continue
                with self._cond:
                    self._announced[info.service_id] = info
                    self._cond.notify_all()
        except grpc.RpcError:
            pass  # the stream ended
        finally:
            self._wake()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- dialing -----------------------------------------------------------------------
    def wait_for(self, service_id: int, timeout: Optional[float] = None) -> pb.ConnInfo:
        """The ConnInfo the host sent for service_id, waiting up to timeout
        (default: the broker_timeout option) for it to arrive."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        with self._cond:
            while service_id not in self._announced:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise BrokerTimeout(
                        f"the host did not announce broker connection {service_id} within {limit:g} s "
                        "(plugin.GRPCBroker/StartStream); is the host's broker running?"
                    )
                self._cond.wait(left)
            return self._announced[service_id]

    def dial(self, service_id: int, timeout: Optional[float] = None) -> grpc.Channel:
        """A channel to what the host serves on broker connection service_id."""
        info = self.wait_for(service_id, timeout)
        if info.network == "unix":
            target = "unix:" + info.address
        elif info.network == "tcp":
            target = info.address
        else:
            raise BrokerTimeout(
                f"the host announced broker connection {service_id} on {info.network!r}, not unix or tcp"
            )
        runtime = self._runtime
        identity = runtime.tls_identity if runtime is not None else None
        host_pem = runtime.host_cert_pem if runtime is not None else None
        # grpc-core would send the socket path as the :authority of a unix
        # target, which strict HTTP/2 servers (plugvisor's, on hyper) refuse.
        options = [("grpc.default_authority", "localhost")]
        if identity is None or host_pem is None:
            return grpc.insecure_channel(target, options=options)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=host_pem, private_key=identity.key_pem, certificate_chain=identity.cert_pem
        )
        options.append(("grpc.ssl_target_name_override", "localhost"))
        return grpc.secure_channel(target, credentials, options=options)
