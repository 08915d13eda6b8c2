"""What a run exposes and leaves behind: sockets only on loopback, the suite as validated (not as the
file reads later), the same suite on both hosts, and nothing left after the runner is killed."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from pibench.results.records import default_record_path, write_record
from pibench.util.procs import free_port, kill_tree
from tests.conftest import ROOT, SECRET, party_processes, run_parties, write_suite

# long enough to look at while it runs: 8 layers, every one measured
SLOW = "name: slow\nmodel: {L: 8, H: 2, d: 64, T: 16}\nvariants: [sm_ln_g, sm_ln_r]\n"


def _start_run(suite: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "pibench", "run", str(suite), "--out", str(out), "--no-progress", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_parties(pid: int, ranks: int = 2, deadline_s: float = 60) -> dict[int, psutil.Process]:
    """The parties once each has an established connection to another."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        found = party_processes(pid)
        try:
            if len(found) == ranks and all(
                any(c.status == psutil.CONN_ESTABLISHED for c in p.net_connections(kind="tcp")) for p in found.values()
            ):
                return found
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.1)
    raise AssertionError("the parties never connected")


def test_parties_listen_on_loopback_only(tmp_path):
    proc = _start_run(write_suite(tmp_path, SLOW), tmp_path / "r.json", "--full")
    try:
        parties = _wait_for_parties(proc.pid)
        listening = []
        for p in [psutil.Process(proc.pid), *parties.values()]:
            listening += [c.laddr for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        ss = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout  # as the issue checked it
    finally:
        kill_tree(proc.pid)
    assert listening, "rank 0 serves the store, gloo listens for pairs"
    assert all(ipaddress.ip_address(a.ip).is_loopback for a in listening), listening
    pids = {proc.pid, *(p.pid for p in parties.values())}
    mine = [ln for ln in ss.splitlines() if any(f"pid={pid}," in ln for pid in pids)]
    assert mine and all(ln.split()[3].startswith(("127.", "[::1]")) for ln in mine), mine


def test_the_parties_run_the_suite_as_validated(tmp_path):
    suite = write_suite(tmp_path, "name: edit\nmodel: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm]\n")
    out = tmp_path / "r.json"
    proc = _start_run(suite, out)
    try:
        assert proc.stderr.readline().startswith(
            "measuring 1 variant of edit"
        )  # loaded and validated: now edit the file
        suite.write_text("name: edit\nmodel: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm_ln_g]\n")
        _, err = proc.communicate(timeout=120)
    finally:
        kill_tree(proc.pid)
    assert proc.returncode == 0, err
    record = json.loads(out.read_text())
    assert [v["name"] for v in record["variants"]] == ["sm"]
    assert record["variants"][0]["measured"]["by_kind"]["layernorm"]["bytes"] == 0  # sm has no LayerNorm


def test_two_hosts_with_different_suites_stop(tmp_path):
    a = write_suite(tmp_path, "model: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm]\n", "a.yaml")
    b = write_suite(tmp_path, "model: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm]\nseed: 1\n", "b.yaml")
    rendezvous = f"tcp://127.0.0.1:{free_port()}"
    results = run_parties([a, b], rendezvous, "--timeout", "20", out=tmp_path / "r.json", timeout=90)
    names = {0: "party 0 (server)", 1: "party 1 (client)"}
    for rank, (code, _, err) in enumerate(results):
        assert code == 2, err
        assert err.startswith(f"pibench: error: {names[rank]}: {names[1 - rank]} runs something else: suite "), err
        assert err.endswith("give every host the same suite and options\n") and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()


def _pibench_temp_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("pibench-*")}


def test_killing_the_runner_ends_its_parties(tmp_path):
    before = _pibench_temp_folders()
    proc = _start_run(write_suite(tmp_path, SLOW), tmp_path / "r.json", "--full")
    try:
        parties = _wait_for_parties(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        gone, alive = psutil.wait_procs(list(parties.values()), timeout=5)
    finally:
        kill_tree(proc.pid)
        for p in parties.values():
            kill_tree(p.pid)
    assert alive == [] and len(gone) == 2  # the kernel ended them with their parent (PR_SET_PDEATHSIG)
    assert _pibench_temp_folders() == before  # and nothing was left on disk
    assert not (tmp_path / "r.json").exists()


def test_concurrent_runs_never_share_a_record_name(tmp_path):
    path = default_record_path("s", tmp_path)
    written = [write_record(path, {"n": n}, exclusive=True) for n in range(3)]
    assert [p.name for p in written] == [path.name, f"{path.stem}-2.json", f"{path.stem}-3.json"]
    assert [json.loads(p.read_text())["n"] for p in written] == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)  # no temporary files


PARTY = [sys.executable, "-m", "pibench", "party"]


def test_a_party_without_peer_gives_up_within_its_timeout(tmp_path):
    """Rank 0 with nobody joining, and rank 1 with nobody listening, side by side: each gives up in one
    line within its timeout (joining waits at least 15 s, start-up's grace), naming what it waited for."""
    suite = write_suite(tmp_path, "model: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm]\n")
    addresses = {rank: f"tcp://127.0.0.1:{free_port()}" for rank in (0, 1)}
    start = time.monotonic()
    procs = {
        rank: subprocess.Popen(
            [
                *PARTY,
                "--rank",
                str(rank),
                "--rendezvous",
                address,
                str(suite),
                "--timeout",
                "5",
                "--out",
                str(tmp_path / "r.json"),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PIBENCH_SECRET": SECRET},
        )
        for rank, address in addresses.items()
    }
    try:
        results = {rank: p.communicate(timeout=60) for rank, p in procs.items()}
    finally:
        for p in procs.values():
            kill_tree(p.pid)
    elapsed = time.monotonic() - start
    assert elapsed < 15 + 10  # the grace, plus start-up (not 84 s for a 60 s timeout)
    (_, err0), (_, err1) = results[0], results[1]
    host0, host1 = (a.removeprefix("tcp://") for a in (addresses[0], addresses[1]))
    assert err0 == (
        f"pibench: error: party 0 (server) could not join the others: party 1 (client) did not join at {host0} "
        "within 15 s\n"
    )
    assert (
        err1.startswith(
            f"pibench: error: party 1 (client) could not join the others: party 0 (server) at {host1} did not answer "
            "within 15 s"
        )
        and err1.count("\n") == 1
    )
    assert all(p.returncode == 2 for p in procs.values()) and not (tmp_path / "r.json").exists()


def test_free_ports_are_distinct_and_outside_the_ephemeral_range(monkeypatch):
    """Two SPU runs of a parallel test suite once died together: their parties' ports came from bind(0),
    which hands out ports just freed and shares its range with every outgoing connection. Ports are
    drawn below that range, and one call's are distinct and free."""
    import socket

    from pibench.util import procs

    start = procs.ephemeral_ports()[0]
    for _ in range(20):
        ports = procs.free_ports(3)
        assert len(set(ports)) == 3
        assert start <= 21000 or all(20000 <= p < start for p in ports)
        for p in ports:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p))  # free when handed out
    # where nothing below the range can be had, the kernel's choice
    monkeypatch.setattr(procs.socket.socket, "bind", _refuse_low(procs.socket.socket.bind))
    (port,) = procs.free_ports(1)
    assert start <= 21000 or port >= start


def _refuse_low(bind):
    def refusing(self, address):
        if address[1] != 0:
            raise OSError("taken")
        return bind(self, address)

    return refusing
