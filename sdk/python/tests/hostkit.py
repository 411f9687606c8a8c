"""Helpers for acting as a go-plugin host from pytest (used by conftest and the tests).

Every plugin runs as a real child process in its own session (so its whole
process group can be killed at teardown), with stdout on a pipe that we read
the handshake from and stderr in a file.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parents[2]
EXAMPLE_DIR = ROOT / "examples" / "plugins" / "hello-python"
EXAMPLE = EXAMPLE_DIR / "plugin.py"
TEST_PLUGIN = TESTS / "plugins" / "sdk_test_plugin.py"
FAKE_HOST = TESTS / "plugins" / "fake_host.py"
RAW_PLUGIN = ROOT / "tests" / "pyplugins" / "raw_grpcio" / "plugin.py"

COOKIE_KEY = "MATTERMOST_PLUGIN"
COOKIE_VALUE = "Securely message teams, anywhere."

#: Generous bounds: the machine may be busy compiling while tests run.
HANDSHAKE_TIMEOUT = 60.0
EXIT_TIMEOUT = 10.0


def base_env(cookie: bool = True, **extra: str) -> Dict[str, str]:
    """The environment a host gives a plugin, minus anything inherited that would interfere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PLUGIN_", "PVTEST_", "PLUGVISOR_")) and k != COOKIE_KEY
    }
    if cookie:
        env[COOKIE_KEY] = COOKIE_VALUE
        env["PLUGIN_PROTOCOL_VERSIONS"] = "1"
    env.update(extra)
    return env


@dataclass
class Handshake:
    core: int
    app: int
    network: str
    address: str
    protocol: str
    #: Field 6 as sent (base64 of the server certificate's DER, AutoMTLS
    #: only); None when the line has five fields.
    server_cert: Optional[str] = None

    @property
    def target(self) -> str:
        return "unix:" + self.address if self.network == "unix" else self.address

    @classmethod
    def parse(cls, line: str) -> Handshake:
        parts = line.rstrip("\n").split("|")
        assert len(parts) in (5, 6), f"not a go-plugin handshake line: {line!r}"
        cert = parts[5] if len(parts) == 6 else None
        return cls(int(parts[0]), int(parts[1]), parts[2], parts[3], parts[4], cert)


class PluginProcess:
    def __init__(self, argv: List[str], env: Dict[str, str], cwd: Path, logdir: Path, name: str) -> None:
        self.stderr_path = logdir / f"{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=str(cwd),
            start_new_session=True,
        )
        self._buf = b""
        self.handshake_line: Optional[str] = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_line(self, timeout: float) -> str:
        """One line from the plugin's stdout; '' at EOF; raises on timeout."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"no line on stdout within {timeout}s; stderr so far:\n{self.stderr_text()}"
                )
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                line, self._buf = self._buf, b""
                return line.decode()
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode() + "\n"

    def handshake(self, timeout: float = HANDSHAKE_TIMEOUT) -> Handshake:
        line = self.read_line(timeout)
        assert line, f"plugin closed stdout before its handshake; stderr:\n{self.stderr_text()}"
        self.handshake_line = line
        return Handshake.parse(line)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"plugin still running {timeout}s later; stderr:\n{self.stderr_text()}"
            ) from None

    def rest_of_stdout(self) -> str:
        """Everything on stdout after what was read (call after exit)."""
        data = self._buf + self.proc.stdout.read()
        self._buf = b""
        return data.decode(errors="replace")

    def stderr_text(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()


def wait_for(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pid_gone(pid: int) -> bool:
    """True when pid no longer runs (gone, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
