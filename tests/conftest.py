"""Shared helpers: run the CLI in a subprocess as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m pibench ARGS` with captured output; bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "pibench", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def cli():
    return run_cli


def write_suite(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def party_processes(run_pid: int) -> dict[int, psutil.Process]:
    """The `pibench party` processes below `run_pid`, by rank; processes that end meanwhile are skipped."""
    found = {}
    for child in psutil.Process(run_pid).children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.NoSuchProcess:  # ended (or a zombie) while we looked
            continue
        if "party" in cmd and "--rank" in cmd:
            found[int(cmd[cmd.index("--rank") + 1])] = child
    return found
