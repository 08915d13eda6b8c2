"""A party that dies or hangs: the run fails within 60 s naming party and variant, leaves no process
and no record behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from pibench.util.procs import kill_tree
from tests.conftest import ROOT, party_processes, run_cli, write_suite

# Long enough to be caught mid-run: four variants of 8 layers, every layer measured.
SLOW = "name: slow\nmodel: {L: 8, H: 2, d: 64, T: 16}\nvariants: [sm_ln_g, sm_ln_r, sm_scffn, sm_g]\n"


def _party_pids(run: psutil.Process, rank: int, deadline_s: float = 60) -> int:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        found = party_processes(run.pid)
        if rank in found:
            return found[rank].pid
        time.sleep(0.1)
    raise AssertionError(f"party {rank} never started")


def _wait_connected(party: psutil.Process, deadline_s: float = 60) -> None:
    """Until the party has joined the others (an established TCP connection)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if any(c.status == psutil.CONN_ESTABLISHED for c in party.net_connections(kind="tcp")):
            return
        time.sleep(0.1)
    raise AssertionError("the party never connected")


def _start(tmp_path, *extra):
    suite = write_suite(tmp_path, SLOW)
    out = tmp_path / "out" / "rec.json"
    cmd = [sys.executable, "-m", "pibench", "run", str(suite), "--out", str(out), "--no-progress", "--full", *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, out


@pytest.mark.parametrize("how", ["kill", "hang"])
def test_party_failure_stops_the_run(tmp_path, how):
    proc, out = _start(tmp_path, "--timeout", "8")
    try:
        run = psutil.Process(proc.pid)
        victim = psutil.Process(_party_pids(run, 1))
        others = [p for p in run.children(recursive=True) if p.pid != victim.pid]
        _wait_connected(victim)
        time.sleep(2)  # joined the other party: now well into the first variant
        start = time.monotonic()
        victim.send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        _, stderr = proc.communicate(timeout=60)
        elapsed = time.monotonic() - start
    finally:
        kill_tree(proc.pid)
    assert proc.returncode == 2 and elapsed < 60
    assert "party 1 (client)" in stderr and "during variant 'sm_ln_g'" in stderr, stderr
    assert ("exited with code -9" if how == "kill" else "made no progress for 8 s") in stderr
    # the suite's header line, then the error on one line
    assert "Traceback" not in stderr and stderr.splitlines()[0].startswith("measuring 4 variants of slow under CrypTen")
    assert len(stderr.splitlines()) == 2 and stderr.splitlines()[1].startswith("pibench: error: ")
    for p in [victim, *others]:
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE, p
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_bad_rendezvous_is_a_clear_error(tmp_path):
    suite = write_suite(tmp_path, "model: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm]\n")
    proc = run_cli("party", "--rank", "0", "--rendezvous", "127.0.0.1:80", str(suite))
    assert (proc.returncode, proc.stderr) == (
        2,
        "pibench: error: --rendezvous '127.0.0.1:80' is not of the form tcp://HOST:PORT (or one per rank, comma-separated)\n",
    )
