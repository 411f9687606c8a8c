"""The plugins' own floors, with no plugin host at all: how long from spawn
until the handshake line can be read, and from SIGTERM until the process is
reaped. What neither host can go below; results.md sets them beside the rows.

    python bench/floor.py COUNT NAME=DIR:ARGV... > floor.json

Each DIR is a bundle (the working directory); ARGV is the plugin command,
split on spaces. The plugin gets the environment a go-plugin host gives it
(the Mattermost cookie, PLUGIN_PROTOCOL_VERSIONS, the port range and a
private unix socket directory). Nothing connects to it: right after the
handshake line it is sent SIGTERM.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def one(bundle, argv):
    sockets = tempfile.mkdtemp(prefix="bench-floor-")
    env = dict(os.environ)
    env.pop("PLUGVISOR_BENCH_HANDSHAKE_FILE", None)
    env.update({
        "MATTERMOST_PLUGIN": "Securely message teams, anywhere.",
        "PLUGIN_PROTOCOL_VERSIONS": "1",
        "PLUGIN_MIN_PORT": "10000",
        "PLUGIN_MAX_PORT": "25000",
        "PLUGIN_UNIX_SOCKET_DIR": sockets,
    })
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, cwd=bundle, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = p.stdout.readline()
        t1 = time.perf_counter()
        if not line.startswith(b"1|"):
            p.kill()
            p.wait()
            return None, None, f"no handshake: {line[:100]!r}"
        t2 = time.perf_counter()
        p.send_signal(signal.SIGTERM)
        p.wait()
        t3 = time.perf_counter()
        p.stdout.close()
        return (t1 - t0) * 1000, (t3 - t2) * 1000, None
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


def main():
    count = int(sys.argv[1])
    out = {}
    for spec in sys.argv[2:]:
        name, rest = spec.split("=", 1)
        bundle, cmd = rest.split(":", 1)
        argv = cmd.split(" ")
        res = {"handshake_ms": [], "sigterm_exit_ms": [], "errors": []}
        for _ in range(count):
            hs, ex, err = one(bundle, argv)
            if err:
                res["errors"].append(err)
            else:
                res["handshake_ms"].append(hs)
                res["sigterm_exit_ms"].append(ex)
        out[name] = res
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
