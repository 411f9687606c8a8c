#!/usr/bin/env python3
"""A go-plugin gRPC plugin written with bare grpcio, no SDK.

It does only what go-plugin's guide for plugins in other languages asks:
serve grpc.health.v1 with service "plugin" SERVING on 127.0.0.1 (tcp), print
the handshake line `1|1|tcp|127.0.0.1:PORT|grpc`, flush, and keep running.
It has no plugin.GRPCController and no stdio service.

On SIGTERM or SIGINT it stops the server and exits 0, first writing the
signal's name to the file named by $PLUGVISOR_TEST_MARKER when that is set,
so a test can see that it was stopped by a signal rather than killed.
"""

import os
import signal
import sys

# Block the stop signals before grpc starts any thread, so that every thread
# inherits the mask and the main thread alone receives them, in sigwait.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

from concurrent import futures  # noqa: E402

import grpc  # noqa: E402
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_servicer = health.HealthServicer()
    health_servicer.set("plugin", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    sys.stdout.write(f"1|1|tcp|127.0.0.1:{port}|grpc\n")
    sys.stdout.flush()

    signum = signal.sigwait(STOP_SIGNALS)
    server.stop(0).wait()
    marker = os.environ.get("PLUGVISOR_TEST_MARKER")
    if marker:
        with open(marker, "w") as f:
            f.write(signal.Signals(signum).name + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
