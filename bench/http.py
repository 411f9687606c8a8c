"""HTTP scenarios of bench/run: plugvisor's /plugins/{id}/ proxy beside the
same handler or app served directly, with one load generator for both
(`gohost load`, `gohost transfer`). Standard library only.

    python bench/http.py rps OUT_DIR BATCH SIDE KIND [options]
    python bench/http.py transfer OUT_DIR BATCH SIDE DIRECTION [options]

SIDE is plugvisor or direct. For rps, KIND is go (tests/goplugins/benchplugin:
through plugvisor, or -direct on net/http) or py (bench/plugins/pybench:
through plugvisor and the Python SDK, or bench_app:app under gunicorn). For
transfer, DIRECTION is upload or download, always through the Python plugin
(or gunicorn). Each run writes OUT_DIR/SCENARIO.KIND.HOST.BATCH.json, HOST
being plugvisor or direct: {"load": what gohost printed, "server": what
plugvisor-bench serve-http printed (plugvisor only)}.

plugvisor's side is `plugvisor-bench serve-http`: the library's router
(plugvisor::http::router) on a loopback listener, on a current-thread tokio
runtime as `plugvisor run --http` serves it, with a data directory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def wait_for_file(path: str, proc: subprocess.Popen, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"plugvisor-bench exited with status {proc.returncode} before it was ready")
        if os.path.exists(path):
            with open(path) as f:
                return f.read().strip()
        time.sleep(0.02)
    raise RuntimeError(f"plugvisor-bench was not ready after {timeout} s")


def cpu_ticks(pid: int) -> int:
    """utime + stime of pid and of its children (gunicorn's worker), in clock ticks."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is field 3 (state), [1] the ppid, [11] and [12] utime and stime.
        if int(entry) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> str:
    """SIGTERM, wait, and its stdout (SIGKILL if it does not go)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


class Server:
    """One server for one run: started, its base URL known, then stopped."""

    def __init__(self, a: argparse.Namespace, side: str, kind: str, err_path: str) -> None:
        self.a, self.side, self.kind = a, side, kind
        self.err = open(err_path, "a")
        self.proc: subprocess.Popen | None = None
        self.base = ""
        self.server_json = None

    def __enter__(self) -> Server:
        a = self.a
        if self.side == "plugvisor":
            folder = a.go_plugins if self.kind == "go" else a.py_plugins
            plugin_id = "bench-benchgo" if self.kind == "go" else "bench-pybench"
            ready = os.path.join(a.work, f"ready.{os.getpid()}")
            if os.path.exists(ready):
                os.unlink(ready)
            argv = [a.pvb, "serve-http", folder, "--ready-file", ready, "--data-dir", a.data_dir]
            if a.max_body_bytes:
                argv += ["--max-body-bytes", str(a.max_body_bytes)]
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.err, text=True)
            url = wait_for_file(ready, self.proc)
            os.unlink(ready)
            self.base = f"{url}/plugins/{plugin_id}"
        elif self.kind == "go":
            self.proc = subprocess.Popen([a.benchplugin, "-direct", "127.0.0.1:0"], stdout=subprocess.PIPE,
                                         stderr=self.err, text=True)
            line = self.proc.stdout.readline().strip()
            if not line.startswith("http://"):
                raise RuntimeError(f"benchplugin -direct said {line!r}")
            self.base = line
        else:
            port = free_port()
            argv = [a.gunicorn, "--chdir", a.py_app_dir, "--workers", "1", "--worker-class", "gthread",
                    "--threads", str(a.gunicorn_threads), "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
                    "--timeout", "300", "bench_app:app"]
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.err, text=True)
            wait_for_port(port, self.proc)
            self.base = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            out = stop(self.proc)
            if self.side == "plugvisor":
                try:
                    self.server_json = json.loads(out.strip().splitlines()[-1])
                except (ValueError, IndexError):
                    self.server_json = None
        self.err.close()


def gohost(a: argparse.Namespace, args: list[str], err_path: str) -> dict:
    with open(err_path, "a") as err:
        done = subprocess.run([a.gohost, *args], stdout=subprocess.PIPE, stderr=err, text=True, timeout=900, check=False)
    try:
        return json.loads(done.stdout)
    except ValueError:
        return {"error": f"gohost {args[0]} exited with status {done.returncode} and no JSON"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=["rps", "transfer"])
    p.add_argument("out_dir")
    p.add_argument("batch", type=int)
    p.add_argument("side", choices=["plugvisor", "direct"])
    p.add_argument("what", help="rps: go or py; transfer: upload or download")
    p.add_argument("--work", required=True, help="a scratch directory")
    p.add_argument("--pvb", required=True)
    p.add_argument("--gohost", required=True)
    p.add_argument("--benchplugin", required=True)
    p.add_argument("--gunicorn", required=True)
    p.add_argument("--gunicorn-threads", type=int, default=16)
    p.add_argument("--go-plugins", required=True, help="plugins folder with bench-benchgo")
    p.add_argument("--py-plugins", required=True, help="plugins folder with bench-pybench")
    p.add_argument("--py-app-dir", required=True, help="where bench_app.py is, for gunicorn")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--bytes", type=int, default=1 << 30, help="transfer size")
    a = p.parse_args()
    kind = a.what if a.scenario == "rps" else "py"
    a.max_body_bytes = a.bytes + (1 << 20) if a.scenario == "transfer" else 0
    name = f"{a.scenario}.{a.what}.{a.side}.{a.batch}"
    out_path = os.path.join(a.out_dir, name + ".json")
    err_path = os.path.join(a.out_dir, name + ".err")
    result: dict = {"side": a.side, "kind": kind}
    try:
        with Server(a, a.side, kind, err_path) as server:
            ticks0 = cpu_ticks(server.proc.pid) if a.side == "direct" else 0
            if a.scenario == "rps":
                result["load"] = gohost(a, ["load", "--url", f"{server.base}/small", "--concurrency",
                                            str(a.concurrency), "--duration", f"{a.seconds}s",
                                            "--warmup", f"{a.warmup}s"], err_path)
            elif a.what == "upload":
                result["load"] = gohost(a, ["transfer", "--url", f"{server.base}/upload",
                                            "--upload-bytes", str(a.bytes)], err_path)
            else:
                result["load"] = gohost(a, ["transfer", "--url", f"{server.base}/download?size={a.bytes}"],
                                        err_path)
            if a.side == "direct":
                # The direct server's CPU while it served (it serves nothing else).
                result["direct_cpu_ticks"] = cpu_ticks(server.proc.pid) - ticks0
        result["server"] = server.server_json
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        result["error"] = str(e)
    if not result.get("error") and (result.get("load") or {}).get("error"):
        result["error"] = result["load"]["error"]
    with open(out_path, "w") as f:
        json.dump(result, f)
        f.write("\n")
    if result.get("error"):
        print(f"bench/http.py {name}: {result['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
