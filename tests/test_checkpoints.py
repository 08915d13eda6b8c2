"""Weights from files: a Hugging Face GPT-2 directory and pibench checkpoints, mapped into the one model
definition; a wrong or truncated file is one line."""

from __future__ import annotations

import importlib.util
import json
import re

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
    model = _tiny_gpt2(gpt2)
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
    # the record keeps the synthetic prompt (T ids, uniform, from the suite's seed 0 + 1), so that anyone can rerun
    # the plaintext model on it: transformers' greedy tokens on the record's prompt are the ones generated
    drawn = torch.randint(0, VOCAB, (8,), generator=torch.Generator().manual_seed(0 + 1)).tolist()
    assert m["prompt"] == drawn
    ids = torch.tensor([m["prompt"]])
    with torch.no_grad():
        for _ in range(3):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert ids[0, 8:].tolist() == m["tokens"]["generated"]
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


def _edit_config(directory, **changes):
    """Rewrite a saved GPT-2's config.json with `changes` (a value None removes the key)."""
    path = directory / "config.json"
    config = json.loads(path.read_text()) | changes
    path.write_text(json.dumps({k: v for k, v in config.items() if v is not None}))


# (field, value, what pibench says): each changes a GPT-2's output, so each is refused before any party starts
REFUSED = [
    ("tie_word_embeddings", False, "tie_word_embeddings false: its LM head is its own matrix"),
    ("layer_norm_epsilon", 0.5, "layer_norm_epsilon 0.5 is not pibench's 1e-05"),
    ("n_inner", 128, "n_inner 128 is not 4 x n_embd"),
    ("scale_attn_weights", False, "scale_attn_weights False: pibench runs GPT-2 with scale_attn_weights True"),
    ("scale_attn_by_inverse_layer_idx", True, "scale_attn_by_inverse_layer_idx True: pibench runs GPT-2 with"),
    ("add_cross_attention", True, "add_cross_attention True: pibench runs GPT-2 with add_cross_attention False"),
    ("is_encoder_decoder", True, "is_encoder_decoder True: pibench runs GPT-2 with is_encoder_decoder False"),
    ("pruned_heads", {"0": [1]}, "pruned_heads {'0': [1]}: pibench runs every head"),
    ("activation_function", "relu", "activation_function 'relu' is not a GELU pibench runs"),
    ("activation_function", "gelu", "activation_function 'gelu' is GELU's erf form, and the backend computes the tanh"),
    ("rope_scaling", {"type": "linear"}, "config.json has 'rope_scaling', which pibench does not know for GPT-2"),
]


@needs_transformers
@pytest.mark.parametrize("field, value, says", REFUSED, ids=[f"{f}={v}" for f, v, _ in REFUSED])
def test_a_gpt2_config_field_that_changes_the_output_is_refused(tmp_path, field, value, says):
    """Issue 32: a GPT-2 folder with tie_word_embeddings false (and its own lm_head.weight) ran with wte as
    its head, logits off by 11.7; layer_norm_epsilon 0.5 ran with 1e-5, logits off by 3.3; both passed the
    weight check. Every field that changes the output and that pibench does not run is now one line
    naming it, whether the weights are read (`check_weights`) or only described (`pibench cost`)."""
    from pibench.models.checkpoints import check_weights

    _tiny_gpt2(tmp_path)
    _edit_config(tmp_path, **{field: value})
    cfg = resolve("sm_ln_g", DIMS).replace(scope="end_to_end", vocab=VOCAB)
    with pytest.raises(PibenchError, match=re.escape(says)):
        check_weights("huggingface", tmp_path, [cfg], gelu="tanh")


@needs_transformers
def test_a_refused_gpt2_field_stops_the_run_before_any_party_starts(tmp_path):
    gpt2 = tmp_path / "gpt2"
    model = _tiny_gpt2(gpt2)
    from safetensors.torch import load_file, save_file

    state = load_file(str(gpt2 / "model.safetensors"))  # an untied head of its own, as the folder had
    state["lm_head.weight"] = model.transformer.wte.weight.detach() * 2
    save_file(state, str(gpt2 / "model.safetensors"), metadata={"format": "pt"})
    _edit_config(gpt2, tie_word_embeddings=False)
    text = "model: {L: 2, H: 4, d: 64, T: 8}\nscope: end_to_end\nweights: {huggingface: gpt2}\nvariants: [sm_ln_g]\n"
    suite, out = write_suite(tmp_path, text), tmp_path / "r.json"
    for command in ("cost", "run"):
        proc = run_cli(command, str(suite), *(["--out", str(out)] if command == "run" else []))
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "tie_word_embeddings false" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


@needs_transformers
def test_honoured_and_ignored_gpt2_fields_keep_the_transformers_logits(tmp_path):
    """Fields pibench honours (n_inner = 4 d given explicitly, GELU's erf form run as erf) or ignores
    (dropout, generation settings, labels) leave pibench's logits within 1e-4 of transformers'."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=32, vocab_size=VOCAB, activation_function="gelu")
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(10)
    model.save_pretrained(tmp_path)
    _edit_config(tmp_path, n_inner=256, resid_pdrop=0.5, do_sample=True, task_specific_params={"x": {}}, id2label=None)
    cfg = resolve("sm_ln_g", DIMS).replace(scope="end_to_end", vocab=VOCAB)
    weights = load_weights("huggingface", tmp_path, cfg, param_specs(cfg))
    ids = torch.tensor([5, 17, 3, 99, 42, 0, 64, 8])
    ops = TorchOps("erf")
    with torch.no_grad():
        theirs = model(ids[None]).logits[0]
        h = forward(ops, weights, embed(ops, weights, torch.nn.functional.one_hot(ids, VOCAB).float(), 0), cfg)
        mine = torch.cat([logits(ops, weights, h[: n + 1], cfg) for n in range(len(ids))])
    assert (mine - theirs).abs().max().item() < 1e-4
    with pytest.raises(PibenchError, match="the backend computes the tanh form; set its gelu setting to erf"):
        from pibench.models.checkpoints import check_weights

        check_weights("huggingface", tmp_path, [cfg], gelu="tanh")


@needs_transformers
def test_cost_checks_the_weights_and_takes_the_dimensions_a_suite_leaves_out(tmp_path):
    """Issue 32: with a folder of another shape (d=32 weights, d=64 suite) or architecture, `pibench cost`
    printed costs and exited 0. It now refuses both in one line, and a suite that leaves out L, H and d
    (or, with a checkpoint, T too) takes them from the weights' description (no tensor is read)."""
    gpt2 = tmp_path / "gpt2"
    _tiny_gpt2(gpt2)
    for model, variant, says in (
        ("{L: 2, H: 4, d: 32, T: 8}", "sm_ln_g", "n_embd is 64, the suite's d is 32"),
        ("{L: 2, H: 4, d: 64, T: 8}", "sm_ln_r", "is GPT-2 (SM + LN + G); the variant differs"),
    ):
        suite = write_suite(tmp_path, f"model: {model}\nweights: {{huggingface: gpt2}}\nvariants: [{variant}]\n")
        proc = run_cli("cost", str(suite))
        assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    given = write_suite(tmp_path, "model: {L: 2, H: 4, d: 64, T: 8}\nvariants: [sm_ln_g]\n", "given.yaml")
    taken = write_suite(tmp_path, "model: {T: 8}\nweights: {huggingface: gpt2}\nvariants: [sm_ln_g]\n", "taken.yaml")
    costs = [json.loads(run_cli("cost", str(s), "--format", "json").stdout) for s in (given, taken)]
    assert costs[0][0]["nonlinear"] == costs[1][0]["nonlinear"] and costs[0][0]["flops"] == costs[1][0]["flops"]
    assert costs[1][0]["config"]["d"] == 64 and costs[1][0]["config"]["L"] == 2
    # end to end, the vocabulary comes from the folder too (101, not GPT-2's 50257)
    e2e = write_suite(tmp_path, "model: {T: 8}\nscope: end_to_end\nweights: {huggingface: gpt2}\nvariants: [sm_ln_g]\n")
    assert json.loads(run_cli("cost", str(e2e), "--format", "json").stdout)[0]["config"]["vocab"] == VOCAB
    # a HF folder gives no prompt length
    proc = run_cli(
        "cost", str(write_suite(tmp_path, "model: {L: 2}\nweights: {huggingface: gpt2}\nvariants: [sm_ln_g]\n"))
    )
    assert proc.returncode == 2 and "model.T: missing required key 'T' (the weights give L, H, d)" in proc.stderr
    # a checkpoint: every dimension, T included, from its metadata
    cfg = resolve("sm_scfuffn", DIMS)
    save_checkpoint(tmp_path / "w.safetensors", cfg, TorchModel(cfg, seed=3).effective_weights())
    ckpt = write_suite(
        tmp_path, "model: {}\nweights: {checkpoint: w.safetensors}\nvariants: [sm_scfuffn]\naccuracy: {windows: 0}\n"
    )
    out = json.loads(run_cli("cost", str(ckpt), "--format", "json").stdout)[0]["config"]
    assert {k: out[k] for k in DIMS} == DIMS
