"""Layer kinds: which layers of a stack execute the same operations on the same shapes.

Layers of one kind cost the same bytes and rounds under 2PC, so an MPC run measures one layer per
kind and multiplies (`layer_sample`), and the analytic cost adds each kind's tally times its count.
The kinds are derived from the symbolic interpreter: the first layer of each of the config's layer
runs (`ModelConfig.layer_runs`) is traced, and runs whose traces are equal form one kind. Nothing
here loops over layers, so a stack of any depth is costed in the time of a few layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from pibench.models.config import ModelConfig
from pibench.models.definition import (
    KVCache,
    ParamSpec,
    Span,
    embed,
    head,
    head_param_specs,
    input_param_specs,
    input_stage,
    layer,
    layer_param_specs,
)
from pibench.models.symbolic import SymbolicOps, SymTensor, Tally


@dataclass(frozen=True)
class LayerKind:
    """`count` layers that each execute `tally`; `first` is the first of them."""

    first: int
    count: int
    tally: Tally


def _weights(ops: SymbolicOps, specs: dict[str, ParamSpec]) -> dict[str, SymTensor]:
    return {n: ops.param(n, s.shape) for n, s in specs.items()}


def trace_input_stage(cfg: ModelConfig, span: Span | None = None, masks: str = "fresh") -> Tally:
    """What the input stage executes (He & Hofmann's single LayerNorm, else nothing); `masks`: what
    products with a weight open (`SymbolicOps`)."""
    span = span or Span(0, cfg.T)
    ops = SymbolicOps(masks)
    weights = _weights(ops, input_param_specs(cfg))
    input_stage(ops, weights, ops.weight((span.new, cfg.d)), cfg)
    return ops.tally


def trace_head(cfg: ModelConfig, span: Span | None = None, masks: str = "fresh") -> Tally:
    """What the end-to-end scope adds to a pass over `span`: the embedding lookup of its new
    positions, and the head (final LayerNorm, LM head, argmax) on the last."""
    span = span or Span(0, cfg.T)
    ops = SymbolicOps(masks)
    weights = _weights(ops, head_param_specs(cfg))
    h = embed(ops, weights, ops.weight((span.new, cfg.vocab)), span.past)
    head(ops, weights, h, cfg)
    return ops.tally


def trace_layer(cfg: ModelConfig, index: int, span: Span | None = None, masks: str = "fresh") -> Tally:
    """What layer `index` executes in `span` (default: the prefill), from its shapes alone."""
    span = span or Span(0, cfg.T)
    ops = SymbolicOps(masks)
    weights = _weights(ops, layer_param_specs(cfg, index))
    cache = None
    if span.past:
        held = SymTensor((cfg.H, span.past, cfg.d_head))
        cache = KVCache({index: held}, {index: held}, {index: span.past})
    out = layer(ops, weights, ops.weight((span.new, cfg.d)), cfg, index, cache)
    assert out.shape == (span.new, cfg.d), out.shape
    return ops.tally


def layer_kinds(cfg: ModelConfig, span: Span | None = None, masks: str = "fresh") -> list[LayerKind]:
    """The stack's layer kinds in `span` (default: the prefill), in order of their first layer;
    counts sum to L."""
    kinds: dict[tuple[object, ...], LayerKind] = {}
    for start, stop in cfg.layer_runs():
        tally = trace_layer(cfg, start, span, masks)
        key = tally.key()
        seen = kinds.get(key)
        kinds[key] = (
            LayerKind(seen.first, seen.count + stop - start, tally) if seen else LayerKind(start, stop - start, tally)
        )
    return list(kinds.values())


def layer_sample(cfg: ModelConfig) -> dict[int, int]:
    """One representative layer per kind -> how many layers it stands for (sums to L)."""
    return {k.first: k.count for k in layer_kinds(cfg)}
