"""Driving the real host, target/debug/plugvisor, as a user would (for test_plugvisor.py).

`plugvisor run --data-dir D --control-socket S [--json] PLUGINS_DIR` runs in
a session of its own, with its working directory in the test's temporary
directory (so no ./plugvisor.toml is picked up by accident); its stdout
(one line, or one JSON object, per state change) is read by a thread, its
stderr (the log, plugin lines included) goes to a file. The other commands
(`status --json`, `config ...`, `stop ID`, ...) run as separate processes
against the control socket. Everything is awaited, never slept for.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Optional

from hostkit import ROOT, pid_gone, wait_for

PLUGVISOR = ROOT / "target" / "debug" / "plugvisor"

#: Generous: the machine may be compiling Rust while the tests run.
TIMEOUT = 60.0


def plugvisor_missing() -> Optional[str]:
    """Why the real host cannot be used, or None."""
    if not os.access(PLUGVISOR, os.X_OK):
        return f"{PLUGVISOR} is not built: ./scripts/setup builds it"
    return None


class Plugvisor:
    def __init__(self, workdir: Path, plugins: Path, *args: str, json_lines: bool = True,
                 env: Optional[dict] = None) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        # A directory of its own: plugvisor makes the socket's directory 0700.
        self.control_socket = workdir / "ctl" / "c.sock"
        self.json_lines = json_lines
        self.stderr_path = workdir / f"plugvisor-{time.monotonic_ns()}.stderr"
        argv = [
            str(PLUGVISOR), "run",
            "--data-dir", str(self.data_dir),
            "--control-socket", str(self.control_socket),
            # Bundles without a venv (the test bundles) run on the test venv, which has the SDK.
            "--interpreter", sys.executable,
            *(["--json"] if json_lines else []),
            *args,
            str(plugins),
        ]
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
            cwd=str(workdir), env=env if env is not None else _env(), start_new_session=True,
        )
        self.lines: List[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        #: Every plugin pid a status showed, to check that none outlives the host.
        self.pids: set[int] = set()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    # -- what run prints -----------------------------------------------------------------
    def events(self) -> List[dict]:
        with self._cond:
            return [json.loads(line) for line in self.lines]

    def wait_line(self, pred: Callable[[Any], bool], what: str, start: int = 0,
                  timeout: float = TIMEOUT) -> tuple[int, Any]:
        """(index, item) of the first stdout line from `start` on for which pred
        holds; items are JSON events with json_lines, else the text lines."""
        deadline = time.monotonic() + timeout
        with self._cond:
            i = start
            while True:
                while i < len(self.lines):
                    item = json.loads(self.lines[i]) if self.json_lines else self.lines[i]
                    if pred(item):
                        self._note_pid(item)
                        return i, item
                    i += 1
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise AssertionError(
                        f"plugvisor run printed no line for {what} "
                        f"({'it exited' if self._eof else f'{timeout} s'}); stdout:\n"
                        + "\n".join(self.lines) + f"\nstderr:\n{self.stderr()}"
                    )
                self._cond.wait(left)

    def wait_event(self, plugin_id: str, event: str, start: int = 0, timeout: float = TIMEOUT) -> tuple[int, dict]:
        return self.wait_line(
            lambda e: e["event"] == event and e["status"]["id"] == plugin_id, f"{plugin_id} {event}", start, timeout
        )

    def wait_running(self, plugin_id: str, start: int = 0) -> tuple[int, dict]:
        """The next `running` event of plugin_id (failing at once on a failed start)."""
        i, e = self.wait_line(
            lambda e: e["status"]["id"] == plugin_id and e["event"] in ("running", "failed_to_start", "disabled"),
            f"{plugin_id} running", start,
        )
        assert e["event"] == "running", f"{plugin_id}: {e}\nstderr:\n{self.stderr()}"
        return i, e

    def _note_pid(self, item: Any) -> None:
        if isinstance(item, dict) and item.get("status", {}).get("pid"):
            self.pids.add(item["status"]["pid"])

    # -- its log ------------------------------------------------------------------------------
    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def wait_log(self, pattern: str, what: str = "", timeout: float = TIMEOUT) -> re.Match[str]:
        """The first match of the regular expression in plugvisor's stderr, awaited."""
        regex = re.compile(pattern, re.MULTILINE)
        found: list[re.Match[str]] = []

        def seen() -> bool:
            m = regex.search(self.stderr())
            if m:
                found.append(m)
            if self.proc.poll() is not None and not m:
                raise AssertionError(f"plugvisor exited without logging {what or pattern!r}:\n{self.stderr()}")
            return m is not None

        try:
            wait_for(seen, timeout, what or pattern)
        except AssertionError as e:
            raise AssertionError(f"{e}; stderr:\n{self.stderr()}") from None
        return found[0]

    # -- the control socket -------------------------------------------------------------------
    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`plugvisor ARGS... --control-socket S`, finished."""
        return subprocess.run(
            [str(PLUGVISOR), *args, "--control-socket", str(self.control_socket)],
            capture_output=True, text=True, timeout=TIMEOUT, env=_env(), cwd=str(self.workdir),
        )

    def status(self) -> List[dict]:
        r = self.ctl("status", "--json")
        assert r.returncode == 0, r.stderr
        statuses = json.loads(r.stdout)
        self.pids.update(s["pid"] for s in statuses if s["pid"])
        return statuses

    def status_of(self, plugin_id: str) -> dict:
        (status,) = [s for s in self.status() if s["id"] == plugin_id]
        return status

    def config_get(self, plugin_id: str) -> dict:
        r = self.ctl("config", "get", plugin_id, "--json")
        assert r.returncode == 0, r.stderr
        return {v["key"]: (v["value"], v["source"]) for v in json.loads(r.stdout)}

    # -- the end ------------------------------------------------------------------------------
    def terminate(self, timeout: float = TIMEOUT) -> int:
        """SIGTERM, as Ctrl-C or a service manager would; its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"plugvisor run did not exit after SIGTERM:\n{self.stderr()}") from None
        self._reader.join(timeout)
        return code

    def assert_no_plugin_left(self) -> None:
        for pid in self.pids:
            wait_for(lambda pid=pid: pid_gone(pid), 10, f"plugin pid {pid} to be gone")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        # Its plugins die with it (plugvisor gives them a parent-death SIGKILL);
        # any that did not are killed here, and the test fails.
        survivors = []
        for pid in self.pids:
            try:
                wait_for(lambda pid=pid: pid_gone(pid), 10, f"plugin pid {pid} to be gone")
            except AssertionError:
                survivors.append(pid)
                os.kill(pid, signal.SIGKILL)
        assert not survivors, f"plugin processes outlived plugvisor: {survivors}"


def _env() -> dict:
    # Nothing of an outer plugvisor or plugin environment leaks in.
    return {k: v for k, v in os.environ.items() if not k.startswith(("PLUGVISOR_", "PLUGIN_", "PVTEST_"))
            and k != "MATTERMOST_PLUGIN"}
