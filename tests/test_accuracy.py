"""Accuracy under MPC on real text (`pibench.measuring.accuracy`): known models whose perplexity is
derived by hand, the plaintext reference recomputed another way, a model whose fixed-point arithmetic
breaks located to its operation, one-line refusals, and several training seeds (`pibench train --seeds`)."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import statistics

import pandas as pd
import pytest
import torch

from pibench.models.checkpoints import save_checkpoint
from pibench.models.config import ModelConfig
from pibench.models.definition import forward
from pibench.models.plaintext import TorchModel, TorchOps
from pibench.models.variants import VARIANTS
from pibench.quality.summary import pair_verdicts, quality_frame
from pibench.quality.training_record import validate_quality_record
from tests.conftest import run_cli, write_suite

DIMS = {"L": 1, "H": 2, "d": 32, "T": 8}
VOCAB = 256
TEXT = b"def f(x):\n  return x"  # 21 bytes, no 0 byte


def _config(variant: str) -> ModelConfig:
    return VARIANTS.get(variant).config(DIMS, {})


def _checkpoint(tmp_path, variant: str, lm: dict[str, torch.Tensor], seed: int = 3) -> str:
    """A checkpoint of `variant` with a random stack (`seed`) and the byte model `lm` around it."""
    cfg = _config(variant)
    with torch.no_grad():
        stack = {k: v.detach() for k, v in TorchModel(cfg, seed).effective_weights().items()}
    path = tmp_path / f"{variant}.safetensors"
    save_checkpoint(path, cfg, stack | lm)
    return str(path)


def _random_lm(scale: float, seed: int = 5) -> dict[str, torch.Tensor]:
    """Embedding and positions N(0, scale^2) each, a head N(0, 0.3^2), no bias."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "lm.embed": torch.randn(VOCAB, DIMS["d"], generator=gen) * scale,
        "lm.pos": torch.randn(DIMS["T"], DIMS["d"], generator=gen) * scale,
        "lm.head": torch.randn(DIMS["d"], VOCAB, generator=gen) * 0.3,
        "lm.head_bias": torch.zeros(VOCAB),
    }


def _run(tmp_path, variant: str, weights: str, text: bytes, windows: int, backend: str = "crypten", name="r"):
    (tmp_path / "text.txt").write_bytes(text)
    suite = write_suite(
        tmp_path,
        f"model: {{L: {DIMS['L']}, H: {DIMS['H']}, d: {DIMS['d']}, T: {DIMS['T']}}}\nrepeats: 1\n"
        f"backend: {backend}\nvariants: [{variant}]\nweights: {{checkpoint: {weights}}}\n"
        f"accuracy: {{windows: {windows}, text: text.txt}}\n",
        f"{name}.yaml",
    )
    out = tmp_path / f"{name}.json"
    proc = run_cli("run", str(suite), "--out", str(out), "--no-progress", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())["variants"][0]["measured"]["accuracy"], proc


BACKENDS = [
    "crypten",
    pytest.param(
        "spu", marks=pytest.mark.skipif(importlib.util.find_spec("spu") is None, reason="spu is not installed here")
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_that_always_predicts_one_byte_has_the_perplexity_derived_by_hand(tmp_path, backend):
    """Head 0 and bias 1 at byte 0, 0 elsewhere: every position's logits are (1, 0, ..., 0), whatever the
    stack computes. The text has no 0 byte, so each next byte's cross-entropy is
    ln(e^1 + 255 e^0) - 0 = ln(255 + e) = ln(257.718...) = 5.5518 nats, perplexity 255 + e = 257.718;
    the most likely byte is 0 in MPC and plaintext alike (agreement 1), the logits' scale is 1."""
    bias = torch.zeros(VOCAB)
    bias[0] = 1.0
    lm = _random_lm(1.0) | {"lm.head": torch.zeros(DIMS["d"], VOCAB), "lm.head_bias": bias}
    acc, _ = _run(tmp_path, "sm_scfuffn", _checkpoint(tmp_path, "sm_scfuffn", lm), TEXT, 2, backend)
    assert acc["windows"] == 2 and acc["positions"] == 2 * DIMS["T"]
    assert acc["loss_plaintext"] == pytest.approx(math.log(255 + math.e), rel=1e-6)
    assert math.exp(acc["loss_plaintext"]) == pytest.approx(257.718, abs=1e-3)
    assert acc["loss_mpc"] == pytest.approx(math.log(255 + math.e), abs=1e-3)  # fixed point: logits within 1e-3
    assert acc["agreement"] == 1.0 and acc["max_abs_logit"] == pytest.approx(1.0)
    assert acc["max_abs_logit_error"] < 1e-2 and acc["usable"] and acc["first_unusable_op"] is None


def test_the_plaintext_reference_is_the_models_loss_on_the_window(tmp_path):
    """A text of T + 2 bytes has one window, bytes 0..T (the only offset `batch` can draw): the reference
    loss is the model's cross-entropy of bytes 1..T from bytes 0..T-1, recomputed here by indexing the
    embedding (not a one-hot product); MPC agrees with it on a unit-scale model (CrypTen's LayerNorm
    is accurate there), and the table shows PPL [plaintext] beside PPL [CrypTen]."""
    lm = _random_lm(1.0)
    path = _checkpoint(tmp_path, "sm_ln_g", lm)
    text = TEXT[: DIMS["T"] + 2]
    acc, proc = _run(tmp_path, "sm_ln_g", path, text, 2)
    cfg, ids = _config("sm_ln_g"), torch.tensor(list(text[: DIMS["T"] + 1]))
    with torch.no_grad():
        stack = {k: v.detach() for k, v in TorchModel(cfg, 3).effective_weights().items()}
        h = forward(TorchOps("tanh"), stack, lm["lm.embed"][ids[:-1]] + lm["lm.pos"], cfg)
        loss = torch.nn.functional.cross_entropy(h @ lm["lm.head"], ids[1:]).item()
    assert acc["loss_plaintext"] == pytest.approx(loss, rel=1e-5)
    assert acc["usable"] and acc["agreement"] >= 0.9 and acc["loss_mpc"] == pytest.approx(loss, rel=0.02)
    assert "PPL" in proc.stdout and "plaintext" in proc.stdout and f"{math.exp(loss):.3f}" in proc.stdout


def test_a_model_whose_fixed_point_breaks_is_flagged_at_its_first_operation(tmp_path):
    """Embeddings and positions of scale 1e-3: layer 0's LayerNorm sees variances about 2e-6, far below
    where CrypTen's inverse square root (an exponential first guess and 3 Newton steps) converges, while
    the embedding before it is exact to its 16 fraction bits (1e-3 is 65 units of 2^-16): the first
    operation past the usable bound is layer 0's layernorm. The run still exits 0 with its costs; the
    report names the variant and the operation."""
    path = _checkpoint(tmp_path, "sm_ln_g", _random_lm(1e-3))
    acc, proc = _run(tmp_path, "sm_ln_g", path, TEXT, 1)
    assert not acc["usable"] and acc["first_unusable_op"] == "layer 0 layernorm"
    assert "unusable on real text" in proc.stdout and "SM + LN + G (layer 0 layernorm)" in " ".join(proc.stdout.split())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("accuracy: {windows: 2}\n", "accuracy: needs trained weights, 'weights: {checkpoint: ...}' (synthetic"),
        (
            "weights: {huggingface: gpt2}\naccuracy: {windows: 2}\n",
            "accuracy: needs trained weights, 'weights: {checkpoint: ...}' (a Hugging Face GPT-2 needs tokenised",
        ),
        ("weights: {checkpoint: c.safetensors}\nscope: end_to_end\naccuracy: {windows: 2}\n", "accuracy: runs the"),
    ],
)
def test_accuracy_without_a_byte_model_is_one_line(tmp_path, extra, message):
    suite = write_suite(tmp_path, "model: {L: 1, H: 2, d: 32, T: 8}\nvariants: [sm_ln_g]\n" + extra)
    proc = run_cli("run", str(suite), "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.json").exists()


def test_a_checkpoint_without_the_byte_model_is_refused_before_the_parties_start(tmp_path):
    """A checkpoint of the stack alone runs its costs (`accuracy: {windows: 0}`), but not the default
    accuracy pass, which needs the byte model: one line, exit 2, no record."""
    cfg = _config("sm_ln_g")
    with torch.no_grad():
        stack = {k: v.detach() for k, v in TorchModel(cfg, 3).effective_weights().items()}
    save_checkpoint(tmp_path / "c.safetensors", cfg, stack)
    head = "model: {L: 1, H: 2, d: 32, T: 8}\nrepeats: 1\nvariants: [sm_ln_g]\nweights: {checkpoint: c.safetensors}\n"
    proc = run_cli("run", str(write_suite(tmp_path, head)), "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "has no 'lm.embed': not a `pibench train` language model" in proc.stderr
    assert not (tmp_path / "r.json").exists()
    off = write_suite(tmp_path, head + "accuracy: {windows: 0}\n", "off.yaml")
    proc = run_cli("run", str(off), "--out", str(tmp_path / "r.json"), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "r.json").read_text())["variants"][0]["measured"]["accuracy"] is None


def test_train_with_several_seeds_keeps_every_seed_and_a_directory_runs_each_variants_checkpoint(tmp_path):
    """`--seeds 0,1,2`: every variant trained three times, the first seed's run in `quality`, the others in
    `other_seeds` with their own checkpoints (NAME.seedS.safetensors); the table's perplexity is their
    mean ± sample standard deviation, and a pair's verdict is printed. `weights: {checkpoint: DIR}`
    then runs each variant's NAME.safetensors, with its accuracy, under CrypTen and under SPU."""
    suite = write_suite(
        tmp_path,
        "name: tq\nmodel: {L: 1, H: 2, d: 32, T: 8}\nrepeats: 1\nvariants: [sm_ln_g, sm_scfuffn]\n"
        "train: {tokens: 960, batch: 4, eval_batches: 1, corpus_bytes: 100000}\n"
        "weights: {checkpoint: q-weights}\naccuracy: {windows: 1}\n",
    )
    out = tmp_path / "q.json"
    proc = run_cli("train", str(suite), "--seeds", "0,1,2", "--out", str(out), "--no-progress", timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = validate_quality_record(json.loads(out.read_text()), "q")
    assert record.train.seeds == (0, 1, 2)
    for v in record.variants:
        assert [q.seed for q in v.runs] == [0, 1, 2]
        assert v.runs[1].checkpoint.path == str(tmp_path / "q-weights" / f"{v.name}.seed1.safetensors")
    frame = quality_frame([("q", record)])
    ppls = record.variants[0].ppls
    assert frame.loc[0, "val_ppl"] == pytest.approx(sum(ppls) / 3) and frame.loc[0, "seeds"] == 3
    assert frame.loc[0, "val_ppl_std"] == pytest.approx(statistics.stdev(ppls))
    assert f"{sum(ppls) / 3:.3f} ± {statistics.stdev(ppls):.3f}" in proc.stdout
    assert "seed spread" in proc.stdout
    backends = ["crypten"] + (["spu"] if importlib.util.find_spec("spu") else [])
    for backend in backends:  # the same suite file runs what it trained, under each backend
        out = tmp_path / f"{backend}.json"
        proc = run_cli("run", str(suite), "--backend", backend, "--out", str(out), "--no-progress", timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        for v in json.loads(out.read_text())["variants"]:
            acc = v["measured"]["accuracy"]
            assert acc["windows"] == 1 and acc["positions"] == 8 and 0 <= acc["agreement"] <= 1
            assert acc["loss_mpc"] is not None and acc["loss_plaintext"] > 0
    if len(backends) == 2:  # over the same windows, SPU's PPL and agreement stand beside CrypTen's
        both = run_cli("report", *(str(tmp_path / f"{b}.json") for b in backends), "--format", "csv")
        frame = pd.read_csv(io.StringIO(both.stdout))
        assert frame["spu_ppl_mpc"].notna().all() and frame["spu_top1_agreement"].notna().all()


def test_pair_verdicts_tell_differences_beyond_the_seed_spread():
    """Ranges apart: every seed of one below every seed of the other (A 5.0-5.4 against B 5.5-5.9, the
    difference of means 5.7 - 5.2 = +0.5); overlapping (A against C, 5.3-5.6): within the spread."""
    frame = pd.DataFrame(
        [
            {"record": "q", "label": "A", "seeds": 3, "val_ppl": 5.2, "val_ppl_min": 5.0, "val_ppl_max": 5.4},
            {"record": "q", "label": "B", "seeds": 3, "val_ppl": 5.7, "val_ppl_min": 5.5, "val_ppl_max": 5.9},
            {"record": "q", "label": "C", "seeds": 3, "val_ppl": 5.45, "val_ppl_min": 5.3, "val_ppl_max": 5.6},
        ]
    )
    pairs = pair_verdicts(frame).set_index(["first", "second"])
    assert pairs.loc[("A", "B"), "ppl_difference"] == pytest.approx(0.5)
    assert pairs.loc[("A", "B"), "beyond_seed_spread"]
    assert not pairs.loc[("A", "C"), "beyond_seed_spread"] and not pairs.loc[("B", "C"), "beyond_seed_spread"]
