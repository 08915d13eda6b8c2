"""Analytic cost of a variant: the symbolic interpreter's tally turned into the papers' figures.

FLOPs are 2 per multiply-accumulate (MAC) of the matrix products the forward pass executes,
split into FFN (roles "ffn.*") and attention (roles "attn.*"). Two conventions:

- ``exact``: 2 FLOPs per MAC of every product, biases and elementwise work excluded; equals
  torch's FlopCounterMode on the plaintext forward pass.
- ``paper`` (default): the convention of the papers' tables (Jha & Reagen), which fits their
  columns exactly: weight products (projections, FFN) at 2 FLOPs per MAC, as exact; the two
  T x T attention products at fewer FLOPs than executed: softmax attention counts Q K^T at
  2 FLOPs/MAC and softmax(.) V at 1 (3 T^2 d per layer instead of 4 T^2 d), He & Hofmann's shaped
  attention counts each at 1 FLOP/MAC (2 T^2 d). So FFN = 16 L_ffn T d^2 (fused 2 L_ffn T d^2)
  and attention = L (8 T d^2 + 3 T^2 d) (He & Hofmann: L (4 T d^2 + 2 T^2 d)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pibench.counting.sampling import layer_kinds, trace_head, trace_input_stage
from pibench.models.config import ModelConfig
from pibench.models.definition import (
    ParamSpec,
    Span,
    head_param_specs,
    input_param_specs,
    layer_param_specs,
    multiplied,
)
from pibench.models.opkinds import NONLINEAR
from pibench.models.ops import MATMUL_ROLES
from pibench.models.registry import Registry
from pibench.models.symbolic import Tally

# FLOPs per multiply-accumulate, by matmul role.
FLOP_CONVENTIONS: Registry[dict[str, int]] = Registry("FLOP convention")
FLOP_CONVENTIONS.add("exact", dict.fromkeys(MATMUL_ROLES, 2))
FLOP_CONVENTIONS.add(
    "paper",
    {
        **dict.fromkeys(MATMUL_ROLES, 2),
        "attn.values": 1,
        "attn.shaped_scores": 1,
        "attn.shaped_values": 1,
        "attn.shaped_average": 0,
    },
)


def trace(cfg: ModelConfig, span: Span | None = None, masks: str = "fresh") -> Tally:
    """What one forward pass executes (shapes only; default: the prefill): the input stage, then each
    layer kind times its count (`pibench.counting.sampling`), so the cost of a stack does not grow
    with its depth. `masks`: what products with a weight open (`SymbolicOps`)."""
    tally = trace_input_stage(cfg, span, masks)
    for kind in layer_kinds(cfg, span, masks):
        tally.add(kind.tally, kind.count)
    if cfg.scope == "end_to_end":
        tally.add(trace_head(cfg, span, masks))
    return tally


@dataclass(frozen=True)
class NonlinearCount:
    """`count` operations of kind `kind`, each on a rows x cols matrix."""

    kind: str
    count: int
    shape: tuple[int, int]

    @property
    def elements(self) -> int:
        return self.count * self.shape[0] * self.shape[1]


@dataclass(frozen=True)
class VariantCost:
    """Analytic cost of one variant at one configuration. FLOPs in FLOPs (2 per MAC)."""

    variant: str
    label: str
    config: ModelConfig
    nonlinear: tuple[NonlinearCount, ...]
    flops_ffn: int
    flops_attn: int
    convention: str
    tally: Tally
    flops_head: int = 0  # end to end: the embedding lookup and the LM head (outside the papers' columns)

    def to_json(self) -> dict[str, Any]:
        nonlinear: dict[str, Any] = {}
        for kind in NONLINEAR:
            groups = [n for n in self.nonlinear if n.kind == kind]
            if not groups:
                continue
            entry: dict[str, Any] = {
                "count": sum(g.count for g in groups),
                "shape": list(groups[0].shape) if len(groups) == 1 else None,
                "elements": sum(g.elements for g in groups),
            }
            if len(groups) > 1:
                entry["groups"] = [{"count": g.count, "shape": list(g.shape)} for g in groups]
            nonlinear[kind] = entry
        return {
            "variant": self.variant,
            "label": self.label,
            "config": self.config.as_dict(),
            "nonlinear": nonlinear,
            "flops": {
                "ffn": self.flops_ffn,
                "attn": self.flops_attn,
                **({"head": self.flops_head} if self.config.scope == "end_to_end" else {}),
                "convention": self.convention,
            },
            "macs": dict(sorted(self.tally.macs.items())),
            "elementwise": dict(sorted(self.tally.elementwise.items())),
        }


def analyse(
    cfg: ModelConfig,
    variant: str = "",
    label: str = "",
    flops: str = "paper",
    span: Span | None = None,
    masks: str = "fresh",
) -> VariantCost:
    """Count nonlinear operations and FLOPs of `cfg` by interpreting its forward pass (`span`: a pass
    of generation; default: the prefill over the T prompt positions; `masks`: `SymbolicOps`')."""
    return _cost(trace(cfg, span, masks), cfg, variant, label, flops)


def _cost(tally: Tally, cfg: ModelConfig, variant: str, label: str, flops: str) -> VariantCost:
    per_mac = FLOP_CONVENTIONS.get(flops)
    split = {"ffn": 0, "attn": 0, "head": 0}
    for role, macs in tally.macs.items():
        split[role.split(".", 1)[0]] += per_mac[role] * macs
    nonlinear = tuple(
        NonlinearCount(kind, count, shape)
        for (kind, shape), count in sorted(
            tally.nonlinear.items(), key=lambda kv: (NONLINEAR.index(kv[0][0]), kv[0][1])
        )
    )
    return VariantCost(variant, label, cfg, nonlinear, split["ffn"], split["attn"], flops, tally, split["head"])


@dataclass(frozen=True)
class GenerationCost:
    """The analytic cost of generating `cfg.new_tokens` tokens after a prompt of T: the prefill
    (which yields the first token), each decode step (token j+1 from the decode step at context
    T+j, j = 1..new_tokens-1: the last token is revealed, never fed back), and their total."""

    prefill: VariantCost
    decode: tuple[VariantCost, ...]  # in order of context, T+1 .. T+new_tokens-1
    total: VariantCost
    masks: str = "fresh"  # "reuse": the set-up opens every weight once, and decode steps open none
    setup_elements: int = 0  # "reuse": the weight elements the set-up opens (`opened_at_setup`)


def generation_cost(
    cfg: ModelConfig, variant: str = "", label: str = "", flops: str = "paper", masks: str = "fresh"
) -> GenerationCost:
    """`GenerationCost` of `cfg`: one trace per decode step (each a few layer traces). `masks`:
    "fresh" (every product with a weight opens it) or "reuse" (the prefill opens each weight at its
    first product, decode steps none: the set-up opened them)."""
    prefill = analyse(cfg, variant, label, flops, masks=masks)
    later = "opened" if masks == "reuse" else masks
    decode = tuple(
        analyse(cfg, variant, label, flops, Span.decode(t), later) for t in range(cfg.T + 1, cfg.T + cfg.new_tokens)
    )
    total = Tally()
    for part in (prefill, *decode):
        total.add(part.tally)
    setup = opened_at_setup(cfg) if masks == "reuse" else 0
    return GenerationCost(prefill, decode, _cost(total, cfg, variant, label, flops), masks, setup)


def opened_at_setup(cfg: ModelConfig) -> int:
    """Weight elements a set-up opens once for every decode step (`pibench.backends.crypten.masks`): every
    weight products use (`multiplied`: matrices, LayerNorm gains, scales, SM(t)'s temperatures) of the head,
    the input stage and each layer (one layer per kind, times its count: layers of a kind are alike)."""

    def elements(specs: dict[str, ParamSpec]) -> int:
        return sum(math.prod(spec.shape) for spec in multiplied(specs).values())

    total = elements(head_param_specs(cfg) | input_param_specs(cfg))
    for kind in layer_kinds(cfg):
        total += kind.count * elements(layer_param_specs(cfg, kind.first))
    return total
