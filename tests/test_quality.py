"""The quality side: entropy and EReg by hand, perplexity of a known distribution, divergence,
determinism, and `pibench train` on a tiny suite (seconds)."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from pibench.models.variants import VARIANTS
from pibench.quality import entropy
from pibench.quality.ereg import ereg_penalty
from pibench.quality.train import _cross_entropy, learning_rate, train_variant
from pibench.suites.corpus import VOCAB, in_validation, load_corpus
from pibench.suites.train_section import TrainSettings
from tests.conftest import ROOT, run_cli, write_suite

TINY = {"L": 1, "H": 2, "d": 32, "T": 16}
QUICK = TrainSettings(tokens=16 * 4 * 6, batch=4, eval_batches=1, corpus_bytes=100_000)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(max_bytes=100_000)


def causal_uniform(T: int) -> torch.Tensor:
    """(1, 1, 1, T, T): row i spreads evenly over positions 0..i."""
    return (torch.ones(T, T).tril() / torch.arange(1, T + 1)[:, None])[None, None, None]


def test_entropy_of_uniform_and_one_hot_rows():
    uniform = causal_uniform(4)
    # rows attend to 1, 2, 3, 4 positions: entropies 0, ln 2, ln 3, ln 4 = 0, 0.6931, 1.0986, 1.3863
    assert torch.allclose(entropy.row_entropy(uniform)[0, 0, 0], torch.log(torch.arange(1.0, 5.0)), atol=1e-6)
    # the head's mean over rows: (0 + 0.6931 + 1.0986 + 1.3863) / 4 = 0.7945
    assert entropy.head_entropy(uniform).item() == pytest.approx(0.7945, abs=1e-4)
    assert entropy.head_fractions(uniform).item() == pytest.approx(1.0)  # each row at its maximum
    one_hot = torch.eye(4)[None, None, None]  # every row on its own position
    s = entropy.summary(torch.cat([uniform, uniform, one_hot, one_hot], dim=2))  # 4 heads: 2 uniform, 2 one-hot
    assert s["overload"] == 0.5 and s["collapse"] == 0.5
    assert list(s["quarter_shares"].values()) == [0.5, 0.0, 0.0, 0.5]


def test_perplexity_of_a_known_distribution():
    # uniform logits over 256 bytes: cross-entropy ln 256, perplexity 256
    targets = torch.randint(0, VOCAB, (2, 5))
    assert math.exp(_cross_entropy(torch.zeros(2, 5, VOCAB), targets).item()) == pytest.approx(256.0, rel=1e-5)
    # all mass on the right byte: perplexity 1
    sure = torch.full((2, 5, VOCAB), -1e4).scatter(-1, targets[..., None], 0.0)
    assert math.exp(_cross_entropy(sure, targets).item()) == pytest.approx(1.0)


def test_ereg_is_zero_inside_the_margin_and_positive_outside():
    T = 4
    spread = torch.full((1, 1, 1, T, T), 1 / T)  # every row uniform over T: entropy ln 4 = E_max = 1.3863
    # threshold 0.9 E_max: deviation 0.1 x 1.3863 = 0.139 within the margin 0.2 x 1.3863 = 0.277: no penalty
    assert ereg_penalty(spread, torch.tensor([[0.9]]), coefficient=1.0, margin=0.2).item() == 0.0
    # threshold 0.5 E_max: deviation 0.693 > 0.277; 4 rows x 0.693^2 = 1.9218, over 1 layer x 1 head
    assert ereg_penalty(spread, torch.tensor([[0.5]]), coefficient=1.0, margin=0.2).item() == pytest.approx(
        4 * (0.5 * math.log(4)) ** 2, rel=1e-5
    )
    assert ereg_penalty(spread, torch.tensor([[0.5]])).item() == pytest.approx(1e-5 * 4 * (0.5 * math.log(4)) ** 2)


def test_learning_rate_warms_up_then_decays():
    s = TrainSettings(lr=0.01, warmup=0.1, min_lr=0.1)
    # 100 steps: 10 of warm-up (0.001, 0.002, ... 0.01), then cosine from 0.01 to 0.001
    assert learning_rate(0, 100, s) == pytest.approx(0.001) and learning_rate(9, 100, s) == pytest.approx(0.01)
    assert learning_rate(10, 100, s) == pytest.approx(0.01) and learning_rate(100, 100, s) == pytest.approx(0.001)


def test_training_is_deterministic_and_learns(corpus):
    cfg = VARIANTS.get("sm_ln_g").config(TINY)
    a, b = (train_variant(cfg, False, corpus, QUICK) for _ in range(2))
    assert a.train_curve == b.train_curve and a.val_loss == b.val_loss
    assert a.diverged is None and a.steps == 6 and a.nan_count == 0
    assert a.train_curve[-1][1] < a.train_curve[0][1] < math.log(VOCAB) + 0.1  # it learns from ln 256
    assert a.entropy is not None and len(a.entropy.per_head_fraction) == 1 and len(a.entropy.per_head_fraction[0]) == 2


def test_divergence_is_reported(corpus):
    cfg = VARIANTS.get("sm").config(TINY)
    wild = TrainSettings(tokens=16 * 4 * 30, batch=4, eval_batches=1, lr=1.0, clip=1e6, blowup=1.5, warmup=0.0)
    out = train_variant(cfg, False, corpus, wild)
    assert out.diverged is not None and out.val_ppl is None and out.entropy is None
    assert out.diverged.step < 30


def test_corpus_is_split_by_file():
    assert in_validation("json/decoder.py") == in_validation("json/decoder.py")
    full = load_corpus()
    assert full.files[0] > 10 * full.files[1] > 0  # about 5% of the files validate
    assert len(full.train) > 1_000_000 and len(full.validation) > 50_000


def test_train_command_writes_a_record_and_goes_on_after_a_divergence(tmp_path):
    suite = write_suite(
        tmp_path,
        "name: tq\nmodel: {L: 1, H: 2, d: 32, T: 16}\n"
        "variants:\n  - variant: sm\n    train: {lr: 1.0, clip: 1000000.0, blowup: 1.5, warmup: 0.0}\n"
        "  - ereg_smt_scfuffn\n"
        "train: {tokens: 1920, batch: 4, eval_batches: 1, corpus_bytes: 100000}\n",
    )
    out = tmp_path / "q.json"
    proc = run_cli("train", str(suite), "--out", str(out), "--no-progress", timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["kind"] == "pibench.quality" and record["schema_version"] == 1
    assert [v["name"] for v in record["variants"]] == ["sm", "ereg_smt_scfuffn"]
    assert record["variants"][1]["ereg"] is True and record["corpus"]["tokens"].startswith("bytes")
    wild, calm = (v["quality"] for v in record["variants"])
    # lr 1.0 without clipping blows the first variant up; the second still trains and is evaluated
    assert wild["diverged"] is not None and wild["val_ppl"] is None and record["variants"][0]["train"]["lr"] == 1.0
    assert calm["diverged"] is None and calm["val_ppl"] < 256 and calm["steps_done"] == calm["steps"] == 30
    assert "diverged at step" in proc.stderr and "SM  " in proc.stdout


def test_bad_train_section_is_one_line(tmp_path):
    suite = write_suite(tmp_path, "model: {L: 1, H: 2, d: 32, T: 16}\nvariants: [sm]\ntrain: {tokns: 100}\n")
    proc = run_cli("train", str(suite))
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "pibench: error: " + str(suite) + ":3: train.tokns: unknown key 'tokns' (did you mean 'tokens'?)"
    )


def test_report_joins_measured_perplexity_and_plots(tmp_path):
    import pandas as pd

    suite = write_suite(
        tmp_path,
        "name: tq\nmodel: {L: 1, H: 2, d: 32, T: 16}\nvariants: [sm_ln_g, sm_ln_r]\n"
        "train: {tokens: 640, batch: 4, eval_batches: 1, corpus_bytes: 100000}\n",
    )
    quality = tmp_path / "q.json"
    assert run_cli("train", str(suite), "--out", str(quality), "--no-progress", timeout=300).returncode == 0
    ppl = {v["name"]: v["quality"]["val_ppl"] for v in json.loads(quality.read_text())["variants"]}
    run = ROOT / "docs" / "same_label.json"  # sm_ln_g, sm_ln_r and `half` (sm_ln_r, ReLU in layer 1 only)
    csv = run_cli("report", str(run), str(quality), "--format", "csv").stdout
    df = pd.read_csv(io.StringIO(csv)).set_index("variant")
    # matched by name and architecture, not size (trained at d=32, measured at d=32 here by chance)
    assert df.at["sm_ln_g", "ppl_measured"] == pytest.approx(ppl["sm_ln_g"])
    assert df.at["sm_ln_r", "ppl_measured"] == pytest.approx(ppl["sm_ln_r"]) and pd.isna(df.at["half", "ppl_measured"])
    table = run_cli("report", str(run), str(quality))
    assert table.returncode == 0, table.stderr
    assert "PPL [meas.]: validation perplexity per byte of the same architectures trained small (tq" in " ".join(
        table.stdout.split()
    )
    assert "PPL (per byte)" in table.stdout  # the quality record's own table follows
    plots = tmp_path / "plots"
    assert run_cli("report", str(run), str(quality), "--plot", str(plots)).returncode == 0
    names = {p.name for p in plots.iterdir() if p.suffix == ".png"}
    assert {"q-entropy_heatmap.png", "q-entropy_quarters.png", "q-train_curves.png", "q-ppl_vs_comm.png"} <= names


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_train_on_cuda_without_a_gpu_is_refused(tmp_path):
    suite = write_suite(tmp_path, "model: {L: 1, H: 2, d: 32, T: 16}\nvariants: [sm]\n")
    out = tmp_path / "q.json"
    proc = run_cli("train", str(suite), "--device", "cuda", "--out", str(out))
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip() == "pibench: error: --device cuda: this machine has no GPU that torch can use"


def test_report_of_a_quality_record_honours_every_format(tmp_path):
    """`pibench report QUALITY.json --format F` prints F (it once printed the terminal table for every
    format): csv and json are one tidy numeric frame, latex a booktabs table with a label, markdown a
    GitHub table; run-record options are refused in one line."""
    import csv as csv_module
    import io
    import json

    import pandas as pd

    from tests.conftest import ROOT, run_cli

    record = ROOT / "docs" / "quality_small.json"
    variants = json.loads(record.read_text())["variants"]
    out = {
        fmt: run_cli("report", str(record), "--format", fmt) for fmt in ("table", "csv", "json", "latex", "markdown")
    }
    assert all(p.returncode == 0 and p.stderr == "" for p in out.values())
    rows = list(csv_module.DictReader(io.StringIO(out["csv"].stdout)))
    assert [r["variant"] for r in rows] == [v["name"] for v in variants]
    frame = pd.read_csv(io.StringIO(out["csv"].stdout))
    assert frame["val_ppl"].dtype == float and frame["heads_share_q4"].dtype == float
    runs = [variants[0]["quality"], *variants[0]["other_seeds"]]  # the record's three seeds
    mean = sum(r["val_ppl"] for r in runs) / len(runs)  # (5.427 + 5.194 + 5.248) / 3 = 5.290
    assert len(runs) == 3 and frame.loc[0, "val_ppl"] == pytest.approx(mean, rel=1e-12)
    assert frame.loc[0, "train_s"] == pytest.approx(sum(r["wall_s"] for r in runs), rel=1e-12)
    # the shares of heads by quarter add up to 1 in every row
    quarters = frame[[f"heads_share_q{i}" for i in range(1, 5)]].sum(axis=1)
    assert (quarters.round(9) == 1.0).all()
    data = json.loads(out["json"].stdout)
    assert [d["variant"] for d in data] == list(frame["variant"]) and data[0]["val_ppl"] == pytest.approx(mean)
    latex = out["latex"].stdout
    assert (
        latex.startswith(r"\begin{table}")
        and r"\label{tab:quality-small-quality}" in latex  # a label of letters, digits and dashes
        # mean (5.427 + 5.194 + 5.248) / 3 = 5.290; sample std sqrt((0.137² + 0.096² + 0.042²) / 2) = 0.122
        and r"SM + LN + G & 5.290 $\pm$ 0.122" in latex
    )
    assert out["markdown"].stdout.startswith("| Network Arch.") and "Network Arch." in out["table"].stdout
    assert out["table"].stdout != out["csv"].stdout != out["markdown"].stdout
    refused = run_cli("report", str(record), "--columns", "comm")
    assert (refused.returncode, refused.stderr) == (
        2,
        f"pibench: error: --columns: applies to run records; {record} is a quality record\n",
    )


def test_trained_weights_are_kept_and_run_under_mpc(tmp_path):
    """`pibench train` saves each trained variant as a pibench checkpoint (safetensors, its config in the
    metadata) beside the record, which names the file and its SHA-256; `pibench run` of a suite at the
    same L, H, d with `weights: {checkpoint: ...}` runs those weights under CrypTen (scope: layers),
    and an end-to-end suite is refused in one line (the byte model's head is not the tied one)."""
    import hashlib

    suite = write_suite(
        tmp_path,
        "name: tq\nmodel: {L: 1, H: 2, d: 32, T: 16}\nvariants: [sm_ln_g]\n"
        "train: {tokens: 1920, batch: 4, eval_batches: 1, corpus_bytes: 100000}\n",
    )
    out = tmp_path / "q.json"
    proc = run_cli("train", str(suite), "--out", str(out), "--no-progress", timeout=300)
    assert proc.returncode == 0, proc.stderr
    saved = json.loads(out.read_text())["variants"][0]["quality"]["checkpoint"]
    path = tmp_path / "q-weights" / "sm_ln_g.safetensors"
    assert saved == {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    run = write_suite(
        tmp_path,
        f"model: {{L: 1, H: 2, d: 32, T: 8}}\nrepeats: 1\nweights: {{checkpoint: {path}}}\nvariants: [sm_ln_g]\n",
        "run.yaml",
    )
    proc = run_cli("run", str(run), "--out", str(tmp_path / "r.json"), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = json.loads((tmp_path / "r.json").read_text())["variants"][0]["measured"]
    assert measured["usable"] and measured["bytes"] > 0
    e2e = write_suite(
        tmp_path,
        f"model: {{L: 1, H: 2, d: 32, T: 8}}\nscope: end_to_end\nvocab: 256\nweights: {{checkpoint: {path}}}\n"
        "variants: [sm_ln_g]\n",
        "e2e.yaml",
    )
    proc = run_cli("run", str(e2e), "--out", str(tmp_path / "e.json"))
    assert proc.returncode == 2 and "has no weight 'wte'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
