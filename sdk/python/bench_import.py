#!/usr/bin/env python3
"""How much does the SDK cost at start-up? A benchmark, not a test.

Runs, interleaved, N times each (default 10):
  sdk   examples/plugins/hello-python/plugin.py   (serve() from plugvisor_plugin)
  raw   tests/pyplugins/raw_grpcio/plugin.py      (bare grpcio, no SDK)
and measures, for each run, spawn -> handshake line read, and SIGTERM ->
exit. Also measures the bare interpreter start and `import plugvisor_plugin`
alone. Prints medians and the sdk/raw ratio.

Usage: .venv/bin/python sdk/python/bench_import.py [-n RUNS] [--python PATH]
Both plugins run under the same interpreter (this one by default), so the
difference is the SDK's own work.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SDK_PLUGIN = ROOT / "examples" / "plugins" / "hello-python" / "plugin.py"
RAW_PLUGIN = ROOT / "tests" / "pyplugins" / "raw_grpcio" / "plugin.py"


def plugin_env(sock_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGIN_")}
    env["MATTERMOST_PLUGIN"] = "Securely message teams, anywhere."
    env["PLUGIN_PROTOCOL_VERSIONS"] = "1"
    env["PLUGIN_UNIX_SOCKET_DIR"] = sock_dir
    return env


def one_run(python: str, script: Path, env: dict) -> tuple:
    """(seconds to handshake, seconds from SIGTERM to exit)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [python, str(script)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=str(script.parent),
        start_new_session=True,
    )
    try:
        fd = p.stdout.fileno()
        buf = b""
        while b"\n" not in buf:
            ready, _, _ = select.select([fd], [], [], 60)
            if not ready:
                raise RuntimeError(f"{script}: no handshake within 60 s")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"{script}: exited before its handshake (status {p.wait()})")
            buf += chunk
        t1 = time.perf_counter()
        if not buf.startswith(b"1|"):
            raise RuntimeError(f"{script}: bad handshake {buf!r}")
        t2 = time.perf_counter()
        p.send_signal(signal.SIGTERM)
        code = p.wait(30)
        t3 = time.perf_counter()
        if code != 0:
            raise RuntimeError(f"{script}: exit status {code} after SIGTERM")
        return t1 - t0, t3 - t2
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        p.stdout.close()


def time_cmd(python: str, code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([python, "-c", code], check=True)
    return time.perf_counter() - t0


def import_only(python: str) -> float:
    out = subprocess.run(
        [python, "-c", "import time; t = time.perf_counter(); import plugvisor_plugin; print(time.perf_counter() - t)"],
        check=True, capture_output=True, text=True,
    ).stdout
    return float(out)


def ms(xs) -> str:
    return f"{statistics.median(xs) * 1000:7.1f} ms (min {min(xs) * 1000:6.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--runs", type=int, default=10)
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()
    args.python = os.path.abspath(args.python)  # plugins run with their own folder as cwd

    sock_dir = tempfile.mkdtemp(prefix="pvbench")
    try:
        run_all(args, sock_dir)
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def run_all(args, sock_dir: str) -> None:
    env = plugin_env(sock_dir)
    # One untimed run of each warms the page cache.
    one_run(args.python, SDK_PLUGIN, env)
    one_run(args.python, RAW_PLUGIN, env)

    sdk_hs, sdk_stop, raw_hs, raw_stop, bare, imp = [], [], [], [], [], []
    for _ in range(args.runs):
        a, b = one_run(args.python, SDK_PLUGIN, env)
        sdk_hs.append(a)
        sdk_stop.append(b)
        a, b = one_run(args.python, RAW_PLUGIN, env)
        raw_hs.append(a)
        raw_stop.append(b)
        bare.append(time_cmd(args.python, "pass"))
        imp.append(import_only(args.python))

    ver = subprocess.run([args.python, "-c", "import sys, grpc; print(sys.version.split()[0], grpc.__version__)"],
                         capture_output=True, text=True, check=True).stdout.split()
    print(f"python {ver[0]}, grpcio {ver[1]}, {args.runs} runs each, medians")
    print(f"  interpreter start+exit (python -c pass)   {ms(bare)}")
    print(f"  import plugvisor_plugin (in-process)      {ms(imp)}")
    print(f"  raw grpcio plugin: spawn -> handshake     {ms(raw_hs)}")
    print(f"  SDK example:       spawn -> handshake     {ms(sdk_hs)}")
    print(f"  raw grpcio plugin: SIGTERM -> exit        {ms(raw_stop)}")
    print(f"  SDK example:       SIGTERM -> exit        {ms(sdk_stop)}")
    ratio = statistics.median(sdk_hs) / statistics.median(raw_hs)
    print(f"  handshake ratio SDK / raw: {ratio:.2f}")


if __name__ == "__main__":
    main()
