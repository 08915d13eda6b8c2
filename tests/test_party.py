"""`pibench party`: both ranks through the two-host entry point on loopback; the TTP provider."""

from __future__ import annotations

import json

from pibench.util.procs import free_port
from tests.conftest import run_cli, run_parties, write_suite

TINY = "name: tiny\nmodel: {L: 2, H: 2, d: 16, T: 4}\nvariants: [sm_ln_g, sm_scfuffn]\n"


def test_two_ranks_through_the_party_entry_point(tmp_path):
    suite = write_suite(tmp_path, TINY)
    rendezvous = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "party.json"
    results = run_parties([suite, suite], rendezvous, "--repeats", "1", out=out, timeout=180)
    assert [r[0] for r in results] == [0, 0], results
    assert "SM + ScFuFFN" in results[0][1]  # rank 0 prints the table and writes the record
    party = json.loads(out.read_text())
    assert party["run"]["mode"] == "party" and party["run"]["rendezvous"] == rendezvous

    local = tmp_path / "local.json"
    proc = run_cli("run", str(suite), "--out", str(local), "--no-progress", "--repeats", "1", timeout=180)
    assert proc.returncode == 0, proc.stderr
    for a, b in zip(party["variants"], json.loads(local.read_text())["variants"], strict=True):
        assert (a["measured"]["bytes"], a["measured"]["rounds"]) == (b["measured"]["bytes"], b["measured"]["rounds"])


def test_ttp_provider_runs_a_third_process(tmp_path):
    suite = write_suite(tmp_path, TINY + "crypten: {provider: TTP}\n")
    tfp = write_suite(tmp_path, TINY, "tfp.yaml")
    recs = {}
    for name, path in (("ttp", suite), ("tfp", tfp)):
        proc = run_cli(
            "run", str(path), "--out", str(tmp_path / f"{name}.json"), "--no-progress", "--repeats", "1", timeout=180
        )
        assert proc.returncode == 0, proc.stderr
        recs[name] = json.loads((tmp_path / f"{name}.json").read_text())
    ttp = recs["ttp"]
    assert ttp["run"]["ranks"] == {"0": "server", "1": "client", "2": "TTP"}
    assert ttp["backend"]["settings"]["provider"] == "TTP" and recs["tfp"]["run"]["dealer"] is None
    # nothing is lost between the three processes: what the dealer sent, party 0 received, and back
    check = ttp["run"]["dealer"]
    assert check["dealer_sent"] == check["party0_received"] > 0
    assert check["dealer_received"] == check["party0_sent"] > 0
    for t, f in zip(ttp["variants"], recs["tfp"]["variants"], strict=True):
        tm, fm = t["measured"], f["measured"]
        p0, p1 = tm["parties"]
        # online, each party receives exactly what the other sent
        assert (p0["sent"], p0["received"]) == (p1["received"], p1["sent"])
        # a dealer changes where triples come from, not the online protocol: the same online bytes and
        # rounds as with locally made triples; the dealer's traffic (with party 0 only) is counted apart
        assert (tm["bytes"], tm["rounds"]) == (fm["bytes"], fm["rounds"])
        assert tm["dealer"]["bytes"] == p0["dealer"]["sent"] + p0["dealer"]["received"] > 0
        assert p1["dealer"] == {"sent": 0, "received": 0, "rounds": 0, "comm_s": 0.0, "wall_s": 0.0, "round_trips": 0}
        assert tm["max_abs_error"] < 2e-2
