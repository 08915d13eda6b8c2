"""The one model definition: a GPT-2-style causal decoder stack, written once against `Ops`.

`forward(ops, weights, x, cfg)` maps input embeddings x (T, d) to hidden states (T, d): the stack,
the papers' FLOP convention (`scope: layers`). End to end (`scope: end_to_end`), `embed` turns secret
one-hot token rows into those embeddings, and `head` the last hidden state into the next token's
one-hot row (final LayerNorm, tied LM head, argmax); `step` is the three in turn. `param_specs(cfg)`
lists every weight with its shape (`head_param_specs`, `input_param_specs` and `layer_param_specs` a
part of them); interpreters build `weights` from it.

Generation runs the same code with a `KVCache`: the prefill is `forward` over the T prompt positions,
each decode step `forward` over one new position (x: (1, d)) attending to every cached one. Every
interpreter's tensors have a `.shape` (the positions of x are `x.shape[0]`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pibench.models.config import ModelConfig
from pibench.models.ops import Ops, Tensor


@dataclass(frozen=True)
class ParamSpec:
    """Shape of one weight, how a freshly built model initialises it, and how the model uses it: in a
    product with a secret ("product": a matrix, a LayerNorm gain, a scale; under 2PC each such product
    opens the weight's masked value, which a deployment opens once: `pibench.backends.crypten.masks`) or
    only added ("sum": a bias, the position embedding; adding shares is local)."""

    shape: tuple[int, ...]
    init: Literal["normal", "ones", "zeros"] = "normal"
    use: Literal["product", "sum"] = "product"


def param_specs(cfg: ModelConfig) -> dict[str, ParamSpec]:
    """Every weight of the model, by name ("h3.attn.qkv.w", ...), in a stable order."""
    specs = head_param_specs(cfg) | input_param_specs(cfg)
    for index in range(cfg.L):
        specs |= layer_param_specs(cfg, index)
    return specs


def head_param_specs(cfg: ModelConfig) -> dict[str, ParamSpec]:
    """The end-to-end scope's weights (none for `scope: layers`): the token embedding wte (vocab, d),
    which the LM head shares (tied, as GPT-2), the position embedding wpe (context, d), and the final
    LayerNorm ln_f where the variant normalises before each layer (pre_ln)."""
    if cfg.scope != "end_to_end":
        return {}
    specs = {"wte": ParamSpec((cfg.vocab, cfg.d)), "wpe": ParamSpec((cfg.context, cfg.d), use="sum")}
    return specs | (_layernorm_specs("ln_f", cfg.d) if cfg.norm == "pre_ln" else {})


def input_param_specs(cfg: ModelConfig) -> dict[str, ParamSpec]:
    """The weights of the input stage: He & Hofmann's single LayerNorm, else none."""
    return _layernorm_specs("ln_in", cfg.d) if cfg.norm == "input_ln" else {}


def _layernorm_specs(name: str, d: int) -> dict[str, ParamSpec]:
    return {f"{name}.g": ParamSpec((d,), "ones"), f"{name}.b": ParamSpec((d,), "zeros", "sum")}


def layer_param_specs(cfg: ModelConfig, index: int) -> dict[str, ParamSpec]:
    """The weights of layer `index`. Q, K and V are one (d, 3d) matrix (Q, K: (d, 2d) in shaped
    attention), as GPT-2 stores them: one product instead of three."""
    d, H, p = cfg.d, cfg.H, f"h{index}."
    specs: dict[str, ParamSpec] = {}

    def linear(name: str, n_in: int, n_out: int) -> None:
        specs[f"{p}{name}.w"] = ParamSpec((n_in, n_out))
        if cfg.bias:
            specs[f"{p}{name}.b"] = ParamSpec((n_out,), "zeros", "sum")

    if cfg.norm == "pre_ln":
        specs |= _layernorm_specs(p + "ln1", d)
    if cfg.attention == "shaped":
        linear("attn.qk", d, 2 * d)
        for coef in ("a", "b", "c"):
            specs[f"{p}attn.shape_{coef}"] = ParamSpec((H, 1, 1), "ones")
    else:
        linear("attn.qkv", d, 3 * d)
        linear("attn.o", d, d)
    if cfg.attention == "softmax_t":  # one per head and position of the context: position p uses row p
        specs[p + "attn.inv_temp"] = ParamSpec((H, cfg.context, 1), "ones")
    if cfg.ffn != "standard":
        specs[p + "res.alpha"] = ParamSpec((1,), "ones")
    if not cfg.has_ffn(index):
        return specs
    if cfg.norm == "pre_ln":
        specs |= _layernorm_specs(p + "ln2", d)
    if cfg.ffn == "scaled_fused":
        linear("ffn.fused", d, d)
    else:
        linear("ffn.in", d, cfg.d_ff)
        linear("ffn.out", cfg.d_ff, d)
    if cfg.ffn != "standard":
        specs[p + "res.beta"] = ParamSpec((1,), "ones")
    return specs


@dataclass(frozen=True)
class Span:
    """The positions one pass computes: `new` ones after `past` cached ones. The prefill is
    Span(0, T); the decode step at context t (t positions seen, the newest one computed) Span(t-1, 1)."""

    past: int
    new: int

    @property
    def seen(self) -> int:
        """Positions attended to: every cached one and the new ones."""
        return self.past + self.new

    @staticmethod
    def decode(t: int) -> Span:
        return Span(t - 1, 1)


@dataclass
class KVCache:
    """What attention keeps of every position seen so far, per layer index: keys and values (H, t, dh)
    each (shaped attention: its keys, and the split input it mixes in place of values, W_V = I).

    A layer appends its new positions' keys and values when it runs; `past(index)` is how many
    positions layer `index` had cached before. Positions are absolute: a new position p attends to
    positions 0..p, and SM(t) uses row p of its per-position inverse temperature."""

    keys: dict[int, Tensor] = field(default_factory=dict)
    values: dict[int, Tensor] = field(default_factory=dict)
    lengths: dict[int, int] = field(default_factory=dict)
    positions: int = 0  # positions embedded so far (end to end: the next one's position embedding row)

    def copy(self) -> KVCache:
        """The cache as it is now; extending either leaves the other as it was."""
        return KVCache(dict(self.keys), dict(self.values), dict(self.lengths), self.positions)

    def past(self, index: int) -> int:
        return self.lengths.get(index, 0)

    def extend(self, ops: Ops, index: int, k: Tensor, v: Tensor, new: int) -> tuple[Tensor, Tensor]:
        """Layer `index`'s keys and values of every position, its `new` ones (H, new, dh) appended."""
        if index in self.keys:
            k, v = ops.concat(self.keys[index], k), ops.concat(self.values[index], v)
        self.keys[index], self.values[index] = k, v
        self.lengths[index] = self.past(index) + new
        return k, v


def forward(
    ops: Ops,
    weights: Mapping[str, Tensor],
    x: Tensor,
    cfg: ModelConfig,
    layers: Sequence[int] | None = None,
    cache: KVCache | None = None,
) -> Tensor:
    """Input embeddings x (n, d) -> hidden states (n, d): the input stage, then every layer (or only
    `layers`, in that order: the MPC runner measures a sample of layers this way). Without a cache,
    the n = T positions of a prompt; with one, n new positions after those it holds."""
    x = input_stage(ops, weights, x, cfg)
    for index in range(cfg.L) if layers is None else layers:
        x = layer(ops, weights, x, cfg, index, cache)
    return x


def embed(ops: Ops, weights: Mapping[str, Tensor], tokens: Tensor, past: int) -> Tensor:
    """Secret one-hot token rows (n, vocab) of positions past..past+n-1 -> input embeddings (n, d):
    the lookup of a secret id is one product with the token embedding; positions are public, so their
    embedding's rows are added locally."""
    x = ops.matmul(tokens, weights["wte"], "head.embedding")
    return ops.add(x, ops.rows(weights["wpe"], past, past + tokens.shape[0]))


def logits(ops: Ops, weights: Mapping[str, Tensor], h: Tensor, cfg: ModelConfig) -> Tensor:
    """Hidden states (n, d) -> the last position's logits (1, vocab): only the last position needs
    logits (greedy generation); the final LayerNorm where the variant normalises, then the LM head tied
    to the token embedding (h wte^T)."""
    n = h.shape[0]
    last = ops.rows(h, n - 1, n) if n > 1 else h
    if cfg.norm == "pre_ln":
        last = ops.layernorm(last, weights["ln_f.g"], weights["ln_f.b"])
    return ops.matmul(last, ops.transpose(weights["wte"]), "head.lm_head")


def head(ops: Ops, weights: Mapping[str, Tensor], h: Tensor, cfg: ModelConfig) -> tuple[Tensor, Tensor]:
    """Hidden states (n, d) -> the next token's one-hot row (1, vocab), chosen by argmax under MPC, and
    its logits (1, vocab) (`logits`)."""
    scores = logits(ops, weights, h, cfg)
    return ops.argmax(scores), scores


def step(
    ops: Ops,
    weights: Mapping[str, Tensor],
    tokens: Tensor,
    cfg: ModelConfig,
    cache: KVCache,
    layers: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """One pass end to end: one-hot rows (n, vocab) of the positions after those `cache` holds (the
    prompt, or the last token chosen) -> the next token's one-hot row and logits (`head`)."""
    past = cache.positions
    h = forward(ops, weights, embed(ops, weights, tokens, past), cfg, layers, cache)
    cache.positions = past + tokens.shape[0]
    return head(ops, weights, h, cfg)


def input_stage(ops: Ops, weights: Mapping[str, Tensor], x: Tensor, cfg: ModelConfig) -> Tensor:
    """What runs once before the first layer: He & Hofmann's single LayerNorm, else nothing."""
    if cfg.norm == "input_ln":
        x = ops.layernorm(x, weights["ln_in.g"], weights["ln_in.b"])
    return x


def layer(
    ops: Ops, weights: Mapping[str, Tensor], x: Tensor, cfg: ModelConfig, index: int, cache: KVCache | None = None
) -> Tensor:
    """Layer `index` of the stack: (n, d) -> (n, d), n new positions after those `cache` holds."""
    block = _parallel_block if cfg.attention == "shaped" else _sequential_block
    span = Span(cache.past(index) if cache is not None else 0, x.shape[0])
    return block(_Layer(ops, weights, cfg, index, cache, span), x)


def multiplied(specs: Mapping[str, ParamSpec]) -> dict[str, ParamSpec]:
    """The weights of `specs` that products use (`ParamSpec.use`): what a 2PC set-up opens once."""
    return {name: spec for name, spec in specs.items() if spec.use == "product"}


def layer_weight_specs(cfg: ModelConfig, layers: Sequence[int]) -> dict[str, ParamSpec]:
    """The weights that the head, the input stage and `layers` read (a sampled run shares only these)."""
    specs = head_param_specs(cfg) | input_param_specs(cfg)
    for index in layers:
        specs |= layer_param_specs(cfg, index)
    return specs


@dataclass(frozen=True)
class _Layer:
    """One layer's view of the weights, with the sub-blocks every layer kind shares."""

    ops: Ops
    weights: Mapping[str, Tensor]
    cfg: ModelConfig
    index: int
    cache: KVCache | None
    span: Span  # the positions this pass computes

    def cached(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values (H, new, dh) -> those of every position seen (H, seen, dh)."""
        return (k, v) if self.cache is None else self.cache.extend(self.ops, self.index, k, v, self.span.new)

    def w(self, name: str) -> Tensor:
        return self.weights[f"h{self.index}.{name}"]

    def linear(self, x: Tensor, name: str, role: str) -> Tensor:
        y = self.ops.matmul(x, self.w(f"{name}.w"), role)
        return self.ops.add(y, self.w(f"{name}.b")) if self.cfg.bias else y

    def norm(self, x: Tensor, name: str) -> Tensor:
        if self.cfg.norm != "pre_ln":
            return x
        return self.ops.layernorm(x, self.w(f"{name}.g"), self.w(f"{name}.b"))

    def residual_scale(self, branch: Tensor, name: str) -> Tensor:
        """Scaled FFN forms multiply each residual branch by a learnable per-layer scalar."""
        return branch if self.cfg.ffn == "standard" else self.ops.mul(branch, self.w(name))

    def heads(self, x: Tensor, name: str, parts: int) -> list[Tensor]:
        """One product x W (W: d x parts*d), split into `parts` tensors of heads (H, T, dh)."""
        projected = self.ops.split(self.linear(x, name, "attn.proj"), parts)
        return [self.ops.split_heads(p, self.cfg.H) for p in projected]

    def scores(self, q: Tensor, k: Tensor, role: str) -> Tensor:
        """Causal softmax attention probabilities (H, new, seen) from the new positions' queries
        (H, new, dh) and every seen position's keys (H, seen, dh)."""
        ops, cfg, span = self.ops, self.cfg, self.span
        inv_temp = None
        if cfg.attention == "softmax_t":  # per head and query position: rows past..past+new-1
            inv_temp = self.w("attn.inv_temp")  # (H, context, 1)
            if (span.past, span.seen) != (0, inv_temp.shape[-2]):
                inv_temp = ops.rows(inv_temp, span.past, span.seen)
            # a secret product either way: of the queries (H, new, dh) where that is the smaller, as a
            # deployment would write it ((t q) k^T = t (q k^T)), else of the scores (H, new, seen)
            if cfg.d_head < span.seen:
                q, inv_temp = ops.mul(q, inv_temp), None
        s = ops.scale(ops.matmul(q, ops.transpose(k), role), 1.0 / math.sqrt(cfg.d_head))
        if inv_temp is not None:
            s = ops.mul(s, inv_temp)
        return ops.softmax(ops.add(s, ops.causal_mask(span.new, span.seen)))

    def attention(self, x: Tensor) -> Tensor:
        """Multi-head causal softmax attention, all heads at once: (new, d) -> (new, d)."""
        ops = self.ops
        q, k, v = self.heads(x, "attn.qkv", 3)
        k, v = self.cached(k, v)
        probs = self.scores(q, k, "attn.scores")
        out = ops.merge_heads(ops.matmul(probs, v, "attn.values"))
        return self.linear(out, "attn.o", "attn.proj")

    def shaped_attention(self, x: Tensor) -> Tensor:
        """He & Hofmann: (a*I + b*A - c*C) X per head, A = softmax(.), W_V = W_O = identity; a new
        position's row of I and of C (the causal average) is its row of the (seen x seen) matrix.

        The per-head coefficients a, b, c are secret, so a secret product either way, as a deployment
        would write it: b*A over (H, new, seen) where that is the smaller, else a*X + b*(A X) - c*(C X),
        three products over (H, new, dh) (C X a public-by-secret product, local): 3*dh < seen. One
        GPT-2-sized layer's "other" bytes, scaling A against the sum: CrypTen 6.3 against 7.9 MB at
        T=128, 18.9 against 15.7 at T=256; SPU 89 against 110, 269 against 220 (docs/generation.md)."""
        ops, new, seen = self.ops, self.span.new, self.span.seen
        q, k = self.heads(x, "attn.qk", 2)
        x_heads = ops.split_heads(x, self.cfg.H)
        k, values = self.cached(k, x_heads)
        probs = self.scores(q, k, "attn.shaped_scores")
        average = ops.scale(ops.causal_average(new, seen), -1.0)
        if 3 * self.cfg.d_head < seen:
            out = ops.add(
                ops.mul(x_heads, self.w("attn.shape_a")),
                ops.mul(ops.matmul(probs, values, "attn.shaped_values"), self.w("attn.shape_b")),
            )
            averaged = ops.matmul(average, values, "attn.shaped_average")
            return ops.merge_heads(ops.add(out, ops.mul(averaged, self.w("attn.shape_c"))))
        mix = ops.add(ops.mul(ops.eye(new, seen), self.w("attn.shape_a")), ops.mul(probs, self.w("attn.shape_b")))
        mix = ops.add(mix, ops.mul(average, self.w("attn.shape_c")))
        return ops.merge_heads(ops.matmul(mix, values, "attn.shaped_values"))

    def ffn(self, x: Tensor) -> Tensor:
        """(T, d) -> (T, d): x W_in act W_out, or x W for the fused form."""
        if self.cfg.ffn == "scaled_fused":
            return self.linear(x, "ffn.fused", "ffn.fused")
        h = self.linear(x, "ffn.in", "ffn.in")
        activation = self.cfg.ffn_activation(self.index)
        if activation != "identity":
            h = getattr(self.ops, activation)(h)
        return self.linear(h, "ffn.out", "ffn.out")


def _sequential_block(layer: _Layer, x: Tensor) -> Tensor:
    """x + attn(norm(x)), then + ffn(norm(x)) where this layer keeps its FFN."""
    ops = layer.ops
    a = layer.attention(layer.norm(x, "ln1"))
    x = ops.add(x, layer.residual_scale(a, "res.alpha"))
    if layer.cfg.has_ffn(layer.index):
        f = layer.ffn(layer.norm(x, "ln2"))
        x = ops.add(x, layer.residual_scale(f, "res.beta"))
    return x


def _parallel_block(layer: _Layer, x: Tensor) -> Tensor:
    """He & Hofmann's parallel block: shaped_attn(x) + beta * ffn(x), no skip connection."""
    ops = layer.ops
    out = layer.residual_scale(layer.shaped_attention(layer.norm(x, "ln1")), "res.alpha")
    if layer.cfg.has_ffn(layer.index):
        f = layer.ffn(layer.norm(x, "ln2"))
        out = ops.add(out, layer.residual_scale(f, "res.beta"))
    return out
