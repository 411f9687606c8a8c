#!/usr/bin/env python3
"""The control socket under a flood of idle connections (issue 16).

Starts `plugvisor run` on one plugin, opens --connections idle connections to
its control socket and keeps them, then times --requests `status` requests
sent over the socket, and reads the host's CPU time over --idle seconds and
its RSS. Prints one JSON object. Not part of the test suite; run it as

    bench/control_flood.py target/release/plugvisor PLUGINS_DIR
"""

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def request(path: str, command: dict) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(json.dumps(command).encode() + b"\n")
        return json.loads(s.makefile().readline())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("plugvisor")
    ap.add_argument("plugins_dir")
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--idle", type=float, default=5.0)
    args = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.connections + 256), hard))

    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "control.sock")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGVISOR_")}
        host = subprocess.Popen(
            [args.plugvisor, "run", "--json", "--no-watch", "--control-socket", sock,
             "--data-dir", os.path.join(tmp, "data"), args.plugins_dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if all(s["state"] == "Running" for s in request(sock, {"command": "status"})["statuses"]):
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit("the plugins did not come up")
                time.sleep(0.05)
            rss_before = rss_kib(host.pid)
            t = time.perf_counter()
            idle = [socket.socket(socket.AF_UNIX) for _ in range(args.connections)]
            for s in idle:
                s.connect(sock)
            open_s = time.perf_counter() - t
            times = []
            for _ in range(args.requests):
                t = time.perf_counter()
                answer = request(sock, {"command": "status"})
                times.append((time.perf_counter() - t) * 1000)
                assert answer["ok"], answer
            cpu0, w0 = cpu_seconds(host.pid), time.perf_counter()
            time.sleep(args.idle)
            cpu = (cpu_seconds(host.pid) - cpu0) / (time.perf_counter() - w0) * 100
            rss = rss_kib(host.pid)
            still_open = 0
            for s in idle:
                s.setblocking(False)
                try:
                    if s.recv(1) == b"":
                        continue
                except BlockingIOError:
                    still_open += 1
                except OSError:
                    continue
            for s in idle:
                s.close()
            print(json.dumps({
                "connections": args.connections,
                "connect_all_s": round(open_s, 3),
                "status_ms": {"median": round(statistics.median(times), 3), "max": round(max(times), 3)},
                "host_cpu_percent_idle": round(cpu, 2),
                "host_rss_kib": {"before": rss_before, "flooded": rss},
                "idle_connections_kept_by_host": still_open,
            }))
        finally:
            host.terminate()
            host.wait()


if __name__ == "__main__":
    main()
