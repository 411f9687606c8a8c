"""Fixtures: plugin processes that are always cleaned up, and a short socket dir."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostkit import PluginProcess, base_env


@pytest.fixture
def sock_dir():
    """A short private directory for unix sockets (sun_path is ~107 bytes)."""
    d = tempfile.mkdtemp(prefix="pvt", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def spawn(tmp_path) -> Callable[..., PluginProcess]:
    """spawn(script, env=..., python=..., cwd=...) -> PluginProcess, all killed at teardown."""
    started: List[PluginProcess] = []

    def _spawn(
        script: Path,
        env: Optional[Dict[str, str]] = None,
        python: Optional[str] = None,
        cwd: Optional[Path] = None,
        args: Optional[List[str]] = None,
    ) -> PluginProcess:
        argv = [python or sys.executable, str(script), *list(args or [])]
        p = PluginProcess(
            argv,
            env if env is not None else base_env(),
            cwd or Path(script).parent,
            tmp_path,
            f"proc{len(started)}",
        )
        started.append(p)
        return p

    yield _spawn
    for p in started:
        p.kill_group()
