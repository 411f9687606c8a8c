"""Turns bench/run's JSON outputs into bench/results.md (printed on stdout).

    python bench/report.py target/bench/out > bench/results.md

Standard library only. Each input file is SCENARIO.PLUGIN.HOST.BATCH.json as
written by `gohost` (tools/gohost) or `plugvisor-bench` (bench/rust).
"""

import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
from collections import defaultdict

PLUGIN_NAMES = {
    "go": "Go (go-plugin)",
    "raw": "Python, grpcio, no SDK",
    "sdk": "Python, plugvisor SDK",
}
PYTHON_PLUGINS = ("raw", "sdk")
RSS_TARGET_KB = 64 * 1024  # 64 MiB, at the idle size (1000 Go plugins)
CPU_TARGET_PERCENT = 1.0


# --- statistics --------------------------------------------------------------
def pct(values, p):
    """Nearest-rank percentile, as gohost and plugvisor-bench compute it."""
    v = sorted(values)
    if not v:
        return None
    i = min(max(math.ceil(p * len(v)), 1), len(v)) - 1
    return v[i]


def median(values):
    v = sorted(values)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def fmt_ms(x):
    if x is None:
        return "n/a"
    if x >= 1000:
        return f"{x / 1000:.2f} s"
    if x >= 100:
        return f"{x:.0f} ms"
    if x >= 10:
        return f"{x:.1f} ms"
    if x >= 1:
        return f"{x:.2f} ms"
    return f"{x * 1000:.0f} µs"


def duration_ms(text):
    """A Rust Duration's Debug text ("7.1ms", "850.2µs", "1.2s") in ms."""
    m = re.fullmatch(r"([0-9.]+)(ns|µs|us|ms|s)", (text or "").strip())
    if not m:
        return None
    scale = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1000.0}[m.group(2)]
    return float(m.group(1)) * scale


def cell(values):
    """median (p95) of a list of ms."""
    if not values:
        return "n/a"
    return f"{fmt_ms(median(values))} (p95 {fmt_ms(pct(values, 0.95))})"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    if r is None:
        return "n/a"
    if r < 0.01:
        return f"{r:.4f}×"
    if r < 0.1:
        return f"{r:.3f}×"
    return f"{r:.2f}×"


def verdict(ok):
    if ok is None:
        return "n/a"
    return "**met**" if ok else "**missed**"


# --- loading -----------------------------------------------------------------
def load(out_dir):
    data = defaultdict(list)  # (scenario, plugin, host) -> [json objects]
    problems = []
    for name in sorted(os.listdir(out_dir)):
        m = re.fullmatch(r"([a-z]+)\.([a-z0-9-]+)\.(gohost|plugvisor|direct)\.(\d+)\.json", name)
        if not m:
            continue
        path = os.path.join(out_dir, name)
        try:
            with open(path) as f:
                text = f.read().strip()
            obj = json.loads(text) if text else None
        except ValueError as e:
            obj = None
            problems.append(f"{name}: not JSON ({e})")
        if obj is None:
            err = path[:-5] + ".err"
            tail = ""
            if os.path.exists(err):
                with open(err, errors="replace") as f:
                    tail = f.read()[-300:].strip().replace("\n", " ")
            problems.append(f"{name}: no result. {tail}")
            continue
        data[(m.group(1), m.group(2), m.group(3))].append(obj)
    return data, problems


def handshakes(out_dir, plugin):
    """pid -> [unix ns] from the file the plugins append to."""
    found = defaultdict(list)
    path = os.path.join(out_dir, f"start.{plugin}.handshakes")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                    found[int(parts[0])].append(int(parts[1]))
    return found


def runs_of(objs, key="runs"):
    out = []
    for o in objs:
        out.extend(o.get(key) or [])
    return out


# --- machine -----------------------------------------------------------------
def command_version(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - reported as is
        return f"unavailable ({e})"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_describe():
    root = repo_root()
    head = command_version(["git", "-C", root, "rev-parse", "--short", "HEAD"])
    try:
        # results.md itself is being written (bench/run redirects into it).
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no",
                                "--", ".", ":!bench/results.md"],
                               capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001
        dirty = ""
    return head + (" with uncommitted changes" if dirty else "")


# --- scenarios 6-12: hooks, host API, HTTP (issues 12-14) ----------------------
V1_NAMES = {
    "sdkgo": "Go SDK test plugin (tests/goplugins/sdkplugin)",
    "benchgo": "Go SDK bench plugin (tests/goplugins/benchplugin)",
    "pybench": "Python SDK bench plugin (bench/plugins/pybench)",
    "sdk": "Python SDK example (hello-python)",
    "go": "Go, plain go-plugin, no hooks (tests/goplugins/healthy)",
}
HOOK_TARGET = 1.2
KV_SET_TARGET_MS = {"benchgo": 1.0, "pybench": 2.0}
FANOUT_TARGET = 3.0
HTTP_P50_TARGET = 1.5
TRANSFER_RSS_TARGET_KB = 64 * 1024
SDK_STOP_TARGET_MS = 15.0


def stat_of(objs, key, field="median"):
    """Median over runs of one summary field (each run's JSON has `key` as a stats object)."""
    vals = [((o.get(key) or {}).get(field)) for o in objs if (o.get(key) or {}).get("n")]
    return median([v for v in vals if v is not None])


def p50_p99(objs, key):
    return stat_of(objs, key, "median"), stat_of(objs, key, "p99")


def us_per(ticks, n):
    """CPU µs per request from clock ticks (USER_HZ = 100)."""
    if ticks is None or not n:
        return None
    return ticks * 10_000.0 / n


def fmt_us(x):
    return "n/a" if x is None else f"{x:.0f} µs"


def fmt_rate(x):
    return "n/a" if x is None else f"{x:,.0f}/s"


def fmt_mib(kb):
    return "n/a" if kb is None else f"{kb / 1024:.1f} MiB"


def issue_sections(get, data, run, notes):
    """Rows of the second table, their misses explained, and context lines."""
    rows = []  # (section, row, plugin, peer, peer_value, pv_value, ratio, target, verdict)
    why = []
    ctx = []

    def row(sec, name, plugin, peer, pv_text, peer_text, r, target="", ok=None):
        rows.append((sec, name, plugin, peer, peer_text, pv_text, fmt_ratio(r), target,
                     verdict(ok) if target else ""))

    def failed(scenario, plugin, host):
        objs = get(scenario, plugin, host)
        bad = [o.get("error") for o in objs if o.get("error")]
        if bad:
            notes.append(f"{scenario}, {V1_NAMES.get(plugin, plugin)}, {host}: {len(bad)} run(s) failed: "
                         f"{str(bad[0])[:200]}")
        return [o for o in objs if not o.get("error")]

    # 6. hooks
    for plugin in ("sdkgo", "pybench"):
        g, p = failed("hooks", plugin, "gohost"), failed("hooks", plugin, "plugvisor")
        gh, ph = p50_p99(g, "hook_ms"), p50_p99(p, "hook_ms")
        gc, pc = p50_p99(g, "health_ms"), p50_p99(p, "health_ms")
        ps = p50_p99(p, "set_configuration_ms")
        n = sum((o.get("hook_ms") or {}).get("n", 0) for o in p)
        row("6", f"OnConfigurationChange p50 ({n} calls), the hook alone", plugin, "go-plugin host (gohost hooks)",
            fmt_ms(ph[0]), fmt_ms(gh[0]), ratio(ph[0], gh[0]))
        row("6", "OnConfigurationChange p99", plugin, "go-plugin host", fmt_ms(ph[1]), fmt_ms(gh[1]), ratio(ph[1], gh[1]))
        row("6", "health check on the same connection, p50 / p99", plugin, "go-plugin host",
            f"{fmt_ms(pc[0])} / {fmt_ms(pc[1])}", f"{fmt_ms(gc[0])} / {fmt_ms(gc[1])}", ratio(pc[0], gc[0]))
        r = ratio(ph[0], pc[0])
        ok = None if r is None else r <= HOOK_TARGET
        row("6", "hook p50 ÷ health check p50, same plugin and connection", plugin,
            "plugvisor's own health check", fmt_ms(ph[0]), fmt_ms(pc[0]), r, f"≤ {HOOK_TARGET}×", ok)
        row("6", "(context) hook p99 ÷ health check p99", plugin, "plugvisor's own health check",
            fmt_ms(ph[1]), fmt_ms(pc[1]), ratio(ph[1], pc[1]))
        if ok is False:
            gr = ratio(gh[0], gc[0])
            why.append(
                f"**hook ÷ health check, {V1_NAMES[plugin]}** ({fmt_ratio(r)}): plugvisor's hook alone takes "
                f"{fmt_ms(ph[0])} against {fmt_ms(pc[0])} for a health check on the same connection. "
                f"go-plugin's host sees the same on this plugin: {fmt_ms(gh[0])} against {fmt_ms(gc[0])} "
                f"({fmt_ratio(gr)}), so the difference is the plugin's side of the hook (the SDK's handler and "
                "its JSON decode), not the host's.")
        row("6", "set_configuration p50 / p99: check, hook, durable store", plugin, "go-plugin host's hook (no store)",
            f"{fmt_ms(ps[0])} / {fmt_ms(ps[1])}", f"{fmt_ms(gh[0])} / {fmt_ms(gh[1])}", ratio(ps[0], gh[0]))

    # 7. host API
    fs = [o for o in get("fsync", "disk", "plugvisor")]
    fsync = p50_p99(fs, "fsync_ms")
    fdatasync = p50_p99(fs, "fdatasync_ms")
    for plugin in ("benchgo", "pybench"):
        g, p = failed("hostapi", plugin, "gohost"), failed("hostapi", plugin, "plugvisor")
        m = failed("hostapimem", plugin, "plugvisor")
        n = sum((o.get("set_ms") or {}).get("n", 0) for o in p)
        for op in ("get", "set"):
            gv, pv, mv = p50_p99(g, f"{op}_ms"), p50_p99(p, f"{op}_ms"), p50_p99(m, f"{op}_ms")
            target = KV_SET_TARGET_MS[plugin] if op == "set" else None
            ok = None if target is None or pv[0] is None else pv[0] <= target
            row("7", f"kv.{op} p50, durable ({n} calls, timed in the plugin)", plugin,
                "go-plugin host, broker, in-memory map", fmt_ms(pv[0]), fmt_ms(gv[0]), ratio(pv[0], gv[0]),
                f"≤ {target:g} ms" if target else "", ok)
            row("7", f"kv.{op} p99, durable", plugin, "go-plugin host, in-memory map", fmt_ms(pv[1]), fmt_ms(gv[1]),
                ratio(pv[1], gv[1]))
            row("7", f"(context) kv.{op} p50 / p99, no data directory (SQLite in memory)", plugin,
                "go-plugin host, in-memory map", f"{fmt_ms(mv[0])} / {fmt_ms(mv[1])}",
                f"{fmt_ms(gv[0])} / {fmt_ms(gv[1])}", ratio(mv[0], gv[0]))
            if op == "set":
                row("7", "kv.set p50, durable, beside a bare fsync on the same disk", plugin,
                    "4 KiB pwrite + fsync, data directory's disk", fmt_ms(pv[0]), fmt_ms(fsync[0]), ratio(pv[0], fsync[0]))
                if ok is False:
                    why.append(
                        f"**durable kv.set, {V1_NAMES[plugin]}** ({fmt_ms(pv[0])} p50, target {target:g} ms): "
                        f"without a data directory the same set takes {fmt_ms(mv[0])}, so the disk adds "
                        f"{fmt_ms(None if pv[0] is None or mv[0] is None else pv[0] - mv[0])}; a bare fsync on this "
                        f"disk takes {fmt_ms(fsync[0])} (p99 {fmt_ms(fsync[1])}), fdatasync {fmt_ms(fdatasync[0])}.")
    ctx.append(f"bare fsync on the data directory's disk ({sum((o.get('fsync_ms') or {}).get('n', 0) for o in fs)} "
               f"runs of a 4 KiB pwrite + sync): fsync p50 {fmt_ms(fsync[0])}, p99 {fmt_ms(fsync[1])}; fdatasync "
               f"p50 {fmt_ms(fdatasync[0])}, p99 {fmt_ms(fdatasync[1])}.")

    # 8. activate -> Running
    for plugin in ("sdkgo", "sdk", "go"):
        g = [r for r in runs_of(failed("activate", plugin, "gohost")) if not r.get("error")]
        p = [r for r in runs_of(get("activate", plugin, "plugvisor")) if not r.get("error")]
        gr, pr = [r["running_ms"] for r in g], [r["healthy_ms"] for r in p]
        row("8", "activate → Running, OnActivate included", plugin,
            "go-plugin host: start, Ping, Dispense, Implemented (+ broker, OnActivate)", cell(pr), cell(gr),
            ratio(median(pr), median(gr)))
        ga = [r["activate_ms"] for r in g]
        pa = [(r.get("implemented_ms") or 0) + (r.get("on_activate_ms") or 0) for r in p
              if r.get("implemented_ms") is not None]
        row("8", "(context) of which Implemented (+ host API, OnActivate)", plugin, "go-plugin host",
            cell(pa), cell(ga), ratio(median(pa), median(ga)))

    # 9. fan-out
    for key in sorted({k[1] for k in data if k[0] == "fanout"}):
        g, p = failed("fanout", key, "gohost"), failed("fanout", key, "plugvisor")
        n = key.split("-")[1]
        each, one = p50_p99(p, "call_each_ms"), p50_p99(p, "one_ms")
        r = ratio(each[0], one[0])
        ok = None if r is None else r <= FANOUT_TARGET
        row("9", f"OnConfigurationChange on {n} plugins at once (call_each), p50", "", "the same hook on one plugin",
            fmt_ms(each[0]), fmt_ms(one[0]), r, f"≤ {FANOUT_TARGET:g}×", ok)
        gc, gt, go1 = p50_p99(g, "concurrent_ms"), p50_p99(g, "in_turn_ms"), p50_p99(g, "one_ms")
        pt = p50_p99(p, "in_turn_ms")
        row("9", f"{n} at once, p50", "", "go-plugin host, a goroutine a plugin", fmt_ms(each[0]), fmt_ms(gc[0]),
            ratio(each[0], gc[0]))
        row("9", f"{n} in turn (Mattermost's RunMultiPluginHook), p50", "", "go-plugin host, in turn",
            fmt_ms(pt[0]), fmt_ms(gt[0]), ratio(pt[0], gt[0]))
        row("9", "one plugin, p50", "", "go-plugin host", fmt_ms(one[0]), fmt_ms(go1[0]), ratio(one[0], go1[0]))
        sa, so = p50_p99(p, "set_configuration_all_ms"), p50_p99(p, "set_configuration_one_ms")
        row("9", f"set_configuration on {n} plugins at once (durable), p50", "", "set_configuration on one",
            fmt_ms(sa[0]), fmt_ms(so[0]), ratio(sa[0], so[0]))
        cpu = [o.get("call_each_cpu") or {} for o in p]
        rounds = median([o.get("rounds") for o in p])
        host_cpu = median([c.get("host_cpu_ms") for c in cpu if c.get("wall_ms")])
        plug_cpu = median([c.get("plugins_cpu_ms") for c in cpu if c.get("wall_ms")])
        cores = median([c.get("cores") for c in cpu if c.get("cores")]) or 1
        if ok is False and rounds and host_cpu is not None and plug_cpu is not None:
            floor_ms = (host_cpu + plug_cpu) / rounds / cores
            why.append(
                f"**one hook on {n} plugins** ({fmt_ms(each[0])} against {fmt_ms(one[0])} for one, "
                f"{fmt_ratio(r)}): a round costs {fmt_ms(host_cpu / rounds)} of plugvisor's CPU and "
                f"{fmt_ms(plug_cpu / rounds)} of the plugins' ({fmt_us(host_cpu / rounds / int(n) * 1000)} and "
                f"{fmt_us(plug_cpu / rounds / int(n) * 1000)} a call, /proc/PID/stat over the call_each rounds), "
                f"which {cores:.0f} cores cannot do in less than {fmt_ms(floor_ms)}: {fmt_ratio(ratio(floor_ms, one[0]))} "
                f"of one call before any waiting. go-plugin's host, a goroutine a plugin, takes {fmt_ms(gc[0])}.")

    # 10. HTTP
    for plugin in ("benchgo", "pybench"):
        g, p = failed("httphook", plugin, "gohost"), failed("httphook", plugin, "plugvisor")
        gv, pv = p50_p99(g, "call_ms"), p50_p99(p, "call_ms")
        row("10", "HTTP hook alone, one call at a time, p50 / p99 (plugvisor.v1.Http on the plugin's connection)",
            plugin, "go-plugin host (gohost httphook)", f"{fmt_ms(pv[0])} / {fmt_ms(pv[1])}",
            f"{fmt_ms(gv[0])} / {fmt_ms(gv[1])}", ratio(pv[0], gv[0]))
    conc = run.get("http_concurrency")
    rps = {}
    for label in ("go", "py"):
        for side in ("plugvisor", "direct"):
            objs = [o for o in get("rps", label, side) if not o.get("error") and o.get("load")]
            for o in get("rps", label, side):
                if o.get("error"):
                    notes.append(f"rps {label} {side}: {o['error'][:200]}")
            loads = [o["load"] for o in objs]
            reqs = [l.get("requests", 0) + l.get("warmup_requests", 0) for l in loads]
            cpu_host = median([us_per((o.get("server") or {}).get("cpu_ticks"), n) for o, n in zip(objs, reqs)
                               if o.get("server")])
            cpu_plugin = median([us_per((o.get("server") or {}).get("plugins_cpu_ticks"), n)
                                 for o, n in zip(objs, reqs) if o.get("server")])
            cpu_direct = median([us_per(o.get("direct_cpu_ticks"), n) for o, n in zip(objs, reqs)
                                 if o.get("direct_cpu_ticks") is not None])
            cpu_load = median([l["cpu_ms"] * 1000.0 / l["requests"] for l in loads if l.get("requests")])
            rps[(label, side)] = {
                "rps": median([l.get("rps") for l in loads]),
                "p50": median([l["latency_ms"]["median"] for l in loads if l.get("latency_ms", {}).get("n")]),
                "p99": median([l["latency_ms"]["p99"] for l in loads if l.get("latency_ms", {}).get("n")]),
                "cpu_host": cpu_host, "cpu_plugin": cpu_plugin, "cpu_direct": cpu_direct, "cpu_load": cpu_load,
                "runs": len(objs),
            }
    for label, name, direct in (("go", "benchgo", "net/http serving the same handler"),
                                ("py", "pybench", "gunicorn (1 gthread worker) serving the same app")):
        pv, dv = rps[(label, "plugvisor")], rps[(label, "direct")]
        row("10", f"GET /small, {conc} connections: requests per second ({pv['runs']} runs of "
                  f"{run.get('http_seconds')} s)", name, direct, fmt_rate(pv["rps"]), fmt_rate(dv["rps"]),
            ratio(pv["rps"], dv["rps"]))
        r = ratio(pv["p50"], dv["p50"])
        is_target = label == "go"
        ok = None if not is_target or r is None else r <= HTTP_P50_TARGET
        row("10", "GET /small p50", name, direct, fmt_ms(pv["p50"]), fmt_ms(dv["p50"]), r,
            f"≤ {HTTP_P50_TARGET}×" if is_target else "", ok)
        row("10", "GET /small p99", name, direct, fmt_ms(pv["p99"]), fmt_ms(dv["p99"]), ratio(pv["p99"], dv["p99"]))
        row("10", "(context) CPU per request: host / plugin (direct: the server) / load generator", name, direct,
            f"{fmt_us(pv['cpu_host'])} / {fmt_us(pv['cpu_plugin'])} / {fmt_us(pv['cpu_load'])}",
            f"— / {fmt_us(dv['cpu_direct'])} / {fmt_us(dv['cpu_load'])}",
            ratio(None if pv["cpu_host"] is None else pv["cpu_host"] + (pv["cpu_plugin"] or 0), dv["cpu_direct"]))
        hook = p50_p99(get("httphook", name, "plugvisor"), "call_ms")
        if ok is False:
            why.append(
                f"**GET p50 through plugvisor to the Go plugin** ({fmt_ms(pv['p50'])} against {fmt_ms(dv['p50'])} "
                f"served directly, {fmt_ratio(r)}, at {conc} connections): each request costs "
                f"{fmt_us(pv['cpu_host'])} of plugvisor's CPU (HTTP/1.1 in, a gRPC stream out) and "
                f"{fmt_us(pv['cpu_plugin'])} of the plugin's (gRPC in, the SDK, the handler), against "
                f"{fmt_us(dv['cpu_direct'])} for net/http alone, with the load generator's "
                f"{fmt_us(pv['cpu_load'])} on the same 2 cores: the CPU a request needs is "
                f"{fmt_ratio(ratio((pv['cpu_host'] or 0) + (pv['cpu_plugin'] or 0) + (pv['cpu_load'] or 0), (dv['cpu_direct'] or 0) + (dv['cpu_load'] or 0)))} "
                f"of the direct path's, and at this concurrency latency follows CPU. One call at a time, the "
                f"plugin's HTTP hook alone (no HTTP server in front) already takes {fmt_ms(hook[0])}.")

    # 11. transfers
    tb = run.get("transfer_bytes") or 0
    for direction in ("upload", "download"):
        p = [o for o in get("transfer", direction, "plugvisor") if not o.get("error")]
        d = [o for o in get("transfer", direction, "direct") if not o.get("error")]
        for side, objs in (("plugvisor", get("transfer", direction, "plugvisor")), ("direct", get("transfer", direction, "direct"))):
            for o in objs:
                if o.get("error"):
                    notes.append(f"transfer {direction} {side}: {o['error'][:200]}")
        if not p and not d:
            continue
        pt = median([o["load"]["mib_per_s"] for o in p])
        dt = median([o["load"]["mib_per_s"] for o in d])
        size = f"{tb / (1 << 30):.0f} GiB" if tb >= 1 << 30 else f"{tb / (1 << 20):.0f} MiB"
        row("11", f"{size} {direction} through the Python plugin: throughput", "pybench",
            "gunicorn serving the same app", "n/a" if pt is None else f"{pt:.0f} MiB/s",
            "n/a" if dt is None else f"{dt:.0f} MiB/s", ratio(pt, dt))
        hwm = median([(o.get("server") or {}).get("hwm_kb") for o in p])
        ready = median([(o.get("server") or {}).get("hwm_ready_kb") for o in p])
        plug = median([max([x.get("hwm_kb") or 0 for x in (o.get("server") or {}).get("plugins", [])] or [0]) for o in p])
        ok = None if hwm is None else hwm < TRANSFER_RSS_TARGET_KB
        row("11", f"{size} {direction}: host peak RSS (VmHWM over its whole life)", "pybench", "—",
            fmt_mib(hwm), "—", None, "< 64 MiB", ok)
        ctx.append(f"{size} {direction} through plugvisor: the host's VmHWM was {fmt_mib(ready)} once the plugin was "
                   f"Running and {fmt_mib(hwm)} after the transfer; the Python plugin's own VmHWM "
                   f"{fmt_mib(plug)}.")
        if ok is False:
            why.append(f"**host RSS during the {direction}** ({fmt_mib(hwm)}): {fmt_mib(ready)} before it.")

    # 12. /metrics
    for key in sorted({k[1] for k in data if k[0] == "scale" and k[1].startswith("go-")},
                      key=lambda s: int(s.split("-")[1])):
        objs = [o for o in get("scale", key, "plugvisor") if o.get("metrics")]
        if not objs:
            continue
        ms_ = [o["metrics"] for o in objs]
        n = key.split("-")[1]
        size = median([m.get("body_bytes") for m in ms_])
        lines = median([m.get("lines") for m in ms_])
        scrape = median([m["scrape_ms"]["median"] for m in ms_])
        text = median([m["metrics_text_ms"]["median"] for m in ms_])
        row("12", f"/metrics scrape with {n} plugins: time (connect to last byte), size", "", "—",
            f"{fmt_ms(scrape)}, {size / 1024:.0f} KiB ({lines:.0f} lines)", "—", None)
        ctx.append(f"/metrics with {n} plugins: {fmt_ms(scrape)} a scrape over HTTP, of which "
                   f"`Environment::metrics()` (the text) {fmt_ms(text)}; {size:.0f} bytes, "
                   f"{size / int(n):.0f} a plugin.")
    return rows, why, ctx


def sandbox_section(w, get):
    """Scenario 12: plugvisor's start -> healthy plain, sandboxed and under --tls auto, side by side."""
    variants = (("startplain", "plain (--tls off)"), ("startsandbox", "--sandbox (--tls off)"),
                ("starttls", "--tls auto (the default)"))
    found = {(v, plugin): [r["healthy_ms"] for r in runs_of(get(v, plugin, "plugvisor")) if not r.get("error")]
             for v, _ in variants for plugin in ("go", "sdk")}
    if not any(found.values()):
        return
    w("\n## Sandbox and TLS (issue 17)\n\n")
    w("Start -> healthy (activate until SERVING) in plugvisor alone, in three variants that take turns batch by "
      "batch on the same plugin: plain, sandboxed with Landlock (the ruleset made by the host, no_new_privs and "
      "landlock_restrict_self in the child before its exec), and with AutoMTLS offered (`--tls auto`, the "
      "default since issue 17: the plugin answers with its certificate and every call is TLS). The other rows "
      "of this file run plugvisor with `--tls off`, as go-plugin's host runs without AutoMTLS. Ratios are "
      "against plain.\n\n")
    w("| # | variant | plugin | start -> healthy | / plain |\n|---|---|---|---|---|\n")
    for plugin in ("go", "sdk"):
        plain = median(found[("startplain", plugin)])
        for v, label in variants:
            values = found[(v, plugin)]
            r = "" if v == "startplain" else fmt_ratio(ratio(median(values), plain))
            w(f"| 12 | {label} | {PLUGIN_NAMES[plugin]} | {cell(values)} | {r} |\n")


def zygote_section(w, get, keys):
    """Scenario 13: the Python SDK plugin forked from its venv's zygote, beside go-plugin execing it."""
    def healthy(scenario, plugin, host):
        return [r["healthy_ms"] for r in runs_of(get(scenario, plugin, host)) if not r.get("error")]

    forked, go = healthy("zygstart", "sdk", "plugvisor"), healthy("zygstart", "sdk", "gohost")
    if not forked and not go:
        return
    # Each plugvisor-bench process's first start is the cold one: its own row.
    warm = [v for o in get("zygstart", "sdk", "plugvisor") for v in
            [r["healthy_ms"] for r in (o.get("runs") or [])[1:] if not r.get("error")]]
    exec_d = healthy("zygstart", "sdk-exec", "plugvisor")
    cold = healthy("zygcold", "sdk", "plugvisor")
    crash_p = [r["recover_ms"] for r in runs_of(get("zygcrash", "sdk", "plugvisor")) if not r.get("error")]
    crash_g = [r["recover_ms"] for r in runs_of(get("zygcrash", "sdk", "gohost")) if not r.get("error")]
    w("\n## Python plugins forked from a zygote (issue 15)\n\n")
    w("The Python SDK plugin (examples/plugins/hello-python) forked from its venv's zygote (plugvisor's default: "
      "one warm interpreter per venv that has imported grpcio, the health service and the SDK), beside "
      "go-plugin's host execing the same plugin, in the same run, batch by batch. plugvisor's exec'd start "
      "(`--no-zygote`) is shown for comparison. Targets are the issue's.\n\n")
    w("| # | what | go-plugin (exec) | plugvisor | ratio | target | verdict |\n|---|---|---|---|---|---|---|\n")

    def row(what, g, p, target, limit):
        r = ratio(median(p), median(g))
        ok = None if r is None else r <= limit
        w(f"| 13 | {what} | {cell(g)} | {cell(p)} | {fmt_ratio(r)} | {target} | {verdict(ok)} |\n")

    row("start → healthy, forked (warm zygote)", go, warm, "≤ 0.3×", 0.3)
    w(f"| 13 | start → healthy, first start with the zygote cold | {cell(go)} | {cell(cold)} | "
      f"{fmt_ratio(ratio(median(cold), median(go)))} | | |\n")
    w(f"| 13 | start → healthy, plugvisor exec'ing (`--no-zygote`) | {cell(go)} | {cell(exec_d)} | "
      f"{fmt_ratio(ratio(median(exec_d), median(go)))} | | |\n")
    row("crash → healthy, forked", crash_g, crash_p, "≤ 0.3×", 0.3)
    for key in keys:
        if not key.startswith("sdk-"):
            continue
        g = [o.get("all_ready_ms") for o in get("zygscale", key, "gohost") if o.get("all_ready_ms")]
        p = [o.get("all_ready_ms") for o in get("zygscale", key, "plugvisor")
             if o.get("all_ready_ms") and not o.get("failures")]
        r = ratio(median(p), median(g))
        ok = None if r is None else r <= 0.3
        w(f"| 13 | {key.split('-')[1]} SDK plugins started at once, all healthy | {fmt_ms(median(g))} | "
          f"{fmt_ms(median(p))} | {fmt_ratio(r)} | ≤ 0.3× | {verdict(ok)} |\n")
    pss = {}
    for how in ("fork", "exec"):
        objs = [o for o in get("zygpss", f"sdk-{how}", "plugvisor") if not o.get("failures")]
        pss[how] = median([o.get("plugins_pss_kb", 0) + o.get("zygotes_pss_kb", 0) for o in objs])
        count = median([o.get("count") for o in objs])
    if pss["fork"] is not None and pss["exec"] is not None:
        r = ratio(pss["fork"], pss["exec"])
        ok = r <= 0.5
        w(f"| 13 | total PSS of {int(count)} SDK plugins (plugins + zygote), forked against exec'd | "
          f"{pss['exec'] / 1024:.1f} MiB exec'd | {pss['fork'] / 1024:.1f} MiB forked | {fmt_ratio(r)} | ≤ 0.5× | "
          f"{verdict(ok)} |\n")


def previous_rows(path):
    """(section, row, plugin) -> (plugvisor cell, ratio cell) from an earlier results.md's tables."""
    found = {}
    if not os.path.exists(path):
        return found
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 8 and cells[0].isdigit():
                found[(cells[0], cells[1], cells[2])] = (cells[4], cells[5])
    return found


def first_number(text):
    """The leading number of a cell in ms (or as it is for %, MiB, ×), None if none."""
    m = re.match(r"\s*([0-9.,]+)\s*(µs|ms|s|MiB|%|/s)?", text or "")
    if not m:
        return None
    x = float(m.group(1).replace(",", ""))
    return {"µs": x / 1000, "s": x * 1000}.get(m.group(2), x)


# --- the report --------------------------------------------------------------
def main(out_dir):
    data, problems = load(out_dir)
    with open(os.path.join(out_dir, "run.json")) as f:
        run = json.load(f)
    root = repo_root()
    split = {}  # (plugin, host) -> ([handshake -> connected], [connected -> healthy])
    rows = []  # (section, row, plugin, go_cell, pv_cell, ratio_text, target, verdict)
    why = []  # explanations of missed targets
    findings = []  # other things the numbers show
    notes = []
    own_start = {}  # plugin -> plugvisor-measured spawn->handshake median

    def get(scenario, plugin, host):
        return data.get((scenario, plugin, host), [])

    floor = {}  # plugin -> {"handshake_ms": [...], "sigterm_exit_ms": [...], "errors": [...]}
    for name in sorted(os.listdir(out_dir)):
        if not re.fullmatch(r"floor\.[a-z]+\.\d+\.json", name):
            continue
        try:
            with open(os.path.join(out_dir, name)) as f:
                part = json.load(f)
        except (OSError, ValueError) as e:
            problems.append(f"{name}: {e}")
            continue
        for plugin, res in part.items():
            merged = floor.setdefault(plugin, {"handshake_ms": [], "sigterm_exit_ms": [], "errors": []})
            for key in merged:
                merged[key].extend(res.get(key, []))
    for plugin, res in floor.items():
        if res.get("errors"):
            notes.append(f"floor, {PLUGIN_NAMES.get(plugin, plugin)}: {len(res['errors'])} run(s) failed: {res['errors'][0]}")
    floor_hs = {k: median(v.get("handshake_ms", [])) for k, v in floor.items()}
    floor_exit = {k: median(v.get("sigterm_exit_ms", [])) for k, v in floor.items()}
    warm = {}
    for k in PLUGIN_NAMES:
        for host, scen in (("gohost", "ping"), ("plugvisor", "ping"), ("plugvisor-mt", "pingmt")):
            objs = get(scen, k, host.split("-")[0])
            st = [o.get("ping_ms") or {} for o in objs if (o.get("ping_ms") or {}).get("n")]
            warm[(k, host)] = (median([x["median"] for x in st]), median([x["p99"] for x in st]))
    context = []  # rows of the second table

    # 1. start -> healthy ----------------------------------------------------
    for plugin in PLUGIN_NAMES:
        hs = handshakes(out_dir, plugin)
        per_host = {}
        for host in ("gohost", "plugvisor"):
            runs = [r for r in runs_of(get("start", plugin, host)) if not r.get("error")]
            failed = len(runs_of(get("start", plugin, host))) - len(runs)
            if failed:
                notes.append(f"start, {PLUGIN_NAMES[plugin]}, {host}: {failed} run(s) failed and are left out.")
            healthy = [r["healthy_ms"] for r in runs]
            own, over, first, second = [], [], [], []
            for r in runs:
                pid, t0, t1 = r.get("pid"), r.get("spawn_unix_ns"), r.get("ready_unix_ns")
                stamps = [t for t in hs.get(pid or -1, []) if t0 <= t <= t1]
                if stamps:
                    own.append((stamps[-1] - t0) / 1e6)
                    over.append((t1 - stamps[-1]) / 1e6)
                    # The overhead in two: until the host is connected, and the rest.
                    if host == "gohost":
                        connected = t0 + r["start_ms"] * 1e6
                    else:
                        connected = r.get("connected_unix_ns")
                    if connected:
                        first.append((connected - stamps[-1]) / 1e6)
                        second.append((t1 - connected) / 1e6)
            split[(plugin, host)] = (first, second)
            per_host[host] = (healthy, own, over)
        (g_h, g_own, g_over), (p_h, p_own, p_over) = per_host["gohost"], per_host["plugvisor"]
        r_start = ratio(median(p_h), median(g_h))
        ok = None if r_start is None else r_start <= 0.9
        rows.append(("1", "start → healthy", plugin, cell(g_h), cell(p_h), fmt_ratio(r_start), "≤ 0.9×", verdict(ok)))
        if ok is False:
            own = median(p_own)
            best = ratio(own, median(g_h))
            why.append(
                f"**start → healthy, {PLUGIN_NAMES[plugin]}** ({fmt_ratio(r_start)}): the plugin itself needs "
                f"{fmt_ms(own)} (median, its own timestamp) from spawn to printing its handshake "
                f"({fmt_ms(floor_hs.get(plugin))} with no host at all), of go-plugin's {fmt_ms(median(g_h))} "
                f"total, so even a host with zero overhead would be at {fmt_ratio(best)}. What the hosts add "
                f"after the handshake: go-plugin {fmt_ms(median(g_over))}, plugvisor {fmt_ms(median(p_over))} "
                "(row \"host overhead\")."
            )
        r_over = ratio(median(p_over), median(g_over))
        ok = None if median(p_over) is None else median(p_over) <= 1.0
        rows.append(("1", "host overhead: handshake printed → healthy", plugin, cell(g_over), cell(p_over),
                     fmt_ratio(r_over), "plugvisor ≤ 1 ms", verdict(ok)))
        if ok is False:
            f, sec = split.get((plugin, "plugvisor"), ([], []))
            gf, gs = split.get((plugin, "gohost"), ([], []))
            go_first = median(split.get(("go", "gohost"), ([], []))[1])
            than_go = "" if plugin == "go" else f" (on the Go plugin: {fmt_ms(go_first)})"
            p_runs = [r for r in runs_of(get("start", plugin, "plugvisor")) if not r.get("error")]
            impl = median([r["implemented_ms"] for r in p_runs if r.get("implemented_ms") is not None])
            act = median([r["on_activate_ms"] for r in p_runs if r.get("on_activate_ms") is not None])
            hooks_note = ""
            if act is not None:
                hooks_note = (
                    f" For this plugin \"healthy\" is Running, which in plugvisor also takes Implemented "
                    f"({fmt_ms(impl)}) and OnActivate ({fmt_ms(act)}, what the plugin's on_activate does: here "
                    "host API calls), from plugvisor's hook histogram in the same runs; go-plugin's start → "
                    "first Ping does neither (the Python SDK loads its lifecycle services on a thread after "
                    "the handshake, and the first Implemented waits for that load). Row 8 compares the two "
                    "activations like for like.")
            elif impl is not None:
                hooks_note = f" Of it, Implemented (answered UNIMPLEMENTED) takes {fmt_ms(impl)}."
            why.append(
                f"**host overhead, {PLUGIN_NAMES[plugin]}** ({fmt_ms(median(p_over))}, go-plugin's host "
                f"{fmt_ms(median(g_over))}): plugvisor takes {fmt_ms(median(f))} from the handshake line to a "
                f"connected channel (reading and parsing the line, the socket, HTTP/2) and {fmt_ms(median(sec))} "
                f"from there to the first SERVING answer. That answer is the plugin's first gRPC call, which is "
                f"slow in any host: go-plugin's first Ping on this plugin takes {fmt_ms(median(gs))}{than_go}, "
                f"its later pings {fmt_ms(warm[(plugin, 'gohost')][0])} (tables \"Start, after the handshake\" "
                "and \"Floors and context\")." + hooks_note
            )
        rows.append(("1", "(context) plugin's own spawn → handshake printed", plugin, cell(g_own), cell(p_own),
                     fmt_ratio(ratio(median(p_own), median(g_own))), "", ""))
        own_start[plugin] = median(p_own)

    # 2. ping ------------------------------------------------------------------
    for plugin in PLUGIN_NAMES:
        stats = {}
        for host in ("gohost", "plugvisor"):
            objs = get("ping", plugin, host)
            s = [o.get("ping_ms") or {} for o in objs]
            fails = sum(o.get("failures", 0) for o in objs)
            if fails:
                notes.append(f"ping, {PLUGIN_NAMES[plugin]}, {host}: {fails} ping(s) failed.")
            stats[host] = (median([x["median"] for x in s if x.get("n")]),
                           median([x["p99"] for x in s if x.get("n")]),
                           sum(x.get("n", 0) for x in s))
        g, p = stats["gohost"], stats["plugvisor"]
        rows.append(("2", f"ping p50 ({p[2]} pings)", plugin, fmt_ms(g[0]), fmt_ms(p[0]),
                     fmt_ratio(ratio(p[0], g[0])), "", ""))
        ok = None if p[1] is None else p[1] <= 1.0
        rows.append(("2", "ping p99", plugin, fmt_ms(g[1]), fmt_ms(p[1]), fmt_ratio(ratio(p[1], g[1])),
                     "plugvisor ≤ 1 ms", verdict(ok)))
        if ok is False:
            ct = warm[(plugin, "plugvisor-mt")]
            why.append(
                f"**ping p99, {PLUGIN_NAMES[plugin]}** ({fmt_ms(p[1])}; go-plugin's host {fmt_ms(g[1])} on the "
                f"same plugin; p50 {fmt_ms(p[0])}): on tokio's multi-thread runtime the same pings have p50 "
                f"{fmt_ms(ct[0])} and p99 {fmt_ms(ct[1])}. A check goes from the caller's task to the h2 "
                "connection task and back (its small body is written during the call, no task); on the "
                "multi-thread runtime each hop can be a wake-up of another thread; the rest of the tail is "
                "the plugin's server."
            )

    # 3. stop --------------------------------------------------------------------
    for plugin in PLUGIN_NAMES:
        g_runs = [r for r in runs_of(get("stop", plugin, "gohost")) if not r.get("error")]
        p_runs = [r for r in runs_of(get("stop", plugin, "plugvisor")) if not r.get("error")]
        g_k, p_k = [r["kill_ms"] for r in g_runs], [r["kill_ms"] for r in p_runs]
        methods = defaultdict(int)
        for r in p_runs:
            methods[r.get("stop_method") or "unknown"] += 1
        notes.append(f"stop, {PLUGIN_NAMES[plugin]}: plugvisor stopped it "
                     + ", ".join(f"{m} ×{c}" for m, c in sorted(methods.items()))
                     + " (Controller: GRPCController/Shutdown; Terminate: SIGTERM).")
        ungraceful = sum(1 for r in g_runs if not r.get("graceful"))
        unreaped = sum(1 for r in p_runs if not r.get("reaped"))
        if ungraceful:
            notes.append(f"stop, {PLUGIN_NAMES[plugin]}: go-plugin logged \"plugin failed to exit gracefully\" "
                         f"(and SIGKILLed) in {ungraceful} of {len(g_runs)} stops.")
        if unreaped:
            notes.append(f"stop, {PLUGIN_NAMES[plugin]}: plugvisor returned from deactivate with the pid still "
                         f"in /proc in {unreaped} of {len(p_runs)} stops.")
        r = ratio(median(p_k), median(g_k))
        limit = 0.01 if plugin in PYTHON_PLUGINS else 1.0
        ok = None if r is None else r <= limit
        rows.append(("3", "stop → reaped", plugin, cell(g_k), cell(p_k), fmt_ratio(r),
                     f"≤ {limit:g}×", verdict(ok)))
        if ok is False:
            fe = floor_exit.get(plugin)
            if median(g_k) is not None and median(g_k) >= 1000:
                goal = limit * median(g_k)
                if fe is not None and fe >= goal:
                    how = (f"≤ {limit:g}× of go-plugin's {fmt_ms(median(g_k))} is {fmt_ms(goal)}, less than the "
                           "plugin alone needs")
                else:
                    how = (f"≤ {limit:g}× of go-plugin's {fmt_ms(median(g_k))} is {fmt_ms(goal)}; plugvisor "
                           f"adds {fmt_ms(None if fe is None else median(p_k) - fe)} to the plugin's own exit")
            else:
                how = ("this plugin has GRPCController, so go-plugin's host too stops it without its 2 s wait, "
                       "and both hosts only wait for the plugin to exit")
                took = [duration_ms(r.get("stop_took")) for r in p_runs]
                env_part = [r["kill_ms"] - t for r, t in zip(p_runs, took) if t is not None]
                if median(p_k) is not None and median(g_k) is not None and median(p_k) > median(g_k):
                    how += (f". Of plugvisor's {fmt_ms(median(p_k))}, {fmt_ms(median([t for t in took if t is not None]))} "
                            "is until the plugin is reaped (its \"plugin stopped\" event's `took`) and "
                            f"{fmt_ms(median(env_part))} comes after: OnDeactivate for a plugin with hooks, and "
                            "the Environment's keeper task and events (the sweep for descendants that left the "
                            "group and the socket directory's removal run after the stop returns)")
            why.append(
                f"**stop, {PLUGIN_NAMES[plugin]}** ({fmt_ratio(r)}): plugvisor {fmt_ms(median(p_k))}, go-plugin "
                f"{fmt_ms(median(g_k))}; with no host at all this plugin needs {fmt_ms(fe)} from SIGTERM to "
                f"exit and be reaped. {how[0].upper() + how[1:]}."
            )
        if plugin == "sdk":
            ok = None if median(p_k) is None else median(p_k) <= SDK_STOP_TARGET_MS
            rows.append(("3", "stop → reaped under plugvisor (issue 12: the SDK example, OnDeactivate included)",
                         plugin, cell(g_k), cell(p_k), fmt_ratio(r), f"≤ {SDK_STOP_TARGET_MS:g} ms", verdict(ok)))
            if ok is False:
                why.append(f"**SDK example stop under plugvisor** ({fmt_ms(median(p_k))}): with no host at all "
                           f"the plugin needs {fmt_ms(fe)} from SIGTERM to exit and be reaped.")

    # 4. crash -> healthy -------------------------------------------------------
    for plugin in PLUGIN_NAMES:
        g_runs = [r for r in runs_of(get("crash", plugin, "gohost")) if not r.get("error")]
        p_runs = [r for r in runs_of(get("crash", plugin, "plugvisor")) if not r.get("error")]
        for host, objs in (("gohost", get("crash", plugin, "gohost")), ("plugvisor", get("crash", plugin, "plugvisor"))):
            bad = [r.get("error") for r in runs_of(objs) if r.get("error")]
            if bad:
                notes.append(f"crash, {PLUGIN_NAMES[plugin]}, {host}: {len(bad)} run(s) failed: {bad[0][:200]}")
        g_rec, p_rec = [r["recover_ms"] for r in g_runs], [r["recover_ms"] for r in p_runs]
        g_det, p_det = [r["exited_ms"] for r in g_runs], [r["detect_ms"] for r in p_runs]
        g_rst = [r["restart_ms"] for r in g_runs]
        limit = None if own_start.get(plugin) is None else own_start[plugin] + 20
        ok = None if limit is None or median(p_rec) is None else median(p_rec) <= limit
        rows.append(("4", "crash → healthy (go-plugin: a host polling Exited() every 1 ms, restarting at once)",
                     plugin, cell(g_rec), cell(p_rec), fmt_ratio(ratio(median(p_rec), median(g_rec))),
                     f"≤ own start + 20 ms = {fmt_ms(limit)}", verdict(ok)))
        if ok is False:
            why.append(
                f"**crash → healthy, {PLUGIN_NAMES[plugin]}** ({fmt_ms(median(p_rec))} against "
                f"{fmt_ms(limit)}): detection takes {fmt_ms(median(p_det))}, the restart to SERVING the rest; "
                f"a start → healthy (scenario 1) takes "
                f"{fmt_ms(median([r['healthy_ms'] for r in runs_of(get('start', plugin, 'plugvisor')) if not r.get('error')]))}."
            )
        mm_mean = None if median(g_rst) is None else 15000 + median(g_rst)
        mm_p95 = None if pct(g_rst, 0.95) is None else 28500 + pct(g_rst, 0.95)
        mm = "n/a" if mm_mean is None else f"{fmt_ms(mm_mean)} (p95 {fmt_ms(mm_p95)}), analytic"
        rows.append(("4", "crash → healthy (go-plugin: Mattermost's design, next 30 s health tick)",
                     plugin, mm, cell(p_rec), fmt_ratio(ratio(median(p_rec), mm_mean)), "", ""))
        rows.append(("4", "(context) crash noticed (SIGKILL → Exited() / Crashed event)", plugin,
                     cell(g_det), cell(p_det), fmt_ratio(ratio(median(p_det), median(g_det))), "", ""))

    # 5. scale -----------------------------------------------------------------
    # Targets of issues 18 and 19: start-all and stop-all at most go-plugin's
    # time at every size; at the idle size (1000), host RSS at most half of
    # go-plugin's and under 64 MiB, idle CPU at most 1 %; every plugin of
    # 1000 and 2000 Go and of 200 Python SDK ones Running.
    scale_keys = sorted({k[1] for k in data if k[0] == "scale"},
                        key=lambda s: (s.split("-")[0] != "go", int(s.split("-")[1])))
    idle_at = int(run.get("scale_idle_at") or 0)
    for key in scale_keys:
        kind, n = key.split("-")
        n = int(n)
        label = f"{n} × {'Go' if kind == 'go' else 'Python SDK'}"
        res = {}
        for host in ("gohost", "plugvisor"):
            objs = get("scale", key, host)
            for o in objs:
                fails = o.get("failures", 0)
                if fails:
                    notes.append(f"scale {label}, {host}: {fails} plugin(s) failed to start: "
                                 f"{(o.get('errors') or [''])[0] if host == 'plugvisor' else ''}".strip())
            # Each size runs three times per host, every one with the same idle
            # phase: every row is a median of the three.
            med = lambda f, of=objs: median([v for v in map(f, of) if v is not None])  # noqa: E731
            idle_of = lambda o: o.get("idle") or {}  # noqa: E731
            idled = [o for o in objs if o.get("idle")] or objs
            res[host] = {
                "ready": med(lambda o: o.get("all_ready_ms")),
                "running": min([o.get("running", o.get("count", 0) - o.get("failures", 0)) for o in objs] or [0]),
                "rss": med(lambda o: idle_of(o).get("rss_end_kb") or o.get("rss_kb"), idled),
                "hwm": med(lambda o: o.get("hwm_ready_kb")),
                "peak": med(lambda o: o.get("start_cpu_peak_percent")),
                "mean": med(lambda o: o.get("start_cpu_mean_percent")),
                "cpu": med(lambda o: idle_of(o).get("cpu_percent")),
                "idle_s": med(lambda o: idle_of(o).get("seconds")),
                "killed": med(lambda o: o.get("all_killed_ms")),
                "stop_cpu": med(lambda o: o.get("stop_cpu_ms")),
                "runs": len(objs),
            }
        g, p = res["gohost"], res["plugvisor"]
        runs_note = f" ({g['runs']} runs each)" if min(g["runs"], p["runs"]) > 1 else ""
        r = ratio(p["ready"], g["ready"])
        ok = None if r is None else r <= 1.0
        rows.append(("5", f"{label}: all started and healthy, default settings{runs_note}", "", fmt_ms(g["ready"]),
                     fmt_ms(p["ready"]), fmt_ratio(r), "≤ 1×", verdict(ok)))
        if ok is False:
            why.append(f"**start of {label}** ({fmt_ratio(r)}): plugvisor {fmt_ms(p['ready'])}, go-plugin's host "
                       f"{fmt_ms(g['ready'])} (host CPU while starting: plugvisor {p['mean'] or 0:.0f} % mean, "
                       f"go-plugin's host {g['mean'] or 0:.0f} %).")
        wants_all = (kind == "go" and n >= 1000) or (kind == "sdk" and n >= 200)
        ok = None if not wants_all else p["running"] == n
        rows.append(("5", f"{label}: Running once started (the fewest of the runs)", "", f"{g['running']} of {n}",
                     f"{p['running']} of {n}", "", f"all {n}" if wants_all else "", verdict(ok) if wants_all else ""))
        pc = lambda x: "n/a" if x is None else f"{x:.0f} %"  # noqa: E731
        rows.append(("5", f"{label}: host CPU while starting, busiest 200 ms (mean), % of one core", "",
                     f"{pc(g['peak'])} ({pc(g['mean'])})", f"{pc(p['peak'])} ({pc(p['mean'])})",
                     fmt_ratio(ratio(p["mean"], g["mean"])), "", ""))
        kb = lambda x: "n/a" if x is None else f"{x / 1024:.1f} MiB"  # noqa: E731
        rows.append(("5", f"{label}: host peak RSS while starting (VmHWM once all are up)", "", kb(g["hwm"]),
                     kb(p["hwm"]), fmt_ratio(ratio(p["hwm"], g["hwm"])), "", ""))
        is_target = kind == "go" and n == idle_at
        r = ratio(p["rss"], g["rss"])
        ok = None if not is_target or p["rss"] is None or r is None else (r <= 0.5 and p["rss"] < RSS_TARGET_KB)
        rows.append(("5", f"{label}: host RSS (VmRSS, no children)", "", kb(g["rss"]), kb(p["rss"]),
                     fmt_ratio(r), "≤ 0.5× and < 64 MiB" if is_target else "", verdict(ok) if is_target else ""))
        if ok is False:
            why.append(f"**RSS at {label}** ({kb(p['rss'])}, go-plugin's host {kb(g['rss'])}): "
                       f"{kb(p['rss'] / n)} a plugin; at the smallest size: SMALLEST_RSS.")
        pc2 = lambda x: "n/a" if x is None else f"{x:.2f} %"  # noqa: E731
        idle_s = p["idle_s"] or g["idle_s"]
        ok = None if not is_target or p["cpu"] is None else p["cpu"] <= CPU_TARGET_PERCENT
        if idle_s or is_target:
            rows.append(("5", f"{label}: host CPU idle ({idle_s:.0f} s, health checks every "
                              f"{run['health_interval_s']} s)" if idle_s else f"{label}: host CPU idle", "",
                         pc2(g["cpu"]), pc2(p["cpu"]), fmt_ratio(ratio(p["cpu"], g["cpu"])),
                         "≤ 1 %" if is_target else "", verdict(ok) if is_target else ""))
        if ok is False:
            why.append(f"**idle CPU at {label}** ({pc2(p['cpu'])}, go-plugin's host {pc2(g['cpu'])}): "
                       f"{n} plugins each health-checked every {run['health_interval_s']} s are "
                       f"{n / float(run['health_interval_s']):.0f} pings a second.")
        # A host that had fewer plugins running stopped fewer: below half as
        # many, no comparison; otherwise the ratio is per plugin stopped, and
        # the row says how many each host had.
        alike = 2 * g["running"] >= p["running"]
        per_plugin = alike and 0 < g["running"] != p["running"]
        if per_plugin and None not in (p["killed"], g["killed"]):
            r = ratio(p["killed"] / p["running"], g["killed"] / g["running"])
        else:
            r = ratio(p["killed"], g["killed"])
        ok = None if r is None or not alike else r <= 1.0
        g_stop, p_stop = fmt_ms(g["killed"]), fmt_ms(p["killed"])
        if per_plugin:
            g_stop, p_stop = f"{g_stop} ({g['running']} running)", f"{p_stop} ({p['running']} running)"
        rows.append(("5", f"{label}: all stopped", "", g_stop, p_stop,
                     fmt_ratio(r) + (" per plugin" if per_plugin else ""), "≤ 1×",
                     verdict(ok) if alike else "not compared"))
        if per_plugin and r is not None:
            why.append(f"**stop of {label}** is compared per plugin stopped: go-plugin's host had {g['running']} "
                       f"of {n} running (the others missed its start timeout), plugvisor "
                       f"{p['running']}; {fmt_ms(g['killed'] / g['running'])} against "
                       f"{fmt_ms(p['killed'] / p['running'])} a plugin. The totals' ratio is "
                       f"{fmt_ratio(ratio(p['killed'], g['killed']))}.")
        rows.append(("5", f"{label}: host CPU while stopping them all (the plugins' own exits not counted)", "",
                     fmt_ms(g["stop_cpu"]), fmt_ms(p["stop_cpu"]), fmt_ratio(ratio(p["stop_cpu"], g["stop_cpu"])),
                     "", ""))
        if not alike:
            why.append(f"**stop of {label}**: not compared, go-plugin's host had {g['running']} of {n} "
                       f"running (plugvisor {p['running']}); plugvisor stopped its {p['running']} in "
                       f"{fmt_ms(p['killed'])}, go-plugin's host its {g['running']} in {fmt_ms(g['killed'])}.")
        if ok is False:
            why.append(f"**stop of {label}** ({fmt_ratio(r)}): plugvisor {fmt_ms(p['killed'])} "
                       f"(`Environment::shutdown`, which also waits for the sweep of what the plugins left "
                       f"behind), go-plugin's host {fmt_ms(g['killed'])} (`Kill` of every client at once).")

    rows2, why2, ctx2 = issue_sections(get, data, run, notes)
    why.extend(why2)
    previous = previous_rows(os.path.join(out_dir, "previous.md"))
    compared = []  # (section, row, plugin, before, now, change)
    for sec, row_name, plugin, g, p, r, *_ in rows:
        key = (sec, row_name, PLUGIN_NAMES.get(plugin, plugin))
        if key in previous:
            before, now = first_number(previous[key][0]), first_number(p)
            change = None if before in (None, 0) or now is None else now / before - 1
            compared.append((sec, row_name, PLUGIN_NAMES.get(plugin, plugin), previous[key][0], p, change,
                             previous[key][1], r))

    for plugin in PLUGIN_NAMES:
        context.append((
            plugin, fmt_ms(floor_hs.get(plugin)), fmt_ms(floor_exit.get(plugin)),
            f"{fmt_ms(warm[(plugin, 'gohost')][0])} / {fmt_ms(warm[(plugin, 'gohost')][1])}",
            f"{fmt_ms(warm[(plugin, 'plugvisor')][0])} / {fmt_ms(warm[(plugin, 'plugvisor')][1])}",
            f"{fmt_ms(warm[(plugin, 'plugvisor-mt')][0])} / {fmt_ms(warm[(plugin, 'plugvisor-mt')][1])}",
        ))
    small = [k for k in scale_keys if k.startswith("go-")]
    if small:
        o = (get("scale", small[0], "plugvisor") or [{}])[0]
        rss0 = (o.get("idle") or {}).get("rss_end_kb") or o.get("rss_kb")
        text = "n/a" if rss0 is None else f"{rss0 / 1024:.1f} MiB for {small[0].split('-')[1]}"
        why = [line.replace("SMALLEST_RSS", text) for line in why]

    # --- print -----------------------------------------------------------------
    w = sys.stdout.write
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    w("# plugvisor beside go-plugin's Go host: benchmark results\n\n")
    w(f"Written by `bench/run` on {now}, at commit {git_describe()}. Times are medians with the 95th "
      "percentile in brackets, over all runs of both alternating batches; the ratio is plugvisor's median "
      "over go-plugin's (below 1 means plugvisor is faster or smaller). Targets are plugvisor's goals from "
      "issues 7 and 12-14; they are reported, never asserted. `bench/README.md` says what each row measures.\n\n")
    w("| # | row | plugin | go-plugin v1.7.0 host (gohost) | plugvisor | plugvisor / go-plugin | target | |\n")
    w("|---|---|---|---|---|---|---|---|\n")
    for sec, row, plugin, g, p, r, target, v in rows:
        w(f"| {sec} | {row} | {PLUGIN_NAMES.get(plugin, plugin)} | {g} | {p} | {r} | {target} | {v} |\n")
    w("\n## Hooks, host API and HTTP (issues 12-14)\n\n")
    w("Each row beside its peer: go-plugin v1.7.0's host (gohost) on the same plugin, the same handler or app "
      "served directly, a bare fsync, or one call. Hook, kv and HTTP-hook latencies are medians over the runs of "
      "each run's p50 and p99; activation times are medians (p95) over all runs. plugvisor runs with a data "
      "directory (SQLite, WAL, synchronous=FULL) unless the row says otherwise. The ratio is plugvisor's over "
      "the peer's.\n\n")
    w("| # | row | plugin | peer | peer's number | plugvisor | plugvisor / peer | target | |\n")
    w("|---|---|---|---|---|---|---|---|---|\n")
    for sec, row_name, plugin, peer, peer_v, pv_v, r, target, v in rows2:
        w(f"| {sec} | {row_name} | {V1_NAMES.get(plugin, plugin)} | {peer} | {peer_v} | {pv_v} | {r} | {target} | {v} |\n")
    if ctx2:
        w("\n")
        for line in ctx2:
            w(f"- {line}\n")

    sandbox_section(w, get)
    zygote_section(w, get, sorted({k[1] for k in data if k[0] == "zygscale"}))

    w("\n## Floors and context\n\n")
    w("What the plugins need on their own, and where ping time goes. \"No host\": bench/floor.py starts the "
      f"plugin with the handshake environment and nothing else ({max([len(v['handshake_ms']) for v in floor.values()] or [0])} runs "
      "each, between the start batches), reads its "
      "handshake line, then sends SIGTERM. Pings: p50 / p99 of scenario 2, and plugvisor's again on tokio's multi-thread runtime (plugvisor itself runs on one thread).\n\n")
    w("| plugin | no host: spawn → handshake read | no host: SIGTERM → reaped | "
      "go-plugin: pings | plugvisor: pings | plugvisor, multi-thread runtime: pings |\n")
    w("|---|---|---|---|---|---|\n")
    for plugin, *cells in context:
        w(f"| {PLUGIN_NAMES[plugin]} | " + " | ".join(cells) + " |\n")
    w("\n## Start, after the handshake\n\n")
    w("The host overhead of scenario 1 in two parts. go-plugin: handshake written → `Client()` returned "
      "(it reads the line, dials, and opens its stdio and broker streams), then the first `Ping()`. plugvisor: "
      "handshake written → its \"plugin connected\" debug event (line read and parsed, channel connected), "
      "then → `activate` returned (first SERVING health check, Running).\n\n")
    w("| plugin | go-plugin: handshake → Client() | go-plugin: first Ping | plugvisor: handshake → connected "
      "| plugvisor: connected → healthy |\n|---|---|---|---|---|\n")
    for plugin in PLUGIN_NAMES:
        gf, gs = split.get((plugin, "gohost"), ([], []))
        pf, ps = split.get((plugin, "plugvisor"), ([], []))
        w(f"| {PLUGIN_NAMES[plugin]} | {cell(gf)} | {cell(gs)} | {cell(pf)} | {cell(ps)} |\n")
    w("\n## Targets missed\n\n")
    if why:
        for line in why:
            w(f"- {line}\n")
        w("\n`bench/README.md` says more about each.\n")
    else:
        w("None.\n")
    if compared:
        w("\n## Compared with the previous results.md\n\n")
        w("plugvisor's number in the first table, then and now (the previous file's run, on the same machine; "
          "ratios near 1 between runs are noise, see Caveats in bench/README.md). Rows more than 15 % worse "
          "are in bold.\n\n")
        machine = []
        prev_path = os.path.join(out_dir, "previous.md")
        with open(prev_path) as f:
            in_floors = False
            for line in f:
                if line.startswith("## "):
                    in_floors = line.startswith("## Floors")
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                name = {v: k for k, v in PLUGIN_NAMES.items()}.get(cells[0]) if cells else None
                if in_floors and name and len(cells) >= 3:
                    before, now = first_number(cells[1]), floor_hs.get(name)
                    if before and now:
                        machine.append(f"{PLUGIN_NAMES[name]} {cells[1]} → {fmt_ms(now)} ({now / before:.2f}×)")
        if machine:
            w("The machine itself, with no host at all (spawn → handshake read, the floors table): "
              + "; ".join(machine) + ". Absolute times move with it; the ratios to go-plugin, measured in the "
              "same run, do not.\n\n")
        w("| # | row | plugin | plugvisor before | plugvisor now | change | ratio before | ratio now |\n")
        w("|---|---|---|---|---|---|---|---|\n")
        for sec, row_name, plugin, before, now, change, rb, rn in compared:
            ch = "n/a" if change is None else f"{change * 100:+.0f} %"
            if change is not None and change > 0.15:
                ch = f"**{ch}**"
            w(f"| {sec} | {row_name} | {plugin} | {before} | {now} | {ch} | {rb} | {rn} |\n")

    if findings:
        w("\n## Other findings\n\n")
        for line in findings:
            w(f"- {line}\n")
    w("\n## Runs\n\n")
    w(f"- start → healthy: {run['start_n']} runs per plugin and host; stop: {run['stop_n']}; crash: "
      f"{run['crash_n']}; ping: {run['ping_n']} pings on one connection; in {run['batches']} alternating "
      "batches (ping: one).\n")
    w(f"- scale: {run['scale']} Go plugins and {run['scale_sdk']} Python-with-SDK plugins at once; idle "
      f"{run['scale_idle_s']} s at {run.get('scale_idle_at')} Go plugins and {run['scale_idle_small_s']} s at the others, with "
      f"a health check every {run['health_interval_s']} s in both hosts (plugvisor: each plugin's keeper "
      "task; gohost: one job pinging every plugin in turn, like Mattermost's).\n")
    w(f"- build {run['build_s']} s, benchmark {run['bench_s']} s, whole `bench/run` {run['total_s']} s. "
      f"Load average at start {run['load_at_start']}, at end {run['load_at_end']}.\n")
    for line in notes + problems:
        w(f"- {line}\n")
    w("\n## Machine\n\n")
    w(f"- nproc: {os.cpu_count()}; CPU: {cpu_model()}; memory: {mem_total()}\n")
    w(f"- kernel: {platform.system()} {platform.release()}\n")
    w(f"- {command_version(['rustc', '--version'])}\n")
    w(f"- {command_version(['go', 'version'])}\n")
    w(f"- Python: {platform.python_version()} (.venv, runs the grpcio plugin); hello-python's venv: "
      f"{command_version([os.path.join(root, 'examples/plugins/hello-python/venv/bin/python'), '--version'])}\n")
    grpc_v = command_version([sys.executable, "-c", "import grpc; print(grpc.__version__)"])
    w(f"- grpcio {grpc_v}; go-plugin v1.7.0 (go.mod)\n")


if __name__ == "__main__":
    main(sys.argv[1])
