"""Weights from files: a Hugging Face GPT-2 directory and pibench checkpoints, mapped into the one model
definition; a wrong or truncated file is one line."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from pibench.models.checkpoints import load_weights, save_checkpoint
from pibench.models.definition import embed, forward, logits, param_specs
from pibench.models.plaintext import TorchModel, TorchOps
from pibench.models.variants import resolve
from pibench.util.errors import PibenchError
from tests.conftest import run_cli, write_suite

needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers (a test dependency) is not installed"
)
DIMS = {"L": 2, "H": 4, "d": 64, "T": 8}
VOCAB = 101


def _tiny_gpt2(directory, safe: bool = True):
    """A GPT-2 of 2 layers, d=64, 4 heads, vocabulary 101, 32 positions, random weights (biases and
    LayerNorms too, so that every mapped tensor matters), saved the way Hugging Face saves it. The
    embeddings are scaled up to about a trained model's spread: at initialisation (std 0.02) the
    first LayerNorm's input variance is far below the range CrypTen's inverse square root holds."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_head=4, n_embd=64, n_positions=32, vocab_size=VOCAB, activation_function="gelu_new"
    )
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.transformer.wte.weight.mul_(10)
        model.transformer.wpe.weight.mul_(10)
    model.save_pretrained(directory, safe_serialization=safe)
    return model


def _pibench_logits(weights, cfg, ids):
    """Every position's logits from the one definition on the plaintext interpreter: one-hot rows times
    wte plus wpe's rows, the stack, ln_f and the tied LM head, position by position."""
    ops = TorchOps("tanh")
    h = forward(ops, weights, embed(ops, weights, torch.nn.functional.one_hot(ids, cfg.vocab).float(), 0), cfg)
    return torch.cat([logits(ops, weights, h[: n + 1], cfg) for n in range(len(ids))])


@needs_transformers
@pytest.mark.parametrize("safe", [True, False], ids=["model.safetensors", "pytorch_model.bin"])
def test_a_huggingface_gpt2_gives_the_transformers_logits(tmp_path, safe):
    model = _tiny_gpt2(tmp_path, safe)
    cfg = resolve("sm_ln_g", DIMS).replace(scope="end_to_end", vocab=VOCAB)
    weights = load_weights("huggingface", tmp_path, cfg, param_specs(cfg))
    ids = torch.tensor([5, 17, 3, 99, 42, 0, 64, 8])
    with torch.no_grad():
        theirs = model(ids[None]).logits[0]
        mine = _pibench_logits(weights, cfg, ids)
    assert mine.shape == theirs.shape == (8, VOCAB)
    assert (mine - theirs).abs().max().item() < 1e-4


@needs_transformers
def test_a_huggingface_directory_that_does_not_fit_the_variant_is_one_line(tmp_path):
    _tiny_gpt2(tmp_path)
    for variant, dims, fragment in (
        ("sm_ln_g", {**DIMS, "d": 32}, "n_embd is 64, the suite's d is 32"),
        ("sm_ln_r", DIMS, "is GPT-2 (SM + LN + G); the variant differs: {'activation': 'relu'}"),
        ("sm_ln_g", {**DIMS, "T": 40}, "n_positions 32 is below the suite's 40 positions"),
    ):
        cfg = resolve(variant, dims)
        with pytest.raises(PibenchError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
            load_weights("huggingface", tmp_path, cfg, param_specs(cfg))
    (tmp_path / "model.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes()[:5000])
    cfg = resolve("sm_ln_g", DIMS)
    with pytest.raises(PibenchError, match=r"model\.safetensors is not a readable safetensors file"):
        load_weights("huggingface", tmp_path, cfg, param_specs(cfg))


def test_a_checkpoint_loads_into_its_own_architecture_only(tmp_path):
    """Saved with its config, a checkpoint loads back bit for bit into the same variant (at another T or
    scope too: weights do not depend on them), and is refused, one line, by another architecture or
    when truncated."""
    cfg = resolve("sm_scfuffn", DIMS)
    weights = TorchModel(cfg, seed=3).effective_weights()
    path = tmp_path / "w.safetensors"
    save_checkpoint(path, cfg, weights, record="sha256:abc")
    back = load_weights("checkpoint", path, cfg.replace(T=4), param_specs(cfg))
    assert set(back) == set(weights) and all(torch.equal(back[n], weights[n].float()) for n in weights)
    with pytest.raises(PibenchError, match=r"holds another architecture: norm='none' \(variant: 'pre_ln'\)"):
        load_weights("checkpoint", path, resolve("sm_ln_g", DIMS), [])
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(PibenchError, match=r"is not a readable safetensors file"):
        load_weights("checkpoint", path, cfg, param_specs(cfg))


@needs_transformers
def test_pibench_run_takes_huggingface_weights_and_refuses_a_truncated_file_in_one_line(tmp_path):
    """`weights: {huggingface: DIR}` in a suite: two CrypTen parties run the GPT-2 end to end, --full,
    and the client gets the plaintext interpreter's greedy tokens on those weights; the same suite over
    a truncated file is one line, exit 2, before any party starts, and no record."""
    gpt2 = tmp_path / "gpt2"
    _tiny_gpt2(gpt2)
    text = (
        "model: {L: 2, H: 4, d: 64, T: 8}\ngenerate: {new_tokens: 3}\nscope: end_to_end\nvocab: 101\nrepeats: 1\n"
        "weights: {huggingface: gpt2}\nvariants: [sm_ln_g]\n"
    )
    suite = write_suite(tmp_path, text)
    out = tmp_path / "r.json"
    proc = run_cli("run", str(suite), "--out", str(out), "--no-progress", "--full")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["suite"]["source"]["weights"] == {"huggingface": "gpt2"}
    m = record["variants"][0]["measured"]
    assert m["usable"] and m["tokens"]["generated"] == m["tokens"]["plaintext"] and len(m["tokens"]["generated"]) == 3
    (gpt2 / "model.safetensors").write_bytes((gpt2 / "model.safetensors").read_bytes()[:5000])
    out.unlink()
    proc = run_cli("run", str(suite), "--out", str(out), "--no-progress")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "model.safetensors is not a readable safetensors file" in proc.stderr and not out.exists()


def test_a_suite_names_one_source_of_weights(tmp_path):
    base = "model: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm_ln_g]\n"
    for weights, fragment in (
        ("weights: {checkpoint: a, huggingface: b}\n", "weights: name one source"),
        ("weights: {}\n", "weights: name one source"),
        ("weights: {hugginface: b}\n", "unknown key 'hugginface' (did you mean 'huggingface'?)"),
    ):
        suite = write_suite(tmp_path, base + weights)
        proc = run_cli("cost", str(suite))
        assert proc.returncode == 2 and fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (
            proc.stderr
        )
    suite = write_suite(tmp_path, base + "weights: {checkpoint: missing.safetensors}\n")
    proc = run_cli("run", str(suite), "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 2 and "missing.safetensors': no such file" in proc.stderr, proc.stderr
    assert not (tmp_path / "r.json").exists()
