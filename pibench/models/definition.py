"""The one model definition: a GPT-2-style causal decoder stack, written once against `Ops`.

`forward(ops, weights, x, cfg)` maps input embeddings x (T, d) to hidden states (T, d). Embeddings,
the final LayerNorm and the LM head are outside the definition (the papers' FLOP columns exclude
them too). `param_specs(cfg)` lists every weight with its shape (`input_param_specs` and
`layer_param_specs` a part of them); interpreters build `weights` from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pibench.models.config import ModelConfig
from pibench.models.ops import Ops, Tensor


@dataclass(frozen=True)
class ParamSpec:
    """Shape of one weight and how a freshly built model initialises it."""

    shape: tuple[int, ...]
    init: Literal["normal", "ones", "zeros"] = "normal"


def param_specs(cfg: ModelConfig) -> dict[str, ParamSpec]:
    """Every weight of the stack, by name ("h3.attn.qkv.w", ...), in a stable order."""
    specs = input_param_specs(cfg)
    for index in range(cfg.L):
        specs |= layer_param_specs(cfg, index)
    return specs


def input_param_specs(cfg: ModelConfig) -> dict[str, ParamSpec]:
    """The weights of the input stage: He & Hofmann's single LayerNorm, else none."""
    return _layernorm_specs("ln_in", cfg.d) if cfg.norm == "input_ln" else {}


def _layernorm_specs(name: str, d: int) -> dict[str, ParamSpec]:
    return {f"{name}.g": ParamSpec((d,), "ones"), f"{name}.b": ParamSpec((d,), "zeros")}


def layer_param_specs(cfg: ModelConfig, index: int) -> dict[str, ParamSpec]:
    """The weights of layer `index`. Q, K and V are one (d, 3d) matrix (Q, K: (d, 2d) in shaped
    attention), as GPT-2 stores them: one product instead of three."""
    d, H, T, p = cfg.d, cfg.H, cfg.T, f"h{index}."
    specs: dict[str, ParamSpec] = {}

    def linear(name: str, n_in: int, n_out: int) -> None:
        specs[f"{p}{name}.w"] = ParamSpec((n_in, n_out))
        if cfg.bias:
            specs[f"{p}{name}.b"] = ParamSpec((n_out,), "zeros")

    if cfg.norm == "pre_ln":
        specs |= _layernorm_specs(p + "ln1", d)
    if cfg.attention == "shaped":
        linear("attn.qk", d, 2 * d)
        for coef in ("a", "b", "c"):
            specs[f"{p}attn.shape_{coef}"] = ParamSpec((H, 1, 1), "ones")
    else:
        linear("attn.qkv", d, 3 * d)
        linear("attn.o", d, d)
    if cfg.attention == "softmax_t":
        specs[p + "attn.inv_temp"] = ParamSpec((H, T, 1), "ones")
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


def forward(
    ops: Ops, weights: Mapping[str, Tensor], x: Tensor, cfg: ModelConfig, layers: Sequence[int] | None = None
) -> Tensor:
    """Input embeddings x (T, d) -> hidden states (T, d): the input stage, then every layer (or only
    `layers`, in that order: the MPC runner measures a sample of layers this way)."""
    x = input_stage(ops, weights, x, cfg)
    for index in range(cfg.L) if layers is None else layers:
        x = layer(ops, weights, x, cfg, index)
    return x


def input_stage(ops: Ops, weights: Mapping[str, Tensor], x: Tensor, cfg: ModelConfig) -> Tensor:
    """What runs once before the first layer: He & Hofmann's single LayerNorm, else nothing."""
    if cfg.norm == "input_ln":
        x = ops.layernorm(x, weights["ln_in.g"], weights["ln_in.b"])
    return x


def layer(ops: Ops, weights: Mapping[str, Tensor], x: Tensor, cfg: ModelConfig, index: int) -> Tensor:
    """Layer `index` of the stack: (T, d) -> (T, d)."""
    block = _parallel_block if cfg.attention == "shaped" else _sequential_block
    return block(_Layer(ops, weights, cfg, index), x)


def layer_weight_specs(cfg: ModelConfig, layers: Sequence[int]) -> dict[str, ParamSpec]:
    """The weights that the input stage and `layers` read (a sampled run shares only these)."""
    specs = input_param_specs(cfg)
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
        """Causal softmax attention probabilities (H, T, T) from queries and keys (H, T, dh)."""
        ops, cfg = self.ops, self.cfg
        s = ops.scale(ops.matmul(q, ops.transpose(k), role), 1.0 / math.sqrt(cfg.d_head))
        if cfg.attention == "softmax_t":
            s = ops.mul(s, self.w("attn.inv_temp"))  # (H, T, 1): per head and query position
        return ops.softmax(ops.add(s, ops.causal_mask(cfg.T)))

    def attention(self, x: Tensor) -> Tensor:
        """Multi-head causal softmax attention, all heads at once: (T, d) -> (T, d)."""
        ops = self.ops
        q, k, v = self.heads(x, "attn.qkv", 3)
        probs = self.scores(q, k, "attn.scores")
        out = ops.merge_heads(ops.matmul(probs, v, "attn.values"))
        return self.linear(out, "attn.o", "attn.proj")

    def shaped_attention(self, x: Tensor) -> Tensor:
        """He & Hofmann: (a*I + b*softmax(.) - c*C) X per head, W_V = W_O = identity."""
        ops, T = self.ops, self.cfg.T
        q, k = self.heads(x, "attn.qk", 2)
        probs = self.scores(q, k, "attn.shaped_scores")
        mix = ops.add(ops.mul(ops.eye(T), self.w("attn.shape_a")), ops.mul(probs, self.w("attn.shape_b")))
        mix = ops.add(mix, ops.mul(ops.scale(ops.causal_average(T), -1.0), self.w("attn.shape_c")))
        out = ops.matmul(mix, ops.split_heads(x, self.cfg.H), "attn.shaped_values")
        return ops.merge_heads(out)

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
