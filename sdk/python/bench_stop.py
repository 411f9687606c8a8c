#!/usr/bin/env python3
"""How long does a plugin take to stop? A benchmark, not a test.

Starts the hello-python example N times (default 20) under
plugvisor_plugin.testing.PluginHost (which activates it as plugvisor does)
and measures, interleaved:
  controller   OnDeactivate first (not timed), as plugvisor stops a plugin;
               then plugin.GRPCController/Shutdown sent -> process exited
  controller!  Shutdown without OnDeactivate: the SDK runs on_deactivate
               itself during the stop (the example logs through the host API)
  sigterm      SIGTERM sent -> process exited (on_deactivate during the stop)
Prints medians and minimums. Linux only (pidfd).

Usage: .venv/bin/python sdk/python/bench_stop.py [-n RUNS] [--script PATH] [--python PATH]
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import time
from pathlib import Path

from plugvisor_plugin.testing import PluginHost

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "hello-python" / "plugin.py"


def one_stop(script: Path, how: str, python: str | None) -> float:
    host = PluginHost(script, python=python).start()
    try:
        assert host.process is not None
        # A pidfd turns readable the moment the process exits (Popen.wait
        # with a timeout polls, with sleeps of up to 50 ms).
        pidfd = os.pidfd_open(host.pid)
        try:
            if how == "controller":
                host.deactivate()
            t0 = time.perf_counter()
            if how.startswith("controller"):
                host.request_shutdown()
            else:
                host.signal(signal.SIGTERM)
            if not select.select([pidfd], [], [], 30)[0]:
                raise RuntimeError("the plugin did not exit within 30 s")
            took = time.perf_counter() - t0
        finally:
            os.close(pidfd)
        status = host.wait()
        if status != 0:
            raise RuntimeError(f"exit status {status}:\n{host.stderr()}")
        return took
    finally:
        host.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--runs", type=int, default=20)
    ap.add_argument("--script", type=Path, default=EXAMPLE)
    ap.add_argument("--python", help="the plugin's interpreter (default: this one)")
    args = ap.parse_args()
    one_stop(args.script, "controller", args.python)  # warm the page cache
    results: dict[str, list[float]] = {"controller": [], "controller!": [], "sigterm": []}
    for _ in range(args.runs):
        for how, xs in results.items():
            xs.append(one_stop(args.script, how, args.python))
    for how, xs in results.items():
        print(f"{how:12} -> exit: median {statistics.median(xs) * 1000:6.1f} ms, min {min(xs) * 1000:6.1f} ms ({len(xs)} runs)")


if __name__ == "__main__":
    main()
