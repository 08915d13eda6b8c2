"""The CrypTen runner on tiny models: measurements, sampling, accuracy, records."""

from __future__ import annotations

import json
import re

import pytest

from pibench.counting.sampling import layer_sample
from pibench.models.opkinds import KINDS
from pibench.models.variants import VARIANTS, resolve
from pibench.results.records import SCHEMA_VERSION
from tests.conftest import run_cli, write_suite

ALL = ", ".join(VARIANTS.names())


@pytest.fixture(scope="module")
def all_variants(tmp_path_factory):
    """Every registered variant at L=2, H=2, d=32, T=8, run once for the tests below."""
    tmp = tmp_path_factory.mktemp("all")
    suite = write_suite(tmp, f"name: tiny\nmodel: {{L: 2, H: 2, d: 32, T: 8}}\nvariants: [{ALL}]\n")
    proc = run_cli("run", str(suite), "--out", str(tmp / "rec.json"), "--no-progress", timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads((tmp / "rec.json").read_text())


def test_record_holds_every_setting(all_variants):
    _, rec = all_variants
    assert rec["schema_version"] == SCHEMA_VERSION and rec["kind"] == "pibench.run"
    assert rec["backend"]["settings"]["provider"] == "TFP"
    assert rec["backend"]["settings"]["functions"]["exp_iterations"] == 8  # CrypTen's default, recorded
    assert rec["suite"]["dims"] == {"L": 2, "H": 2, "d": 32, "T": 8}
    assert rec["environment"]["packages"]["crypten"] == "0.4.1"
    assert rec["run"]["network"] == "loopback" and rec["run"]["full"] is False
    assert [v["name"] for v in rec["variants"]] == VARIANTS.names()


def test_record_names_the_commit_and_the_measuring_code(all_variants):
    """The record names the commit of the checkout pibench ran from (once `git: null` for every record,
    the checkout looked for one folder too deep), whether tracked files differed from it, and a digest
    of the measuring code's source."""
    import subprocess

    from pibench.util.machine import code_digest
    from tests.conftest import ROOT

    _, rec = all_variants
    git = rec["environment"]["git"]
    assert rec["environment"]["code"] == code_digest() and len(code_digest()) == 64
    if not (ROOT / ".git").exists():  # a copy of the tree without git: what its build wrote, if anything
        assert git is None or git["source"] == "build"
        return
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert git == {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()), "source": "checkout"}


def test_counts_add_up(all_variants):
    _, rec = all_variants
    for v in rec["variants"]:
        m = v["measured"]
        p0, p1 = m["parties"]
        # total bytes: what both parties sent; what one sends the other receives
        assert m["bytes"] == p0["sent"] + p1["sent"] > 0
        assert (p0["sent"], p0["received"]) == (p1["received"], p1["sent"])
        # our meter agrees with CrypTen's own counters (CrypTen counts sent + received per party)
        for p in (p0, p1):
            assert p["sent"] + p["received"] == p["counters"]["crypten_bytes"] == p["counters"]["metered_bytes"]
            assert p["rounds"] == p["counters"]["crypten_rounds"] == p["counters"]["metered_rounds"]
            assert p["peak_rss_bytes"] > 10 * 2**20
        assert sum(k["bytes"] for k in m["by_kind"].values()) == m["bytes"]
        assert sum(k["rounds"] for k in m["by_kind"].values()) == m["rounds"]
        assert set(m["by_kind"]) == set(KINDS)


def test_operation_breakdown_follows_the_architecture(all_variants):
    _, rec = all_variants
    kinds = {v["name"]: {k for k, c in v["measured"]["by_kind"].items() if c["bytes"]} for v in rec["variants"]}
    assert kinds["sm_ln_g"] == {"softmax", "layernorm", "gelu", "linear", "attn_matmul"}
    assert kinds["sm_ln_r"] == {"softmax", "layernorm", "relu", "linear", "attn_matmul"}
    assert kinds["sm"] == {"softmax", "linear", "attn_matmul"}
    # secret x secret products: the residual scalars of scaled FFNs, shaped attention's coefficients
    assert kinds["sm_scfuffn"] == {"softmax", "linear", "attn_matmul", "other"}
    # per layer: Q, K, V in one product, O, 2 FFN products = 4 linear rounds; Q K^T and A V = 2 attention
    base = next(v for v in rec["variants"] if v["name"] == "sm_ln_g")["measured"]["by_kind"]
    assert (base["linear"]["rounds"], base["attn_matmul"]["rounds"]) == (2 * 4, 2 * 2)
    # a Beaver product opens both masked operands, 8 bytes per element from each party: the fused
    # (8, 32) x (32, 96) QKV product moves 16 * (256 + 3072) bytes, O 16 * (256 + 1024), FFN in
    # 16 * (256 + 4096), out 16 * (1024 + 4096), per layer (the bias adds are local):
    # 16 * (3328 + 1280 + 4352 + 5120) = 225,280 bytes, 2 layers: 450,560
    assert base["linear"]["bytes"] == 450_560


# Error bound, with 16 fraction bits (resolution 2^-16 ~ 1.5e-5). Hidden states stay O(1): unit-variance
# input, 0.02-scaled weights. Error comes from CrypTen's approximations, each accurate to about 1e-3
# relative on these ranges: exp as (1+x/256)^256 on max-subtracted scores, Newton reciprocal and
# inverse square root, tanh through a reciprocal-based sigmoid. In pre-LN variants the residual stream
# carries the input exactly and the approximated branches are scaled down by the small weights
# (observed ~1e-4). In He & Hofmann's block the stream *is* the input LayerNorm's output (values up to
# ~4) times shaped attention, so the inverse square root's ~2e-3 relative error shows almost in full
# (observed up to ~7e-3 over two layers). 2e-2 bounds both with a margin of about 3x.
ERROR_BOUND = 2e-2


def test_mpc_output_matches_plaintext(all_variants):
    _, rec = all_variants
    errors = {v["name"]: v["measured"]["max_abs_error"] for v in rec["variants"]}
    assert all(0 < e < ERROR_BOUND for e in errors.values()), errors
    assert all(v["measured"]["usable"] for v in rec["variants"])
    base = next(v for v in rec["variants"] if v["name"] == "sm_ln_g")["measured"]
    # the error covers what ran, and says so: both layers of sm_ln_g are of one kind, so one was run
    assert base["layers_measured"] == {"0": 2}
    assert base["error_scope"] == "the input stage and layer 0 (one per layer kind) applied in turn, not all 2 layers"


def test_run_prints_savings_against_the_baseline(all_variants):
    proc, rec = all_variants
    lines = proc.stdout.splitlines()
    subs = re.split(r"\s{2,}", next(ln for ln in lines if ln.startswith("Network Arch.")).strip())
    # nothing is published at this size, so the default view (120 columns) leaves those groups out
    assert subs == ["Network Arch.", "CrypTen", "CrypTen", "CrypTen", "CrypTen", "lan proj.", "paper-wan proj."]
    rows = {c[0]: c for c in (re.split(r"\s{2,}", ln.strip()) for ln in lines) if len(c) == len(subs)}
    assert rows["SM + LN + G"][3:5] == ["1.00×", "1.00×"]  # savings of the baseline against itself
    b, r = (next(v for v in rec["variants"] if v["name"] == n)["measured"]["bytes"] for n in ("sm_ln_g", "sm_ln_r"))
    assert rows["SM + LN + R"][3] == f"{b / r:.2f}×" and rows["SM + LN + R"][1] == f"{r / 1e6:.2f}"  # MB: a small suite


SAMPLING = """
name: sampling
model: {L: 4, H: 2, d: 16, T: 4}
variants:
  - sm_ln_g
  - variant: sm_scfuffn_pruned
    overrides: {ffn_blocks_kept: 1}
  - variant: sm_ln_r
    overrides: {activation_blocks: 3}
  - hehofmann_scffn
"""


def test_sampled_bytes_and_rounds_equal_the_full_run(tmp_path):
    suite = write_suite(tmp_path, SAMPLING)
    recs = {}
    for mode in ("sampled", "full"):
        # one timed pass: counts are what this test compares (and CrypTen's are the same every pass)
        args = ["run", str(suite), "--out", str(tmp_path / f"{mode}.json"), "--no-progress", "--repeats", "1"]
        proc = run_cli(*args, *(["--full"] if mode == "full" else []), timeout=300)
        assert proc.returncode == 0, proc.stderr
        recs[mode] = json.loads((tmp_path / f"{mode}.json").read_text())
    for s, f in zip(recs["sampled"]["variants"], recs["full"]["variants"], strict=True):
        sm, fm = s["measured"], f["measured"]
        assert (sm["bytes"], sm["rounds"]) == (fm["bytes"], fm["rounds"]), s["name"]
        for kind in KINDS:
            assert sm["by_kind"][kind]["bytes"] == fm["by_kind"][kind]["bytes"]
        assert sum(sm["layers_measured"].values()) == 4 and len(fm["layers_measured"]) == 4
    # the pruned variant's sample is one layer with an FFN and one without, standing for 1 and 3
    pruned = recs["sampled"]["variants"][1]["measured"]["layers_measured"]
    assert pruned == {"0": 1, "1": 3}
    assert layer_sample(resolve("sm_ln_r", {"L": 4, "H": 2, "d": 16, "T": 4}, {"activation_blocks": 3})) == {0: 3, 3: 1}


def test_heads_are_batched(tmp_path):
    rounds = []
    for H in (1, 4):
        suite = write_suite(tmp_path, f"model: {{L: 1, H: {H}, d: 16, T: 4}}\nvariants: [sm_ln_g]\n", f"h{H}.yaml")
        proc = run_cli("run", str(suite), "--out", str(tmp_path / f"h{H}.json"), "--no-progress", "--repeats", "1")
        assert proc.returncode == 0, proc.stderr
        rounds.append(json.loads((tmp_path / f"h{H}.json").read_text())["variants"][0]["measured"]["rounds"])
    assert rounds[0] == rounds[1]


def test_settings_reach_crypten(tmp_path, all_variants):
    _, default = all_variants
    suite = write_suite(
        tmp_path,
        "model: {L: 2, H: 2, d: 32, T: 8}\nvariants: [sm_ln_g]\n"
        "crypten: {gelu: erf, precision_bits: 12, functions: {exp_iterations: 4}}\n",
    )
    proc = run_cli("run", str(suite), "--out", str(tmp_path / "r.json"), "--no-progress", timeout=120)
    # exp(x) ~ (1 + x/16)^16 with 4 iterations: the causal mask's -40 becomes (1 - 40/16)^16 ~ 656 instead
    # of ~0, so every masked score counts and the output is garbage. The run still measures the
    # protocol's costs: the record is written and flagged, the table says so, and the exit code is 3.
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("pibench: error: unusable MPC output: sm_ln_g (max error ")
    assert "SM + LN + G (unusable output)" in proc.stdout and "UNUSABLE output" in proc.stdout
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["variants"][0]["measured"]["usable"] is False and rec["run"]["accepted_unusable"] is False
    settings = rec["backend"]["settings"]
    assert (settings["gelu"], settings["precision_bits"], settings["functions"]["exp_iterations"]) == ("erf", 12, 4)
    mine = rec["variants"][0]["measured"]["by_kind"]
    base = next(v for v in default["variants"] if v["name"] == "sm_ln_g")["measured"]["by_kind"]
    # exp as (1 + x/2^n)^(2^n) squares n times, one round each: 8 -> 4 iterations saves 4 rounds
    # per exp. A softmax has two: the numerator, and the initial guess 3 exp(1 - 2x) + 0.003 of its
    # Newton reciprocal. One softmax (batched over heads) per layer, 2 layers: 2 * 2 * 4 = 16 rounds
    assert base["softmax"]["rounds"] - mine["softmax"]["rounds"] == 16
    # the erf form replaces tanh's reciprocal with a Taylor series: a different exchange pattern
    assert mine["gelu"]["rounds"] != base["gelu"]["rounds"]
    # LayerNorm's inverse square root starts from an exp too; the matrix products are untouched
    assert mine["layernorm"]["rounds"] < base["layernorm"]["rounds"]
    assert mine["linear"]["bytes"] == base["linear"]["bytes"]
    assert mine["attn_matmul"]["bytes"] == base["attn_matmul"]["bytes"]
    accepted = run_cli("run", str(suite), "--out", str(tmp_path / "a.json"), "--no-progress", "--accept-unusable")
    assert accepted.returncode == 0 and json.loads((tmp_path / "a.json").read_text())["run"]["accepted_unusable"]


def test_records_of_another_schema_version_are_refused(tmp_path, all_variants):
    from pibench.results.records import read_record, validate_record, write_record
    from pibench.util.errors import PibenchError

    _, rec = all_variants
    # what the file holds reads back as the same typed record
    assert read_record(write_record(tmp_path / "ok.json", rec)).model_dump() == validate_record(rec, "x").model_dump()
    old = write_record(tmp_path / "old.json", {**rec, "schema_version": 0})
    with pytest.raises(PibenchError, match="schema_version 0; it reads versions 2 to 3; rerun the suite"):
        read_record(old)
    newer = write_record(tmp_path / "newer.json", {**rec, "schema_version": 4})
    with pytest.raises(PibenchError, match=r"made by a newer pibench \(record schema 4\); this one reads schema 3 and"):
        read_record(newer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newer.json", "ok.json", "old.json"]  # no temporary files


def test_a_schema_2_record_is_migrated_on_load(tmp_path, all_variants):
    """Schema 3 added each variant's prompt and the measuring code's digest; a schema-2 record (as every
    record made before it) opens with both None, the file itself unchanged, and re-opens in report,
    compare and gate."""
    from pibench.results.records import read_record, write_record

    _, rec = all_variants
    v2 = json.loads(json.dumps(rec)) | {"schema_version": 2}
    del v2["environment"]["code"]
    del v2["run"]["warm_parties"]
    for variant in v2["variants"]:
        del variant["measured"]["prompt"]
    path = write_record(tmp_path / "v2.json", v2)
    record = read_record(path)
    assert record.schema_version == 3 and record.environment.code is None and not record.run.warm_parties
    assert all(v.measured.prompt is None for v in record.variants)
    assert json.loads(path.read_text())["schema_version"] == 2  # read, not rewritten
    for command in (["report", str(path)], ["compare", str(path), str(path)], ["gate", str(path), str(path)]):
        proc = run_cli(*command)
        assert proc.returncode == 0, (command, proc.stderr)


def test_runs_are_reproducible(tmp_path):
    """CrypTen's generators are seeded from the suite's seed: the same shares, triples and output, so
    the same MPC error to the last bit, run after run (and a different seed, different shares)."""
    errors = []
    for n, seed in enumerate((0, 0, 7)):
        suite = write_suite(
            tmp_path, f"model: {{L: 2, H: 2, d: 16, T: 4}}\nvariants: [sm_ln_g, sm]\nseed: {seed}\n", f"s{n}.yaml"
        )
        proc = run_cli(
            "run", str(suite), "--out", str(tmp_path / f"r{n}.json"), "--no-progress", "--repeats", "1", timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        errors.append(
            [v["measured"]["max_abs_error"] for v in json.loads((tmp_path / f"r{n}.json").read_text())["variants"]]
        )
    assert errors[0] == errors[1] and errors[0] != errors[2]


def test_repeated_steps_give_a_median_and_a_spread(all_variants, tmp_path):
    _, rec = all_variants
    m = next(v for v in rec["variants"] if v["name"] == "sm_ln_g")["measured"]
    # CrypTen's default: every step three times; the median pass, between the fastest and slowest
    assert m["repeats"] == 3 and all(s["passes"] == 3 for s in m["parties"][0]["steps"])
    assert 0 < m["wall_s_min"] <= m["wall_s"] <= m["wall_s_max"]
    assert m["comm_s_min"] <= m["comm_s_max"]
    suite = write_suite(tmp_path, "model: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm]\n")
    proc = run_cli("run", str(suite), "--repeats", "1", "--out", str(tmp_path / "r.json"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    # what is about to run, once; the suite's name and dimensions head the table only (once printed twice)
    assert (
        proc.stderr.splitlines()[0]
        == "measuring 1 variant of s under CrypTen (one layer per layer kind, 1 timed pass per step)"
    )
    assert (proc.stdout + proc.stderr).count("(L=1, H=2, d=16, T=4)") == 1
    one = json.loads((tmp_path / "r.json").read_text())["variants"][0]["measured"]
    assert one["repeats"] == 1 and one["wall_s_min"] == one["wall_s"] == one["wall_s_max"]


def test_passes_are_interleaved_and_rerun_the_first_pass_inputs(monkeypatch):
    """Three passes over three steps run as s0 s1 s2, s0 s1 s2, s0 s1 s2; later passes see the input each
    step had in the first pass; the walk goes on from the first pass's output; each step keeps its
    median pass with the fastest and slowest beside it."""
    from pibench.backends.base import StepCounts
    from pibench.measuring import party as measure

    monkeypatch.setattr(measure, "_run", lambda ops, w, h, cfg, index, cache=None: f"{h}>{index}")
    seconds = iter([3.0, 1.0, 5.0, 1.0, 2.0, 6.0, 2.0, 3.0, 4.0])  # pass by pass: s0 s1 s2, ...
    calls = []

    class Session:
        def measure(self, step, weights, x):
            calls.append(x)
            counts = StepCounts()
            counts.by_kind["linear"].sent, counts.wall_s = 10, next(seconds)
            return f"{step(None, weights, x)}#{len(calls)}", counts  # passes differ in their output

    steps = [("input stage", 1, None), ("layer 0", 1, 0), ("layer 1", 2, 1)]
    events = []
    opts = measure.PartyOptions(rank=0, rendezvous=None, suite=None, repeats=3)
    walked, medians = measure._timed_walk(Session(), {}, "x", None, steps, opts, events.append, "v")
    first = ["x", "x>None#1", "x>None#1>0#2"]  # each step's input in the first pass, then its output
    assert calls == first * 3 and walked == [*first, "x>None#1>0#2>1#3"]
    # s0 took 3, 1, 2 s: median 2, spread [1, 3]; s1 1, 2, 3 -> 2 [1, 3]; s2 5, 6, 4 -> 5 [4, 6]
    assert [(c.wall_s, c.spread["wall_s_min"], c.spread["wall_s_max"]) for c in medians] == [
        (2.0, 1.0, 3.0),
        (2.0, 1.0, 3.0),
        (5.0, 4.0, 6.0),
    ]
    assert [(e["step"], e["pass"]) for e in events[:4]] == [
        ("input stage", 1),
        ("layer 0", 1),
        ("layer 1", 1),
        ("input stage", 2),
    ]
    # a pass that moved other bytes is an error for a backend whose counts are deterministic
    odd = [StepCounts(), StepCounts()]
    odd[1].by_kind["linear"].sent = 1
    with pytest.raises(RuntimeError, match="layer 3: two passes moved different bytes or rounds"):
        measure._median_pass("layer 3", odd, exact=True)
    assert measure._median_pass("layer 3", odd, exact=False).spread["wall_s_max"] == 0.0


def test_record_line_follows_the_table_in_one_stream(tmp_path):
    """Table (stdout) and "record: PATH" (stderr) sent to one pipe, as under tox or `2>&1 | tee`: the
    table comes first, whole."""
    import subprocess
    import sys

    from tests.conftest import BASE_ENV, ROOT

    suite = write_suite(tmp_path, "model: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm]\n")
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "pibench", "run", str(suite), "--repeats", "1", "--no-progress", "--out", str(out)]
    # the environment as run_cli passes it (os.environ, not what a C library may have set beneath it),
    # with stdout buffered as Python buffers a pipe by default
    env = {k: v for k, v in BASE_ENV.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout
    table = run_cli("report", str(out)).stdout  # what the run printed on stdout
    assert "SM" in table and proc.stdout.endswith(f"\n{table}record: {out}\n")
