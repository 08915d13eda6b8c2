"""Generation with a KV cache: one definition for the prefill and every decode step.

A decode step is `forward` over one new position attending to every cached one; it must give what
recomputing the whole sequence gives, for every variant, and what an independently written torch
GPT-2 with a KV cache gives. Its counts are the papers' notation with one row per new position."""

from __future__ import annotations

import copy
import importlib.util
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pibench.counting.cost import analyse, generation_cost
from pibench.counting.notation import nonlinear_notation
from pibench.models.definition import KVCache, Span, forward, step
from pibench.models.plaintext import TorchModel, TorchOps
from pibench.models.variants import VARIANTS, resolve
from tests.conftest import run_cli, run_crypten_pair, write_suite

TINY = {"L": 2, "H": 2, "d": 16, "T": 4}
NEW = 3  # tokens generated: the prefill yields the first, two decode steps the others
VOCAB = 11


def _weights(cfg, seed=0):
    """The weights of `cfg` with every ones- or zeros-initialised one (not a matrix) drawn at random,
    so that SM(t)'s per-position temperatures and the shaped attention's coefficients differ per row and head."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        weights = TorchModel(cfg, seed).effective_weights()
        return {n: w if w.dim() == 2 else w + 0.3 * torch.randn(w.shape, generator=gen) for n, w in weights.items()}


def _prompt_and_more(cfg, positions, seed=3):
    return torch.randn(positions, cfg.d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", VARIANTS.names())
def test_decode_steps_with_the_cache_equal_recomputing_the_sequence(name):
    cfg = resolve(name, TINY).replace(new_tokens=NEW)
    ops, w = TorchOps(), _weights(cfg)
    x = _prompt_and_more(cfg, cfg.context)  # 4 prompt positions and the 2 fed back: 6
    # without a cache: the whole sequence as one prompt of 6 (same weights: the context is 6 either way)
    whole = forward(ops, w, x, cfg.replace(T=cfg.context, new_tokens=0))
    cache = KVCache()
    steps = [forward(ops, w, x[: cfg.T], cfg, cache=cache)]
    steps += [forward(ops, w, x[p : p + 1], cfg, cache=cache) for p in range(cfg.T, cfg.context)]
    assert [s.shape[0] for s in steps] == [4, 1, 1] and cache.lengths == {0: 6, 1: 6}
    torch.testing.assert_close(torch.cat(steps), whole, rtol=1e-5, atol=1e-5)


def _greedy(cfg, w, embed, pos, prompt, cached):
    """Greedy tokens after `prompt` (token ids), embedding tied to the LM head; with or without the cache."""
    ops, tokens, logits = TorchOps(), list(prompt), []
    cache = KVCache() if cached else None
    fed = 0  # positions the cache holds
    for _ in range(cfg.new_tokens):
        ids = tokens[fed:] if cached else tokens
        x = embed[ids] + pos[fed if cached else 0 : len(tokens)]
        step_cfg = cfg if cached else cfg.replace(T=len(tokens), new_tokens=0)
        h = forward(ops, w, x, step_cfg, cache=cache)
        fed = len(tokens)
        last = h[-1] @ embed.T
        logits.append(last)
        tokens.append(int(last.argmax()))
    return tokens[len(prompt) :], torch.stack(logits)


@pytest.mark.parametrize("name", VARIANTS.names())
def test_greedy_generation_with_the_cache_equals_recomputing_at_every_step(name):
    cfg = resolve(name, TINY).replace(new_tokens=NEW)
    w, gen = _weights(cfg), torch.Generator().manual_seed(5)
    embed, pos = torch.randn(VOCAB, cfg.d, generator=gen), 0.1 * torch.randn(cfg.context, cfg.d, generator=gen)
    prompt = [3, 1, 4, 1]
    with_cache, logits = _greedy(cfg, w, embed, pos, prompt, cached=True)
    again, logits_again = _greedy(cfg, w, embed, pos, prompt, cached=False)
    assert len(with_cache) == NEW and with_cache == again
    torch.testing.assert_close(logits, logits_again, rtol=1e-5, atol=1e-5)


def _reference_gpt2(w, x_new, cfg, past):
    """GPT-2 (pre-LN, tanh GELU) over new positions with a KV cache `past` (layer -> (k, v)), written
    from the architecture, not from pibench's definition; torch's own attention kernel."""
    H, dh = cfg.H, cfg.d_head
    h = x_new
    for i in range(cfg.L):
        p = f"h{i}."
        a = F.layer_norm(h, (cfg.d,), w[p + "ln1.g"], w[p + "ln1.b"], 1e-5)
        q, k, v = (a @ w[p + "attn.qkv.w"] + w[p + "attn.qkv.b"]).split(cfg.d, dim=-1)
        q, k, v = (t.view(-1, H, dh).transpose(0, 1) for t in (q, k, v))
        if i in past:
            k, v = torch.cat([past[i][0], k], 1), torch.cat([past[i][1], v], 1)
        past[i] = (k, v)
        n, t = q.shape[1], k.shape[1]
        allowed = torch.ones(n, t, dtype=torch.bool).tril(t - n)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        h = h + att.transpose(0, 1).reshape(n, cfg.d) @ w[p + "attn.o.w"] + w[p + "attn.o.b"]
        f = F.layer_norm(h, (cfg.d,), w[p + "ln2.g"], w[p + "ln2.b"], 1e-5)
        f = F.gelu(f @ w[p + "ffn.in.w"] + w[p + "ffn.in.b"], approximate="tanh")
        h = h + f @ w[p + "ffn.out.w"] + w[p + "ffn.out.b"]
    return h


def test_cached_decoding_equals_an_independent_torch_gpt2():
    cfg = resolve("sm_ln_g", TINY).replace(new_tokens=NEW)
    w = _weights(cfg)
    x = _prompt_and_more(cfg, cfg.context)
    ours, cache = [], KVCache()
    theirs, past = [], {}
    for lo, hi in ((0, cfg.T), (cfg.T, cfg.T + 1), (cfg.T + 1, cfg.T + 2)):
        ours.append(forward(TorchOps(), w, x[lo:hi], cfg, cache=cache))
        theirs.append(_reference_gpt2(w, x[lo:hi], cfg, past))
    # the definition masks with exp(-40) ~ 4e-18 where torch's kernel masks exactly: equal to float tolerance
    torch.testing.assert_close(torch.cat(ours), torch.cat(theirs), rtol=1e-5, atol=1e-5)


def _one_hot(ids, vocab):
    return F.one_hot(torch.tensor(ids), vocab).float()


def _greedy_end_to_end(cfg, w, prompt, cached):
    """Greedy tokens by the definition's `step` (one-hot rows in, the next one-hot row out): with the
    cache, the prompt then one token per step; without, the whole sequence again at every step."""
    tokens, logits, cache = list(prompt), [], KVCache()
    for _ in range(cfg.new_tokens):
        if not cached:
            cache = KVCache()
        fed = cache.positions
        nxt, z = step(TorchOps(), w, _one_hot(tokens[fed:], cfg.vocab), cfg, cache)
        assert nxt.shape == (1, cfg.vocab) and nxt.sum() == 1  # a one-hot row, never an id
        logits.append(z[0])
        tokens.append(int(nxt.argmax()))
    return tokens[len(prompt) :], torch.stack(logits)


@pytest.mark.parametrize("name", VARIANTS.names())
def test_end_to_end_generation_with_the_cache_equals_recomputing_at_every_step(name):
    cfg = resolve(name, TINY).replace(new_tokens=NEW, scope="end_to_end", vocab=VOCAB)
    w = _weights(cfg)
    with_cache, logits = _greedy_end_to_end(cfg, w, [3, 1, 4, 1], cached=True)
    again, logits_again = _greedy_end_to_end(cfg, w, [3, 1, 4, 1], cached=False)
    assert len(with_cache) == NEW and with_cache == again
    torch.testing.assert_close(logits, logits_again, rtol=1e-5, atol=1e-5)


def test_end_to_end_generation_equals_an_independent_torch_gpt2():
    """Token and position embeddings, the stack, ln_f and the LM head tied to wte, as GPT-2 writes them."""
    cfg = resolve("sm_ln_g", TINY).replace(new_tokens=NEW, scope="end_to_end", vocab=VOCAB)
    w = _weights(cfg)
    ours, logits = _greedy_end_to_end(cfg, w, [3, 1, 4, 1], cached=True)
    tokens, past, theirs = [3, 1, 4, 1], {}, []
    for _ in range(NEW):
        fed = sum(1 for _ in range(past[0][0].shape[1])) if past else 0
        x = w["wte"][tokens[fed:]] + w["wpe"][fed : len(tokens)]
        h = _reference_gpt2(w, x, cfg, past)[-1]
        z = F.layer_norm(h, (cfg.d,), w["ln_f.g"], w["ln_f.b"], 1e-5) @ w["wte"].T
        theirs.append(z)
        tokens.append(int(z.argmax()))
    assert ours == tokens[4:]
    torch.testing.assert_close(logits, torch.stack(theirs), rtol=1e-5, atol=1e-5)


def test_end_to_end_counts_list_the_head_as_its_own_kinds():
    """GPT-2 end to end, vocab 50257: the prefill embeds 128 one-hot rows (128 x 50257 by 50257 x 768)
    and takes logits at the last position only; a decode step embeds one."""
    cfg = resolve("sm_ln_g", GPT2).replace(new_tokens=2, scope="end_to_end")
    prefill, decode = analyse(cfg), analyse(cfg, span=Span.decode(129))
    # layers: SM 144 (12 layers x 12 heads), LN 24 + ln_f, G 12; the head: AM 1 x R^{1 x 50257}
    assert nonlinear_notation(prefill) == (
        "SM:144×ℝ^{128×128} LN:1×ℝ^{1×768} LN:24×ℝ^{128×768} G:12×ℝ^{128×3072} AM:1×ℝ^{1×50257}"
    )
    assert nonlinear_notation(decode) == "SM:144×ℝ^{1×129} LN:25×ℝ^{1×768} G:12×ℝ^{1×3072} AM:1×ℝ^{1×50257}"
    # MACs: embedding 128 x 50257 x 768 = 4,940,464,128; LM head 1 x 768 x 50257 = 38,597,376
    assert prefill.tally.macs["head.embedding"] == 128 * 50257 * 768 == 4_940_464_128
    assert prefill.tally.macs["head.lm_head"] == decode.tally.macs["head.lm_head"] == 38_597_376
    assert decode.tally.macs["head.embedding"] == 38_597_376  # one row
    assert prefill.flops_head == 2 * (4_940_464_128 + 38_597_376)
    layers = analyse(cfg.replace(scope="layers"))  # the papers' columns are unchanged by the scope
    assert (prefill.flops_ffn, prefill.flops_attn) == (layers.flops_ffn, layers.flops_attn)


def test_the_public_constants_of_a_decode_step_are_the_last_rows():
    """(n, t) rows of the (t, t) matrices, for n new positions of t: plaintext and SPU alike."""
    from pibench.backends.spu.session import SpuOps

    ops = TorchOps()
    # t = 3, the last row (position 2): mask 0 everywhere; average 1/3 each; identity row [0, 0, 1]
    assert ops.causal_mask(1, 3).tolist() == [[0, 0, 0]]
    torch.testing.assert_close(ops.causal_average(1, 3), torch.full((1, 3), 1 / 3))
    assert ops.eye(1, 3).tolist() == [[0, 0, 1]]
    # n = 2 of t = 3: positions 1 and 2
    assert ops.causal_mask(2, 3).tolist() == [[0, 0, -40], [0, 0, 0]]
    for n, t in ((1, 1), (1, 5), (2, 5), (5, 5)):
        for kind in ("causal_mask", "causal_average", "eye"):
            mine = getattr(ops, kind)(n, t).numpy()
            spu = getattr(SpuOps, kind)(None, n, t)
            np.testing.assert_allclose(spu, mine, rtol=1e-6, err_msg=f"{kind}({n}, {t})")
            np.testing.assert_array_equal(getattr(ops, kind)(t, t).numpy()[t - n :], mine)


GPT2 = {"L": 12, "H": 12, "d": 768, "T": 128}


def test_a_decode_step_counts_one_row_per_layer_in_the_papers_notation():
    """GPT-2 (SM+LN+G) at context t = 129 (the first decode step after a prompt of 128) and 159."""
    cfg = resolve("sm_ln_g", GPT2).replace(new_tokens=32)
    for t in (129, 159):
        c = analyse(cfg, span=Span.decode(t))
        # SM: L*H = 144 rows of t keys; LN: 2L = 24 rows of d; G: L = 12 rows of 4d
        assert nonlinear_notation(c) == f"SM:144×ℝ^{{1×{t}}} LN:24×ℝ^{{1×768}} G:12×ℝ^{{1×3072}}"
        # FFN: 16 L n d^2 at n = 1 new position: 16*12*768^2 = 113,246,208
        assert c.flops_ffn == 113_246_208
        # attention, paper convention: L (8 n d^2 + 3 n t d) = 12 (8*589,824 + 3*t*768)
        assert c.flops_attn == 12 * (8 * 589_824 + 3 * t * 768)
    # the prefill of a suite that generates is the prefill of one that does not
    assert analyse(cfg).tally.key() == analyse(cfg.replace(new_tokens=0)).tally.key()


def test_the_total_adds_the_prefill_and_every_decode_step():
    cfg = resolve("sm_scfuffn", TINY).replace(new_tokens=NEW)
    gen = generation_cost(cfg)
    assert [len(gen.decode), gen.decode[0].config.context] == [2, 6]
    # softmax elements: prefill 4 heads-layers x 4x4 = 64, decode t=5: 4 x 5 = 20, t=6: 4 x 6 = 24 -> 108
    total = {n.kind: 0 for n in gen.total.nonlinear}
    for n in gen.total.nonlinear:
        total[n.kind] += n.elements
    assert total == {"softmax": 108}
    assert gen.total.flops_ffn == gen.prefill.flops_ffn + 2 * gen.decode[0].flops_ffn


def test_cost_of_a_suite_that_generates(tmp_path):
    suite = write_suite(tmp_path, "model: {L: 2, H: 2, d: 16, T: 4}\ngenerate: {new_tokens: 3}\nvariants: [sm_ln_g]\n")
    table = run_cli("cost", str(suite))
    assert table.returncode == 0, table.stderr
    assert "the prefill over the prompt's 4 positions" in table.stdout  # what the first table (and --predict) is
    assert "3 tokens after a prompt of 4: the prefill yields the first, each of 2 decode steps" in table.stdout
    # decode 2 at context 6: SM 2 layers x 2 heads of 1x6, LN 2 per layer of 1x16, G 1 per layer of 1x64
    assert "decode 2  6  SM:4×ℝ^{1×6} LN:4×ℝ^{1×16} G:2×ℝ^{1×64}" in table.stdout
    said = json.loads(run_cli("cost", str(suite), "--format", "json").stdout)[0]["generation"]
    assert (said["new_tokens"], said["decode_steps"], said["decode_first"]["context"]) == (3, 2, 5)
    # G elements in total: prefill 2 x 4x64 = 512, and 2 decode steps of 2 x 64 = 256 -> 768
    assert said["total"]["nonlinear"]["gelu"]["elements"] == 768
    csv = run_cli("cost", str(suite), "--format", "csv").stdout.splitlines()
    assert len(csv) == 1 + 4 and csv[0].endswith(",step,context") and csv[-1].endswith(",total,")


def test_generate_and_scope_are_checked(tmp_path):
    bad = write_suite(tmp_path, "model: {L: 1, H: 2, d: 16, T: 4}\ngenerate: {new_tokens: 0}\nvariants: [sm_ln_g]\n")
    proc = run_cli("cost", str(bad))
    assert proc.returncode == 2 and "generate.new_tokens" in proc.stderr and "Traceback" not in proc.stderr
    override = write_suite(
        tmp_path,
        "model: {L: 1, H: 2, d: 16, T: 4}\nvariants: [{variant: sm_ln_g, overrides: {new_tokens: 2}}]\n",
        "o.yaml",
    )
    proc = run_cli("cost", str(override))
    assert proc.returncode == 2 and "set the tokens to generate under 'generate'" in proc.stderr
    vocab = write_suite(tmp_path, "model: {L: 1, H: 2, d: 16, T: 4}\nvocab: 16\nvariants: [sm_ln_g]\n", "v.yaml")
    proc = run_cli("cost", str(vocab))
    assert proc.returncode == 2 and "'vocab' is the end-to-end scope's" in proc.stderr


GEN_SUITE = """name: gen_tiny
model: {L: 2, H: 2, d: 32, T: 8}
generate: {new_tokens: 3}
repeats: 1
variants: [sm_ln_g, sm_scfuffn_pruned, hehofmann_scffn]
"""


def _sampled_and_full(suite, tmp_path, *extra):
    """`pibench run SUITE` sampled and with --full: each record, and each run's stdout with its lines
    joined (a wrapped footer reads as one line)."""
    records, said = {}, {}
    for mode in ("sampled", "full"):
        out = tmp_path / f"{mode}.json"
        flags = ["--full"] if mode == "full" else []
        proc = run_cli("run", str(suite), "--out", str(out), "--no-progress", *flags, *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
        records[mode], said[mode] = json.loads(out.read_text()), " ".join(proc.stdout.split())
    return records, said


def test_a_measured_generation_is_exact_sampled_or_full(tmp_path):
    """`pibench run` of a tiny generating suite under CrypTen: the prefill, then two decode steps over the
    cache with reused weight masks. Sampled (one layer per kind) and --full (every layer) runs give every
    pass the same bytes and rounds, and so does the record's prediction (the shipped calibration on the
    symbolic trace of each pass, decode steps opening no weight); the set-up opens every weight products use
    once: SM + LN + G at d=32 has 32x96 + 32x32 + 32x128 + 128x32 = 12,288 matrix elements and two
    LayerNorm gains of 32 a layer, 12,352, 2 layers, 8 B a party, both parties: 2 * 12352 * 8 * 2 =
    395,264 B, which the prefill's bytes already hold."""
    records, said = _sampled_and_full(write_suite(tmp_path, GEN_SUITE, "gen.yaml"), tmp_path)
    for mode in ("sampled", "full"):
        assert "generation: 3 tokens, the prefill (pre.), then 2 decode steps" in said[mode]
    for sampled, full in zip(records["sampled"]["variants"], records["full"]["variants"], strict=True):
        s, f = sampled["measured"]["generation"], full["measured"]["generation"]
        shape = [(p["context"], p["bytes"], p["rounds"]) for p in s["steps"]]
        assert shape == [(p["context"], p["bytes"], p["rounds"]) for p in f["steps"]], sampled["name"]
        assert [c for c, _, _ in shape] == [8, 9, 10] and shape[0][1] == sampled["measured"]["bytes"]
        assert shape[1][1] < shape[0][1] / 3  # a decode step moves one row and no weights
        assert s["setup"]["bytes"] == f["setup"]["bytes"] > 0
        predicted = sampled["predicted"]["generation"]
        assert [(p["context"], p["bytes"], p["rounds"]) for p in predicted["steps"]] == shape, sampled["name"]
        assert predicted["setup_bytes"] == s["setup"]["bytes"]
    assert records["full"]["variants"][0]["measured"]["generation"]["setup"]["bytes"] == 395_264
    # issue 32: LayerNorm gains and residual scales were re-opened at every decode step. A LayerNorm of r rows of
    # 32 moves 48 r 32 + 384 r + 16 x 32 (its gain, where opened) bytes: the prefill's 4 (2 a layer) at r = 8,
    # 4 x (12288 + 3072 + 512) = 63,488 B; a decode step's at r = 1 open no gain: 4 x (1536 + 384) = 7,680 B
    steps = records["full"]["variants"][0]["measured"]["generation"]["steps"]
    assert [st["by_kind"]["layernorm"]["bytes"] for st in steps] == [63_488, 7_680, 7_680]
    # SM + ScFuFFN pruned scales each branch by a weight (alpha, beta): 16 x (elements + 1) bytes where the
    # scale is opened, 16 x elements after: a decode step's "other" is 16 x 32 per scaled branch, no more
    pruned = records["full"]["variants"][1]
    decode_other = [st["by_kind"]["other"]["bytes"] for st in pruned["measured"]["generation"]["steps"][1:]]
    branches = sum(1 for i in range(2) for _ in ("alpha", "beta")[: 1 + (i < pruned["config"]["ffn_blocks_kept"])])
    assert decode_other == [16 * 32 * branches] * 2
    # the gate compares a generation's counts: sampled against full passes, one more byte in the last
    # decode step of one variant is a regression of that token, of the generation and of nothing else
    # counted in the generation's metrics
    from pibench.results import gate
    from pibench.results.records import validate_record

    old = validate_record(records["sampled"], "baseline")
    assert gate.compare(old, validate_record(records["full"], "full"), counted_only=True).status == gate.PASS
    worse = copy.deepcopy(records["sampled"])
    last = worse["variants"][1]["measured"]["generation"]["steps"][-1]
    last["bytes"] += 1
    last["by_kind"]["softmax"]["bytes"] += 1
    found = gate.compare(old, validate_record(worse, "candidate"), counted_only=True)
    assert found.status == gate.REGRESSION
    assert {(f.variant, f.metric) for f in found.regressions} == {
        ("sm_scfuffn_pruned", "token.bytes"),
        ("sm_scfuffn_pruned", "generation.bytes"),
    }


def test_no_variant_needs_more_than_its_context():
    """SM(t)'s temperatures: one row per position of the context (prompt and every fed-back token)."""
    cfg = resolve("ereg_smt_scfuffn", TINY).replace(new_tokens=NEW)
    shapes = {n: tuple(w.shape) for n, w in TorchModel(cfg).effective_weights().items() if "inv_temp" in n}
    assert shapes == {"h0.attn.inv_temp": (2, 6, 1), "h1.attn.inv_temp": (2, 6, 1)}
    assert math.prod(shapes["h0.attn.inv_temp"]) == 2 * (4 + NEW - 1)


def _prefill_and_steps_equal_the_whole(cfg):
    """The prefill then one decode step per position give the hidden states of the whole sequence."""
    ops, w = TorchOps(), _weights(cfg)
    x = _prompt_and_more(cfg, cfg.context)
    whole = forward(ops, w, x, cfg.replace(T=cfg.context, new_tokens=0))
    cache = KVCache()
    steps = [forward(ops, w, x[: cfg.T], cfg, cache=cache)]
    steps += [forward(ops, w, x[p : p + 1], cfg, cache=cache) for p in range(cfg.T, cfg.context)]
    torch.testing.assert_close(torch.cat(steps), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["ereg_smt_scfuffn", "ereg_smt_scfuffn_pruned"])
def test_smt_scales_whichever_is_smaller_and_both_forms_agree(name):
    """SM(t) multiplies the queries (H, n, dh) where dh is below the positions seen, else the scores
    (H, n, t): a prompt of 6 (scores: 6 < dh = 8), decode steps up to context 12 (queries from t = 9 on),
    and the whole sequence of 12 (queries) give the same hidden states."""
    cfg = resolve(name, {"L": 2, "H": 2, "d": 16, "T": 6}).replace(new_tokens=7)
    _prefill_and_steps_equal_the_whole(cfg)


@pytest.mark.parametrize("name", ["hehofmann_scffn", "hehofmann_scfuffn_pruned"])
def test_shaped_attention_sums_where_dh_is_small_and_both_forms_agree(name):
    """He & Hofmann's shaped attention scales A (H, n, t) where 3 dh is not below the positions seen t,
    else sums a X + b (A X) - c (C X) over (H, n, dh): dh = 2 (d=8, H=4), a prompt of 5 (scale: 5 < 6),
    decode steps up to context 11 (sum from t = 7 on), and the whole sequence of 11 (sum) give the same
    hidden states."""
    cfg = resolve(name, {"L": 2, "H": 4, "d": 8, "T": 5}).replace(new_tokens=7)
    _prefill_and_steps_equal_the_whole(cfg)


def test_shaped_attention_counts_its_secret_products_by_hand():
    """He & Hofmann + ScFuFFN, GPT-2 width (H=12, dh=64): at T=128 (3 dh = 192 >= 128) b A is one secret
    product of H*T*T = 12*128*128 = 196,608 elements a layer, beside the two residual scalars' T*d =
    98,304 each: 393,216; at T=256 the sum's three of H*T*dh = T*d = 196,608 each and the residual
    scalars' 196,608 each: 5 * 196,608 = 983,040 (scaling A: 12*256*256 + 2*196,608 = 1,179,648). The
    papers' counts are unchanged by the form (and the input stage's one LayerNorm)."""
    for T, per_layer in ((128, 393_216), (256, 983_040)):
        notation = f"SM:144×ℝ^{{{T}×{T}}} LN:1×ℝ^{{{T}×768}}"
        c = analyse(resolve("hehofmann_scfuffn", {**GPT2, "T": T}))
        assert c.tally.elementwise["mul"] == 12 * per_layer, T
        assert nonlinear_notation(c) == notation


def test_smt_at_gpt2_size_multiplies_the_queries():
    """EReg(SM(t) + ScFuFFN), GPT-2 at T=128 (dh = 64 < 128): secret x secret elements per layer are
    the queries' H*T*dh = 12*128*64 = 98,304 and the two residual scalars' T*d = 98,304 each, so
    3 * 98,304 * 12 layers = 3,538,944 (scaling the scores would be 12*128*128 = 196,608 per layer)."""
    cfg = resolve("ereg_smt_scfuffn", GPT2)
    c = analyse(cfg)
    assert c.tally.elementwise["mul"] == 3_538_944
    assert nonlinear_notation(c) == "SM:144×ℝ^{128×128}"  # the papers' counts unchanged


CRYPTEN_DECODE = """
from pibench.backends.crypten.interpreter import CrypTenOps
from pibench.backends.crypten.meter import Meter
from pibench.models.definition import KVCache, Span, forward
from pibench.models.plaintext import TorchModel, TorchOps
from pibench.models.variants import resolve
errors = {}
for name in ("sm_ln_g", "ereg_smt_scfuffn", "hehofmann_scffn"):
    cfg = resolve(name, {"L": 1, "H": 2, "d": 16, "T": 4}).replace(new_tokens=3)
    with torch.no_grad():
        w = {n: v.detach() for n, v in TorchModel(cfg, seed=1).effective_weights().items()}
    x = torch.randn(cfg.context, cfg.d, generator=torch.Generator().manual_seed(2))
    secret = {n: crypten.cryptensor(v, src=0) for n, v in w.items()}
    ops, plain = CrypTenOps(Meter(rank, 2), max_method="log_reduction"), TorchOps()
    mine, ref, out, expect = KVCache(), KVCache(), [], []
    for lo, hi in ((0, 4), (4, 5), (5, 6)):  # the prefill, then two decode steps
        out.append(forward(ops, secret, crypten.cryptensor(x[lo:hi], src=1), cfg, cache=mine).get_plain_text())
        expect.append(forward(plain, w, x[lo:hi], cfg, cache=ref))
    errors[name] = [(o - e).abs().max().item() for o, e in zip(out, expect)]
print(json.dumps({"rank": rank, "errors": errors}))
crypten.uninit()
"""


def test_crypten_interprets_the_prefill_and_decode_steps():
    """Two CrypTen parties on loopback run a prefill and two decode steps over the cache (concat,
    rows and the (n, t) constants under MPC) and reveal what the plaintext interpreter computes, to
    fixed-point accuracy (16 fraction bits, approximate exp and reciprocal)."""
    parties = run_crypten_pair(CRYPTEN_DECODE)
    assert [rc for rc, _, _ in parties] == [0, 0], [err[-2000:] for _, _, err in parties]
    errors = json.loads(parties[0][1].strip().splitlines()[-1])["errors"]
    assert set(errors) == {"sm_ln_g", "ereg_smt_scfuffn", "hehofmann_scffn"}
    assert all(len(e) == 3 and max(e) < 0.01 for e in errors.values()), errors  # seen: at most 4e-3


CRYPTEN_END_TO_END = """
from pibench.backends.crypten.interpreter import CrypTenOps
from pibench.backends.crypten.masks import WeightMasks
from pibench.backends.crypten.meter import Meter
from pibench.models.definition import KVCache, step
from pibench.models.plaintext import TorchModel, TorchOps
from pibench.models.variants import resolve
found = {}
for name in ("sm_ln_g", "sm_scfuffn", "hehofmann_scffn"):
    cfg = resolve(name, {"L": 1, "H": 2, "d": 16, "T": 4}).replace(new_tokens=3, scope="end_to_end", vocab=32)
    with torch.no_grad():
        w = {n: v.detach() for n, v in TorchModel(cfg, seed=1).effective_weights().items()}
    w["wte"] = w["wte"] * 50  # logits far apart: fixed-point error cannot swap the top two
    prompt = torch.nn.functional.one_hot(torch.tensor([3, 1, 4, 1]), 32).float()
    secret = {n: crypten.cryptensor(v, src=0) for n, v in w.items()}
    masks = WeightMasks(rank)
    ops, plain = CrypTenOps(Meter(rank, 2), max_method="log_reduction", masks=masks), TorchOps()
    ops.use_weights(secret)
    mine, ref = KVCache(), KVCache()
    tokens, expect = crypten.cryptensor(prompt, src=1), prompt
    chosen, wanted = [], []
    for _ in range(cfg.new_tokens):  # the one-hot row chosen under MPC feeds the next step, unrevealed
        tokens, _ = step(ops, secret, tokens, cfg, mine)
        expect, _ = step(plain, w, expect, cfg, ref)
        chosen.append(tokens)
        wanted.append(int(expect.argmax()))
    # only the generated tokens are revealed, to the client
    ids = [c.get_plain_text(dst=1) for c in chosen]
    # every weight a product with a secret uses: all but the biases and wpe (only added; wpe's rows) and, while
    # 3 dh = 24 is over the positions seen, He & Hofmann's a and c (they scale public I and C: local)
    local = ("wpe", "h0.attn.shape_a", "h0.attn.shape_c")
    matrices = sum(v.numel() for n, v in w.items() if not n.endswith(".b") and n not in local)
    found[name] = {
        "mpc": [int(i.argmax()) for i in ids] if rank == 1 else None,
        "plain": wanted,
        "opened": [masks.opened, matrices],
    }
print(json.dumps({"rank": rank, "found": found}))
crypten.uninit()
"""


def test_crypten_generates_the_plaintext_tokens_end_to_end():
    """Two CrypTen parties: the client's secret prompt as one-hot rows, embedding lookup, the stack,
    ln_f, the tied LM head and the argmax under MPC; each chosen token feeds the next step as a secret
    one-hot row. The client learns the plaintext interpreter's greedy tokens (and only them). Weight
    masks are reused: over three tokens each weight a product uses (matrices, LayerNorm gains, scales) is
    opened once, the LM head's (wte^T) being the embedding's transposed."""
    parties = run_crypten_pair(CRYPTEN_END_TO_END)
    assert [rc for rc, _, _ in parties] == [0, 0], [err[-2000:] for _, _, err in parties]
    client = json.loads(parties[1][1].strip().splitlines()[-1])["found"]
    assert set(client) == {"sm_ln_g", "sm_scfuffn", "hehofmann_scffn"}
    for name, got in client.items():
        assert len(got["plain"]) == 3 and got["mpc"] == got["plain"], (name, got)
        opened, matrices = got["opened"]
        assert opened == matrices, (name, got)  # every multiplied weight (wte, the layers', gains), once each


CRYPTEN_MASKS = """
import crypten.communicator as comm_module
from pibench.backends.crypten.masks import WeightMasks
crypten.cfg.communicator.verbose = True
comm = comm_module.get()
torch.manual_seed(7)
w_plain, xs_plain = torch.randn(16, 24) * 0.3, [torch.randn(n, 16) for n in (4, 1, 1)]
g_plain = torch.rand(16) + 0.5  # a LayerNorm's gain: an elementwise product with a fixed weight
out = {}
for mode in ("fresh", "reuse"):
    w, g = crypten.cryptensor(w_plain, src=0), crypten.cryptensor(g_plain, src=0)
    masks = WeightMasks(rank)
    seen, scaled = [], []
    for x_plain in xs_plain:  # a prefill of 4 positions, then two decode steps
        x = crypten.cryptensor(x_plain, src=1)
        comm.reset_communication_stats()
        y = x.matmul(w) if mode == "fresh" else masks.product(x, w, "matmul")
        stats = comm.get_communication_stats()
        err = (y.get_plain_text() - x_plain @ w_plain).abs().max().item()
        seen.append([stats["bytes"], stats["rounds"], err])
        comm.reset_communication_stats()
        z = x * g if mode == "fresh" else masks.product(x, g, "mul")
        stats = comm.get_communication_stats()
        err = (z.get_plain_text() - x_plain * g_plain).abs().max().item()
        scaled.append([stats["bytes"], stats["rounds"], err])
    out[mode] = {"steps": seen, "scaled": scaled, "opened": masks.opened}
print(json.dumps({"rank": rank, "out": out}))
crypten.uninit()
"""


def test_reused_weight_masks_open_each_weight_once():
    """x @ W three times (4 rows, then 1, then 1; W 16 x 24 = 384 elements). CrypTen's fresh triple opens
    x - A and W - B every time in one round; CrypTen's own counter (its all-reduce: 16 B per opened
    element) says 16 * (64 + 384) = 7168 B, then 16 * (16 + 384) = 6400 B twice. Reused, the first
    product is the same and the later ones open x - A alone: 16 * 16 = 256 B. The same for x * g, g a
    gain of 16: 16 * (64 + 16) = 1280 B, then 16 * (16 + 16) = 512 B twice fresh, 16 * 16 = 256 B reused.
    Every product is x @ W (x * g) to fixed point."""
    parties = run_crypten_pair(CRYPTEN_MASKS)
    assert [rc for rc, _, _ in parties] == [0, 0], [err[-2000:] for _, _, err in parties]
    out = json.loads(parties[0][1].strip().splitlines()[-1])["out"]
    fresh = [(b, r) for b, r, _ in out["fresh"]["steps"]]
    reuse = [(b, r) for b, r, _ in out["reuse"]["steps"]]
    assert fresh == [(7168, 1), (6400, 1), (6400, 1)]
    assert reuse == [(7168, 1), (256, 1), (256, 1)]
    assert [(b, r) for b, r, _ in out["fresh"]["scaled"]] == [(1280, 1), (512, 1), (512, 1)]
    assert [(b, r) for b, r, _ in out["reuse"]["scaled"]] == [(1280, 1), (256, 1), (256, 1)]
    assert out["reuse"]["opened"] == 384 + 16 and out["fresh"]["opened"] == 0
    assert all(err < 1e-3 for mode in out.values() for _, _, err in mode["steps"] + mode["scaled"])


SPU_END_TO_END = """
import json, sys, torch
from pibench.backends.base import Rendezvous
from pibench.backends.spu.session import SPUSession
from pibench.backends.spu.settings import SPUSettings
from pibench.models.definition import KVCache, param_specs, step
from pibench.models.plaintext import TorchModel, TorchOps
from pibench.models.variants import resolve
rank = int(sys.argv[1])
session = SPUSession(rank, Rendezvous(sys.argv[2]), SPUSettings(), 60.0)
cfg = resolve("sm_ln_g", {"L": 1, "H": 2, "d": 16, "T": 4}).replace(new_tokens=3, scope="end_to_end", vocab=32)
with torch.no_grad():
    w = {n: v.detach() for n, v in TorchModel(cfg, seed=1).effective_weights().items()}
w["wte"] = w["wte"] * 50  # logits far apart: fixed-point error cannot swap the top two
prompt = torch.nn.functional.one_hot(torch.tensor([3, 1, 4, 1]), 32).float()
specs = {n: s.shape for n, s in param_specs(cfg).items()}
secret, tokens = session.share(w if rank == 0 else None, specs, prompt if rank == 1 else None, (4, 32))
mine, ref, expect, chosen, wanted = KVCache(), KVCache(), prompt, [], []
for _ in range(cfg.new_tokens):  # the chosen one-hot row feeds the next step as a secret
    tokens, _ = step(session.ops, secret, tokens, cfg, mine)
    expect, _ = step(TorchOps(), w, expect, cfg, ref)
    chosen.append(tokens)
    wanted.append(int(expect.argmax()))
got = [int(session.reveal(c).argmax()) for c in chosen]
print(json.dumps({"rank": rank, "mpc": got, "plain": wanted}))
session.close()
"""


def test_spu_generates_the_plaintext_tokens_end_to_end():
    """Two SPU parties (Cheetah, op by op) generate three tokens end to end, the argmax's one-hot row fed
    back as a secret: the plaintext interpreter's greedy tokens."""
    import sys

    from pibench.util.procs import free_port
    from tests.conftest import run_together

    url = f"tcp://127.0.0.1:{free_port()},tcp://127.0.0.1:{free_port()}"
    parties = run_together([[sys.executable, "-c", SPU_END_TO_END, str(r), url] for r in (0, 1)], timeout=300)
    assert [rc for rc, _, _ in parties] == [0, 0], [err[-2000:] for _, _, err in parties]
    out = json.loads(parties[0][1].strip().splitlines()[-1])
    assert len(out["plain"]) == 3 and out["mpc"] == out["plain"], out


E2E_SUITE = """name: e2e_tiny
model: {L: 2, H: 2, d: 32, T: 8}
generate: {new_tokens: 4}
scope: end_to_end
vocab: 64
repeats: 1
variants: [sm_ln_g, sm_scfuffn_pruned, hehofmann_scffn]
"""


def test_an_end_to_end_generation_is_measured_exactly_and_chooses_the_plaintexts_tokens(tmp_path):
    """`pibench run` end to end under CrypTen: the prompt's one-hot rows times the token embedding, the
    stack, the logits and the argmax under MPC, each chosen one-hot row fed back unrevealed, the tokens
    revealed to the client. Sampled (one layer per kind; the head, the same shapes at every step, at
    decode steps 1 and 3 of 3, step 2 counting its figures) and --full (every layer, the head at every
    step) give every pass the same bytes and rounds, and so does the prediction (the calibration's
    argmax table at vocab 64; the tied LM head reuses the mask the embedding lookup opened). The set-up
    opens wte once, (64 x 32) elements, and ln_f's gain (32), beside each layer's weights and gains: SM + LN
    + G 2 * (12,288 + 64) + 2,048 + 32 = 26,784 elements, 16 B each for both parties: 428,544 B. With
    --full the client learns the plaintext
    interpreter's greedy tokens on the same weights and prompt; a sampled run, whose step 2 chose no
    token, reports none."""
    plots = tmp_path / "plots"
    records, said = _sampled_and_full(write_suite(tmp_path, E2E_SUITE, "e2e.yaml"), tmp_path, "--plot", str(plots))
    # per token against position, per variant: the stacked kinds and the paper-wan projection
    assert {p.name for p in plots.glob("*-generation.*")} == {
        f"{m}-generation.{e}" for m in records for e in ("png", "svg")
    }
    assert "tokens revealed to the client: the plaintext interpreter's greedy ones, for every variant" in said["full"]
    assert (
        "the head (embedding lookup, logits, argmax: the same shapes at every step) ran at decode steps 1 and 3"
        in said["sampled"]
    )
    for sampled, full in zip(records["sampled"]["variants"], records["full"]["variants"], strict=True):
        s, f = sampled["measured"], full["measured"]
        shape = [(p["context"], p["bytes"], p["rounds"]) for p in s["generation"]["steps"]]
        assert shape == [(p["context"], p["bytes"], p["rounds"]) for p in f["generation"]["steps"]], sampled["name"]
        predicted = sampled["predicted"]["generation"]
        assert [(p["context"], p["bytes"], p["rounds"]) for p in predicted["steps"]] == shape, sampled["name"]
        assert predicted["setup_bytes"] == s["generation"]["setup"]["bytes"] == f["generation"]["setup"]["bytes"]
        assert s["by_kind"]["argmax"]["bytes"] > 0 and s["by_kind"]["embedding"]["bytes"] > 0
        assert (s["generation"]["head_steps"], f["generation"]["head_steps"]) == ([1, 3], None)
        assert s["tokens"] is None and len(f["tokens"]["generated"]) == 4
        assert f["tokens"]["generated"] == f["tokens"]["plaintext"], sampled["name"]
        assert f["usable"] and s["usable"]
    assert records["full"]["variants"][0]["measured"]["generation"]["setup"]["bytes"] == 428_544


SPU_GEN_SUITE = """name: e2e_spu
model: {L: 2, H: 2, d: 16, T: 4}
generate: {new_tokens: 3}
scope: end_to_end
vocab: 32
backend: spu
variants: [sm_ln_g, sm_scfuffn]
"""


@pytest.mark.skipif(importlib.util.find_spec("spu") is None, reason="spu is not installed here")
def test_spu_measures_an_end_to_end_generation_beside_its_prediction(tmp_path):
    """`pibench run` end to end under SPU (op by op), --full: the prefill and two decode steps at contexts
    4, 5 and 6, every pass's kinds counted (the embedding lookup of the chosen one-hot row, the argmax
    over 32), nothing opened once (SPU keeps no weight masks: no set-up), the client learning the
    plaintext interpreter's greedy tokens, and the prediction (the shipped SPU calibration on each
    pass's trace) beside the measurement; SPU's rounds are messages both parties send at once, so the
    table's projections charge 0.55 RTT each (measured) and say so."""
    suite = write_suite(tmp_path, SPU_GEN_SUITE, "spu.yaml")
    out = tmp_path / "spu.json"
    proc = run_cli("run", str(suite), "--out", str(out), "--no-progress", "--full", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = " ".join(proc.stdout.split())
    assert "messages x 0.55 RTT: the backend's rounds are messages both parties send at once" in said
    for v in json.loads(out.read_text())["variants"]:
        m = v["measured"]
        gen, predicted = m["generation"], v["predicted"]["generation"]
        assert [p["context"] for p in gen["steps"]] == [4, 5, 6] == [p["context"] for p in predicted["steps"]]
        assert gen["setup"] is None and gen["head_steps"] is None
        for p in gen["steps"]:
            assert p["by_kind"]["embedding"]["bytes"] > 0 and p["by_kind"]["argmax"]["bytes"] > 0, v["name"]
            assert p["by_kind"]["linear"]["bytes"] > 0
        assert gen["steps"][0]["bytes"] == m["bytes"]
        assert m["tokens"]["generated"] == m["tokens"]["plaintext"] and len(m["tokens"]["generated"]) == 3
        # SPU's fitted models hold at GPT-2's widths (docs/generation.md), not at d=16, where per-call
        # buffer refills dominate: here the prediction is only there, one figure per pass
        assert all(p["bytes"] > 0 and p["rounds"] > 0 for p in predicted["steps"])
        assert gen["steps"][1]["bytes"] < gen["steps"][0]["bytes"]  # a token, not the prompt
