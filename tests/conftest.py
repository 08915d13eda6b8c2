"""Shared helpers: run the CLI in a subprocess as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
SECRET = "test-secret-0123456789abcdef"  # the shared secret of party-mode tests (`pibench.measuring.peers`)


# The terminal's size never reaches the CLI under test (pytest-xdist's workers set COLUMNS=80): tables are
# as wide as a test asks (COLUMNS in `env`), else pibench's default of 120 columns
BASE_ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}


def run_cli(
    *args: str, cwd: Path = ROOT, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m pibench ARGS` with captured output (and `env` added to the environment); bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "pibench", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**BASE_ENV, **(env or {})},
    )


def start_cli(*args: str) -> subprocess.Popen[str]:
    """`python -m pibench ARGS` started in the background, output captured (the caller ends it). Ctrl-C
    (SIGINT) reaches it as at a terminal, even where the tests run in a background job (which ignores it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pibench", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=BASE_ENV,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def sweep_records(folder: Path) -> dict[tuple[int, str], dict]:
    """The records of a sweep folder's cells, by (T, variant name)."""
    found = {}
    for path in (folder / "cells").glob("*.json"):
        rec = json.loads(path.read_text())
        found[(rec["suite"]["dims"]["T"], rec["variants"][0]["name"])] = rec
    return found


@pytest.fixture
def cli():
    return run_cli


def write_suite(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_each(
    folder: Path, runs: dict[str, tuple[Path, list[str]]], timeout: float = 300
) -> dict[str, tuple[Path, dict]]:
    """`pibench run SUITE OPTIONS` for each label's (suite, options), one after the other; each
    label's record path and content (a failed run fails the test with its stderr)."""
    records = {}
    for label, (suite, options) in runs.items():
        out = folder / f"{label}.json"
        proc = run_cli("run", str(suite), *options, "--out", str(out), "--no-progress", timeout=timeout)
        assert proc.returncode == 0, proc.stderr
        records[label] = (out, json.loads(out.read_text()))
    return records


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


def fake_measured(gb: float, seconds: float, **options):
    """`fake_measured_data(gb, seconds, **options)` as the `Measured` a run would record."""
    from pibench.measuring.measured import Measured

    return Measured.model_validate(fake_measured_data(gb, seconds, **options))


def fake_measured_data(
    gb: float,
    seconds: float,
    *,
    usable: bool = True,
    rounds: int = 100,
    spread: tuple[float, float] | None = None,
    repeats: int = 3,
) -> dict:
    """A valid measurement with round numbers, as the JSON a record holds it (all traffic in 'linear');
    `spread`: the fastest and slowest passes' seconds (default: both `seconds`)."""
    from pibench.models.opkinds import KINDS

    total = int(gb * 1e9)
    by_kind = {k: {"bytes": 0, "rounds": 0, "wall_s": 0.0, "comm_s": 0.0} for k in KINDS}
    by_kind["linear"] = {"bytes": total, "rounds": rounds, "wall_s": seconds, "comm_s": 1.0}
    zero = {"sent": 0, "received": 0, "rounds": 0, "comm_s": 0.0, "wall_s": 0.0}
    fastest, slowest = spread or (seconds, seconds)
    spread = {"wall_s_min": fastest, "wall_s_max": slowest, "comm_s_min": 1.0, "comm_s_max": 1.0}
    party = {
        "sent": total // 2,
        "received": total // 2,
        "rounds": rounds,
        "comm_s": 1.0,
        "wall_s": seconds,
        "by_kind": {k: dict(zero) for k in KINDS},
        "dealer": dict(zero),
        "counters": {},
        "peak_rss_bytes": 1,
        "steps": [],
        **spread,
    }
    return {
        "sampled": True,
        "repeats": repeats,
        **spread,
        "layers_measured": {"0": 12},
        "bytes": total,
        "rounds": rounds,
        "wall_s": seconds,
        "comm_s": 1.0,
        "max_abs_error": 1e-4 if usable else 1e6,
        "max_abs_reference": 4.0,
        "error_scope": "the input stage and layer 0 (one per layer kind) applied in turn, not all 12 layers",
        "usable": usable,
        "by_kind": by_kind,
        "dealer": None,
        "parties": [{"rank": 0, "role": "server", **party}, {"rank": 1, "role": "client", **party}],
        "prompt": None,
    }


def fake_run(**changes: object):
    """The `RunInfo` `build_record` takes, for a local loopback run."""
    from pibench.measuring.measured import RunInfo

    return RunInfo.model_validate(
        {
            "seed": 0,
            "project": ["lan", "paper-wan"],
            "mode": "local",
            "full": False,
            "rendezvous": "tcp://127.0.0.1:1",
            "network": "loopback",
            "emulated": None,
            "timeout_s": 45.0,
            "elapsed_s": 1.0,
            "ranks": {"0": "server", "1": "client"},
            "dealer": None,
            "accepted_unusable": False,
            "warm_parties": False,
            **changes,
        }
    )


def run_parties(
    suites: list[Path],
    rendezvous: str,
    *extra: str,
    out: Path | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> list[tuple[int, str, str]]:
    """`pibench party` for ranks 0, 1, ... (one suite file each, as on separate hosts, the shared secret
    SECRET in their environment), all run to the end or killed; (exit code, stdout, stderr) by rank.
    Rank 0 writes the record to `out`."""
    commands = [
        [sys.executable, "-m", "pibench", "party", "--rank", str(rank), "--rendezvous", rendezvous, str(suite)]
        + list(extra)
        + (["--out", str(out)] if rank == 0 and out else [])
        for rank, suite in enumerate(suites)
    ]
    return run_together(commands, timeout, {**os.environ, "PIBENCH_SECRET": SECRET, **(env or {})})


def run_together(
    commands: list[list[str]], timeout: float, env: dict[str, str] | None = None
) -> list[tuple[int, str, str]]:
    """`commands` started at once from the checkout, all run to the end or killed by PID (bounded in
    time); (exit code, stdout, stderr) of each."""
    from pibench.util.procs import kill_tree

    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for cmd in commands
    ]
    try:
        results = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            kill_tree(p.pid)
    return [(p.returncode, o, e) for p, (o, e) in zip(procs, results, strict=True)]


CRYPTEN_PARTY = """
import json, os, sys, torch
from pibench.backends.crypten.compat import import_crypten
crypten = import_crypten()
rank = int(sys.argv[1])
os.environ.update(RANK=str(rank), WORLD_SIZE="2", RENDEZVOUS=sys.argv[2], DISTRIBUTED_BACKEND="gloo")
torch.set_num_threads(1)
crypten.init()
"""


def run_crypten_pair(body: str, timeout: float = 120) -> list[tuple[int, str, str]]:
    """Two CrypTen parties on loopback running `body` after `CRYPTEN_PARTY` (which joins them, rank in
    `rank`): (exit code, stdout, stderr) of each."""
    from pibench.util.procs import free_port

    rendezvous = f"tcp://127.0.0.1:{free_port()}"
    code = CRYPTEN_PARTY + body
    return run_together([[sys.executable, "-c", code, str(rank), rendezvous] for rank in (0, 1)], timeout)
