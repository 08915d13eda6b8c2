"""Network profiles and the latency projection; emulated links between two network namespaces."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from pibench.counting.network import PROFILES, parse_profile, project
from pibench.measuring.emulate import PREFIX, EmulatedLink, echo_rtt
from pibench.util.errors import PibenchError
from tests.conftest import ROOT, party_processes, run_cli, write_suite


def test_profiles():
    assert (PROFILES["paper-wan"].bandwidth_bps, PROFILES["paper-wan"].rtt_s) == (100e6, 0.08)
    custom = parse_profile("50mbit,100ms")
    assert (custom.bandwidth_bps, custom.rtt_s) == (50e6, 0.1)
    assert parse_profile("1.5gbit, 250us").rtt_s == pytest.approx(250e-6)
    with pytest.raises(PibenchError, match="network profile 'fast' is neither one of loopback, lan, wan, paper-wan"):
        parse_profile("fast")


def test_projection_by_hand():
    # 10 s loopback wall, 2 s of it in exchanges; 1000 rounds; 1e8 bytes sent by the busier party.
    # paper-wan: wire = 1e8 * 8 * 1500/1448 / 1e8 = 8.287 s; 8 + max(2, 8.287) + 1000 * 0.08 = 96.287 s
    assert project(10.0, 2.0, 1000, 10**8, PROFILES["paper-wan"]) == pytest.approx(96.287, abs=1e-3)
    # lan: wire 0.8287 s < 2 s of exchange CPU: 8 + 2 + 1000 * 0.0005 = 10.5 s
    assert project(10.0, 2.0, 1000, 10**8, PROFILES["lan"]) == pytest.approx(10.5)
    assert project(10.0, 2.0, 1000, 10**8, PROFILES["loopback"]) == 10.0
    # SPU: 1000 messages sent by both parties at once wait 0.55 RTT each (measured, docs/networks.md):
    # 8 + 8.287 + 1000 * 0.55 * 0.08 = 60.287 s
    from pibench.backends import BACKENDS

    spu = BACKENDS.get("spu").rtt_per_round
    assert spu == 0.55 and BACKENDS.get("crypten").rtt_per_round == 1.0
    assert project(10.0, 2.0, 1000 * spu, 10**8, PROFILES["paper-wan"]) == pytest.approx(60.287, abs=1e-3)


def test_suite_network_section(tmp_path):
    bad = write_suite(tmp_path, "model: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm]\nnetwork:\n  project: [lan, warp]\n")
    proc = run_cli("cost", str(bad))
    assert proc.returncode == 2 and proc.stderr.startswith(
        f"pibench: error: {bad}:4: network.project[1]: network profile 'warp'"
    )


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"), reason="needs root, ip and tc"
)
TINY = "name: tiny\nmodel: {L: 2, H: 2, d: 32, T: 8}\nvariants: [sm_ln_g, sm_scfuffn]\n"


def our_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(PREFIX)]


@needs_root
def test_parties_in_two_namespaces_over_a_shaped_link(tmp_path):
    suite = write_suite(tmp_path, TINY)
    emulated = run_cli(
        "run", str(suite), "--emulate", "200mbit,10ms", "--out", str(tmp_path / "e.json"), "--no-progress", timeout=180
    )
    assert emulated.returncode == 0, emulated.stderr
    assert "emulated (bandwidth" in emulated.stderr  # says at run time what is emulated
    rec = json.loads((tmp_path / "e.json").read_text())
    # each party's address in its namespace (CrypTen uses rank 0's, SPU both)
    assert rec["run"]["rendezvous"] == "tcp://10.77.0.1:29500,tcp://10.77.0.2:29500"
    assert rec["run"]["emulated"] == "200mbit,10ms"
    assert "between two network namespaces" in rec["run"]["network"]
    loop = run_cli("run", str(suite), "--out", str(tmp_path / "l.json"), "--no-progress", timeout=180)
    assert loop.returncode == 0, loop.stderr
    for e, lp in zip(rec["variants"], json.loads((tmp_path / "l.json").read_text())["variants"], strict=True):
        assert (e["measured"]["bytes"], e["measured"]["rounds"]) == (lp["measured"]["bytes"], lp["measured"]["rounds"])
    assert our_namespaces() == []


@needs_root
@pytest.mark.parametrize("how", ["party dies", "runner terminated", "router dies"])
def test_namespaces_are_removed_after_a_failed_run(tmp_path, how):
    """Whichever way a run over an emulated link fails, its namespaces and processes are gone after it;
    a delay router killed mid-run is named as what failed (it was once reported as both parties hung)."""
    suite = write_suite(tmp_path, "name: slow\nmodel: {L: 8, H: 2, d: 64, T: 16}\nvariants: [sm_ln_g, sm_ln_r]\n")
    out = tmp_path / "r.json"
    cmd = [
        sys.executable,
        "-m",
        "pibench",
        "run",
        str(suite),
        "--emulate",
        "100mbit,1ms",
        "--full",
        "--no-progress",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        parties = []
        while time.monotonic() < deadline and len(parties) < 2:
            parties = list(party_processes(proc.pid).values())
            time.sleep(0.2)
        assert len(parties) == 2 and len(our_namespaces()) == 2
        time.sleep(3)
        routers = [
            p for p in psutil.Process(proc.pid).children(recursive=True) if "delay_router" in " ".join(p.cmdline())
        ]
        if how == "party dies":
            party_processes(proc.pid)[1].kill()
        elif how == "router dies":
            if not routers:
                pytest.skip("this kernel has netem: no delay router to kill")
            routers[0].kill()
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert our_namespaces() == []
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in parties)
    assert not out.exists()
    if how == "router dies":
        last = err.strip().splitlines()[-1]
        assert last.startswith("pibench: error: the emulated link's delay router (PID ") and "hung" not in err, err
        assert "cutting the parties' link; the run was stopped and no record written" in err


needs_tun = pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="no /dev/net/tun")


@needs_root
@needs_tun
@pytest.mark.parametrize("rtt_ms", [10, 40, 80])
def test_the_emulated_link_adds_the_profiles_round_trip_time(rtt_ms):
    """A timed TCP echo across the link takes the profile's RTT within 10% (netem where the kernel has
    it, else the userspace delay router, holding each direction RTT/2), and nothing of the link is
    left once it is closed: no namespace, no router process."""
    with EmulatedLink(parse_profile(f"1gbit,{rtt_ms}ms")) as link:
        assert link.delay and link.mechanism in ("netem", "delay router")
        assert ("RTT by netem" if link.mechanism == "netem" else "userspace delay router") in link.describe()
        router = psutil.Process(link.router.pid) if link.router else None
        rtt = echo_rtt(link)
    assert rtt == pytest.approx(rtt_ms / 1e3, rel=0.1)
    assert our_namespaces() == []
    assert router is None or not router.is_running() or router.status() == psutil.STATUS_ZOMBIE


@needs_root
@needs_tun
def test_a_router_whose_runner_was_killed_exits_by_itself():
    """SIGKILL leaves no `finally` to run: the router sees its parent gone and exits within seconds;
    the next link removes the dead runner's namespaces."""
    code = (
        "import time\nfrom pibench.counting.network import parse_profile\n"
        "from pibench.measuring.emulate import EmulatedLink\n"
        "link = EmulatedLink(parse_profile('1gbit,10ms')).__enter__()\n"
        "print(link.router.pid if link.router else 0, flush=True)\ntime.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(holder.stdout.readline())
        if not pid:
            pytest.skip("this kernel has netem: no router to leave behind")
        holder.kill()
        holder.wait(timeout=10)
        router = psutil.Process(pid)
        router.wait(timeout=10)  # psutil.TimeoutExpired fails the test
    finally:
        if holder.poll() is None:
            holder.kill()
    with EmulatedLink(parse_profile("1gbit,0ms")):
        pass
    assert our_namespaces() == []


def test_emulation_without_privileges_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PibenchError, match=r"^--emulate needs root and the `ip` and `tc` commands"):
        with EmulatedLink(parse_profile("lan")):
            pass
    with pytest.raises(PibenchError, match="needs a link profile"):
        with EmulatedLink(parse_profile("loopback")):
            pass


@needs_root
def test_spu_parties_over_a_shaped_link(tmp_path):
    pytest.importorskip("spu")
    suite = write_suite(tmp_path, "name: tiny\nmodel: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm_scfuffn]\n")
    args = ["--backend", "spu", "--no-progress", "--timeout", "120"]
    emulated = run_cli(
        "run", str(suite), "--emulate", "200mbit,10ms", "--out", str(tmp_path / "e.json"), *args, timeout=300
    )
    assert emulated.returncode == 0, emulated.stderr
    rec = json.loads((tmp_path / "e.json").read_text())
    assert rec["backend"]["name"] == "spu" and "between two network namespaces" in rec["run"]["network"]
    m = rec["variants"][0]["measured"]
    p0, p1 = m["parties"]
    assert (p0["sent"], p0["received"]) == (p1["received"], p1["sent"]) and m["usable"]
    assert our_namespaces() == []


def test_crypten_round_trips_by_hand():
    """Timed across an emulated 40 ms link (docs/networks.md): gloo's all_reduce of 1 or 2 elements took
    41-43 ms, of 3 or more 83-87 ms (a reduce-scatter and an all-gather step); a broadcast, an all_gather,
    a send answered by a recv and a barrier 41-50 ms."""
    import torch

    from pibench.backends.crypten.meter import round_trips

    assert round_trips("all_reduce", (torch.zeros(2, dtype=torch.long),)) == 1
    assert round_trips("all_reduce", (torch.zeros(3, 4, dtype=torch.long),)) == 2
    assert round_trips("broadcast", (torch.zeros(1000), 0)) == 1
    assert round_trips("send", (torch.zeros(1000), 1)) == 1


def test_projections_multiply_round_trips_by_the_rtt(tmp_path):
    """A CrypTen record counts each kind's round trips (between its rounds and twice them); a paper-wan
    projection is (wall - exchange) + max(exchange CPU, wire) + round trips x 80 ms; a record without them (an
    older one) projects rounds x RTT as before."""
    from pibench.measuring.measured import KindTotals, latency_rounds
    from pibench.results.records import read_record
    from pibench.results.report import projected_s

    suite = write_suite(tmp_path, "model: {L: 1, H: 2, d: 16, T: 4}\nrepeats: 1\nvariants: [sm_ln_g]\n")
    proc = run_cli("run", str(suite), "--out", str(tmp_path / "r.json"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    m = read_record(tmp_path / "r.json").variants[0].measured
    for k in m.by_kind.values():
        assert k.rounds <= k.round_trips <= 2 * k.rounds
    assert m.latency_rounds == sum(k.round_trips for k in m.by_kind.values()) > m.rounds
    wire = max(p.sent for p in m.parties) * 8 * 1500 / 1448 / 100e6
    by_hand = m.wall_s - m.comm_s + max(m.comm_s, wire) + m.latency_rounds * 0.08
    assert projected_s(m, PROFILES["paper-wan"]) == pytest.approx(by_hand, rel=1e-9)
    old = {"linear": KindTotals(bytes=10, rounds=7, wall_s=0.0, comm_s=0.0)}
    assert latency_rounds(7, old) == 7
