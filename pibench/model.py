"""The one model definition: a GPT-2-style causal decoder stack, written once against `Ops`.

`forward(ops, weights, x, cfg)` maps input embeddings x (T, d) to hidden states (T, d). Embeddings,
the final LayerNorm and the LM head are outside the definition (the papers' FLOP columns exclude
them too). `param_specs(cfg)` lists every weight with its shape; interpreters build `weights` from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pibench.config import ModelConfig
from pibench.interp.base import Ops, Tensor


@dataclass(frozen=True)
class ParamSpec:
    """Shape of one weight and how a freshly built model initialises it."""

    shape: tuple[int, ...]
    init: Literal["normal", "ones", "zeros"] = "normal"


def param_specs(cfg: ModelConfig) -> dict[str, ParamSpec]:
    """Every weight of the stack, by name ("h3.attn.wq", ...), in a stable order."""
    d, H, T = cfg.d, cfg.H, cfg.T
    specs: dict[str, ParamSpec] = {}

    def linear(name: str, n_in: int, n_out: int) -> None:
        specs[f"{name}.w"] = ParamSpec((n_in, n_out))
        if cfg.bias:
            specs[f"{name}.b"] = ParamSpec((n_out,), "zeros")

    def layernorm(name: str) -> None:
        specs[f"{name}.g"] = ParamSpec((d,), "ones")
        specs[f"{name}.b"] = ParamSpec((d,), "zeros")

    if cfg.norm == "input_ln":
        layernorm("ln_in")
    for layer in range(cfg.L):
        p = f"h{layer}."
        if cfg.norm == "pre_ln":
            layernorm(p + "ln1")
        projections = ("q", "k") if cfg.attention == "shaped" else ("q", "k", "v", "o")
        for proj in projections:
            linear(f"{p}attn.{proj}", d, d)
        if cfg.attention == "softmax_t":
            specs[p + "attn.inv_temp"] = ParamSpec((H, T, 1), "ones")
        if cfg.attention == "shaped":
            for coef in ("a", "b", "c"):
                specs[f"{p}attn.shape_{coef}"] = ParamSpec((H, 1, 1), "ones")
        if cfg.ffn != "standard":
            specs[p + "res.alpha"] = ParamSpec((1,), "ones")
        if not cfg.has_ffn(layer):
            continue
        if cfg.norm == "pre_ln":
            layernorm(p + "ln2")
        if cfg.ffn == "scaled_fused":
            linear(p + "ffn.fused", d, d)
        else:
            linear(p + "ffn.in", d, cfg.d_ff)
            linear(p + "ffn.out", cfg.d_ff, d)
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


def layer_signature(cfg: ModelConfig, index: int) -> tuple[bool, str]:
    """Layers with equal signatures execute the same operations on the same shapes, so they cost
    the same bytes and rounds under 2PC: (has an FFN, FFN activation)."""
    return cfg.has_ffn(index), cfg.ffn_activation(index)


def layer_sample(cfg: ModelConfig) -> dict[int, int]:
    """One representative layer per signature -> how many layers it stands for (sums to L)."""
    first: dict[tuple[bool, str], int] = {}
    sample: dict[int, int] = {}
    for index in range(cfg.L):
        rep = first.setdefault(layer_signature(cfg, index), index)
        sample[rep] = sample.get(rep, 0) + 1
    return sample


def layer_weight_names(cfg: ModelConfig, layers: Sequence[int]) -> list[str]:
    """Names of the weights that the input stage and `layers` read."""
    prefixes = tuple(f"h{i}." for i in layers)
    return [n for n in param_specs(cfg) if n.startswith(prefixes) or not n.startswith("h")]


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

    def scores(self, x: Tensor, role: str) -> Tensor:
        """Causal softmax attention probabilities (H, T, T) of input x (T, d)."""
        ops, cfg = self.ops, self.cfg
        q = ops.split_heads(self.linear(x, "attn.q", "attn.proj"), cfg.H)
        k = ops.split_heads(self.linear(x, "attn.k", "attn.proj"), cfg.H)
        s = ops.scale(ops.matmul(q, ops.transpose(k), role), 1.0 / math.sqrt(cfg.d_head))
        if cfg.attention == "softmax_t":
            s = ops.mul(s, self.w("attn.inv_temp"))  # (H, T, 1): per head and query position
        return ops.softmax(ops.add(s, ops.causal_mask(cfg.T)))

    def attention(self, x: Tensor) -> Tensor:
        """Multi-head causal softmax attention, all heads at once: (T, d) -> (T, d)."""
        ops = self.ops
        probs = self.scores(x, "attn.scores")
        v = ops.split_heads(self.linear(x, "attn.v", "attn.proj"), self.cfg.H)
        out = ops.merge_heads(ops.matmul(probs, v, "attn.values"))
        return self.linear(out, "attn.o", "attn.proj")

    def shaped_attention(self, x: Tensor) -> Tensor:
        """He & Hofmann: (a*I + b*softmax(.) - c*C) X per head, W_V = W_O = identity."""
        ops, T = self.ops, self.cfg.T
        probs = self.scores(x, "attn.shaped_scores")
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
