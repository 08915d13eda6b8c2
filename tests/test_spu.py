"""The SPU backend at tiny sizes: two real parties over SPU's own link, per-kind counts, sampling,
both backends in one report, failure, isolation."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from pibench.backends import BACKENDS
from pibench.models.opkinds import KINDS
from pibench.util.procs import kill_tree
from tests.conftest import ROOT, party_processes, run_cli, run_each, run_parties, write_suite

pytestmark = pytest.mark.skipif(importlib.util.find_spec("spu") is None, reason="spu is not installed here")

TINY = "name: tiny\nmodel: {L: 2, H: 2, d: 16, T: 4}\nvariants: [sm_ln_g, sm_ln_r, sm_scfuffn]\n"


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The tiny suite under SPU and under CrypTen."""
    tmp = tmp_path_factory.mktemp("spu")
    suite = write_suite(tmp, TINY)
    return suite, run_each(tmp, {b: (suite, ["--backend", b]) for b in ("spu", "crypten")})


def test_two_parties_count_every_kind(both):
    _, records = both
    _, rec = records["spu"]
    assert rec["backend"]["name"] == "spu" and rec["backend"]["settings"]["protocol"] == "CHEETAH"
    assert rec["backend"]["settings"]["weights"] == "private"
    for v in rec["variants"]:
        m = v["measured"]
        p0, p1 = m["parties"]
        # one link between the two: what one party sent, the other received; messages likewise
        assert (p0["sent"], p0["received"]) == (p1["received"], p1["sent"]) and m["bytes"] == p0["sent"] + p1["sent"]
        assert p0["counters"]["spu_send_actions"] == p1["counters"]["spu_recv_actions"] > 0
        assert set(m["by_kind"]) == set(KINDS)
        assert m["usable"] and m["max_abs_error"] < 1e-2  # 18 fraction bits
    kinds = {v["name"]: {k for k, c in v["measured"]["by_kind"].items() if c["bytes"]} for v in rec["variants"]}
    assert {"softmax", "layernorm", "gelu", "linear", "attn_matmul"} <= kinds["sm_ln_g"]
    assert "relu" in kinds["sm_ln_r"] and "gelu" not in kinds["sm_ln_r"]
    assert kinds["sm_scfuffn"].isdisjoint({"layernorm", "gelu", "relu"})


def test_both_backends_in_one_report_and_the_gate_says_not_comparable(both):
    _, records = both
    (crypten, _), (spu, _) = records["crypten"], records["spu"]
    proc = run_cli("report", str(crypten), str(spu), "--format", "markdown")  # one header line per column
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("tiny (L=2") == 1  # one table
    unit = re.search(r"Comm\. \((\w+)\) \[CrypTen\]", proc.stdout).group(1)  # scaled to the largest figure
    assert unit in ("kB", "MB") and f"Comm. ({unit}) [SPU]" in proc.stdout
    assert "[SPU]: measured by pibench: SPU 0.9.5 2PC (CHEETAH, FM64, 18 fraction bits" in proc.stdout
    gate = run_cli("gate", str(crypten), str(spu))
    assert gate.returncode == 2 and "backends differ (crypten vs spu)" in gate.stdout


SAMPLING = "name: s\nmodel: {L: 3, H: 2, d: 16, T: 4}\nvariants:\n  - variant: sm_scfuffn_pruned\n    overrides: {ffn_blocks_kept: 1}\n"


def test_sampled_is_close_to_full(tmp_path):
    suite = write_suite(tmp_path, SAMPLING)
    recs = {}
    for mode in ("sampled", "full"):
        out = tmp_path / f"{mode}.json"
        args = ["run", str(suite), "--backend", "spu", "--out", str(out), "--no-progress"]
        proc = run_cli(*args, *(["--full"] if mode == "full" else []), timeout=300)
        assert proc.returncode == 0, proc.stderr
        recs[mode] = json.loads(out.read_text())["variants"][0]["measured"]
    s, f = recs["sampled"], recs["full"]
    assert s["layers_measured"] == {"0": 1, "1": 2} and len(f["layers_measured"]) == 3
    # SPU's OT and HE engines refill buffers as they go, so a layer's bytes are not exactly the same
    # twice; extrapolating one layer per kind lands within 1% (observed: 0.01%)
    assert abs(s["bytes"] / f["bytes"] - 1) < 0.01


def test_a_dead_party_ends_the_run(tmp_path):
    suite = write_suite(tmp_path, "name: slow\nmodel: {L: 6, H: 2, d: 32, T: 8}\nvariants: [sm_ln_g, sm_ln_r]\n")
    out = tmp_path / "r.json"
    cmd = [
        sys.executable,
        "-m",
        "pibench",
        "run",
        str(suite),
        "--backend",
        "spu",
        "--out",
        str(out),
        "--no-progress",
        "--full",
        "--timeout",
        "20",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and len(party_processes(proc.pid)) < 2:
            time.sleep(0.2)
        parties = party_processes(proc.pid)
        listening = _listening(parties.values())
        time.sleep(3)  # joined and running
        start = time.monotonic()
        parties[1].send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - start
    finally:
        kill_tree(proc.pid)
    assert proc.returncode == 2 and elapsed < 60, err
    assert "party 1 (client) exited with code -9" in err and "Traceback" not in err
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in parties.values())
    assert not out.exists()
    # both parties listened (SPU's link), each on its own loopback address only
    assert listening and all(ipaddress.ip_address(a.ip).is_loopback for a in listening), listening


def _listening(parties) -> list:
    addresses = []
    end = time.monotonic() + 30
    while time.monotonic() < end and len(addresses) < 2:
        addresses = []
        for p in parties:
            try:
                addresses += [c.laddr for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.2)
    return addresses


def test_two_hosts_through_the_party_entry_point(tmp_path, both):
    suite, records = both
    from pibench.util.procs import free_port

    rendezvous = f"tcp://127.0.0.1:{free_port()},tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "party.json"
    results = run_parties([suite, suite], rendezvous, "--backend", "spu", "--timeout", "60", out=out)
    assert [r[0] for r in results] == [0, 0], results
    party = json.loads(out.read_text())
    assert party["run"]["mode"] == "party" and party["backend"]["name"] == "spu"
    local = records["spu"][1]
    for a, b in zip(party["variants"], local["variants"], strict=True):
        assert abs(a["measured"]["bytes"] / b["measured"]["bytes"] - 1) < 0.05


@pytest.mark.parametrize(
    "section, fragment",
    [
        ("spu: {field: FM32}", "spu.field: Input should be 'FM64' or 'FM128'"),
        ("spu: {fxp_fraction_bits: 100}", "spu.fxp_fraction_bits"),
        ("spu: {weights: public}", "spu.weights"),
        ("spu: {protocl: CHEETAH}", "unknown key 'protocl' (did you mean 'protocol'?)"),
    ],
)
def test_bad_spu_settings(tmp_path, section, fragment):
    suite = write_suite(tmp_path, TINY + section + "\n")
    proc = run_cli("run", str(suite), "--backend", "spu", "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and fragment in proc.stderr, proc.stderr
    assert re.match(r"pibench: error: .*s\.yaml:\d+: spu", proc.stderr)
    assert not (tmp_path / "r.json").exists()


def test_a_runs_refills_are_apart_from_the_call():
    """Party 0 as the sender of SPU's ferret OT extension refills its pool inside a ReLU of 64 x 768 (the
    figures are SPU's: 3,796,992 bytes sent and 1,044,480 received in 42 and 40 messages on its own; a
    refill is 532,518 bytes more in 2,562 more messages, one way). The run again, after the refill, moved
    the call's own; the first run's excess is the refill. Runs with as many messages each way refilled
    nothing: their bytes differ by a ciphertext's size, and the first is the call's own. Where the first
    two runs both refilled a batch of triples (1,143,000 bytes received in 4 more messages), a third that
    did not is the call's own, and the first run's refill is one batch."""
    from pibench.backends.spu.session import own_and_refills

    own = (3_796_992, 1_044_480, 42, 40)
    refilled = (3_796_992 + 532_518, 1_044_480, 42 + 2_562, 40)
    assert own_and_refills(refilled, [own]) == (own, (532_518, 0, 2_562, 0))
    assert own_and_refills(own, [refilled]) == (own, (0, 0, 0, 0))  # the run again refilled: nothing booked
    jittered = (1_182_813, 1_180_004, 72, 72)
    assert own_and_refills(jittered, [(1_182_515, 1_180_100, 72, 72)]) == (jittered, (0, 0, 0, 0))
    gelu = (1_298_000, 1_290_000, 72, 72)
    batch = (gelu[0], gelu[1] + 1_143_000, 72, 76)
    assert own_and_refills(batch, [batch, gelu]) == (gelu, (0, 1_143_000, 0, 4))


def test_refills_never_land_in_a_kind():
    """A LayerNorm of 8 x 64 run 30 times on two SPU op servers: SPU refilled a pool of triples (about
    1.1 MB in 4 messages) in about 2 of 5 such runs here (none in 30: under one in a million), and pibench
    books them apart: the call's own messages are the same in every run, its bytes within a ciphertext's
    jitter (0.5%), and the refills whole lumps of at least 0.5 MB or nothing."""
    from pibench.calibration.microbench import OpPair

    pair = OpPair("spu", BACKENDS.get("spu").default_settings())
    try:
        runs = [pair.run("layernorm", ((8, 64),)) for _ in range(30)]
    finally:
        pair.close()
    assert len({r["rounds"] for r in runs}) == 1
    assert max(r["bytes"] for r in runs) <= 1.005 * min(r["bytes"] for r in runs)
    refills = [r["refills"]["bytes"] for r in runs]
    assert any(refills) and all(b == 0 or b > 500_000 for b in refills), refills
