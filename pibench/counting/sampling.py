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
from pibench.models.definition import KVCache, input_param_specs, input_stage, layer, layer_param_specs
from pibench.models.symbolic import SymbolicOps, SymTensor, Tally


@dataclass(frozen=True)
class Step:
    """One pass of generation: `new` positions computed after `past` cached ones. The prefill is
    Step(0, T); the decode step at context t (t positions seen, the newest one computed) Step(t-1, 1)."""

    past: int
    new: int

    @property
    def seen(self) -> int:
        return self.past + self.new

    @staticmethod
    def prefill(cfg: ModelConfig) -> Step:
        return Step(0, cfg.T)

    @staticmethod
    def decode(t: int) -> Step:
        return Step(t - 1, 1)


@dataclass(frozen=True)
class LayerKind:
    """`count` layers that each execute `tally`; `first` is the first of them."""

    first: int
    count: int
    tally: Tally


def trace_input_stage(cfg: ModelConfig, step: Step | None = None) -> Tally:
    """What the input stage executes (He & Hofmann's single LayerNorm, else nothing)."""
    step = step or Step.prefill(cfg)
    ops = SymbolicOps()
    weights = {n: ops.weight(s.shape) for n, s in input_param_specs(cfg).items()}
    input_stage(ops, weights, ops.weight((step.new, cfg.d)), cfg)
    return ops.tally


def trace_layer(cfg: ModelConfig, index: int, step: Step | None = None) -> Tally:
    """What layer `index` executes in `step` (default: the prefill), from its shapes alone."""
    step = step or Step.prefill(cfg)
    ops = SymbolicOps()
    weights = {n: ops.weight(s.shape) for n, s in layer_param_specs(cfg, index).items()}
    cache = None
    if step.past:
        held = SymTensor((cfg.H, step.past, cfg.d_head))
        cache = KVCache({index: held}, {index: held}, {index: step.past})
    out = layer(ops, weights, ops.weight((step.new, cfg.d)), cfg, index, cache)
    assert out.shape == (step.new, cfg.d), out.shape
    return ops.tally


def layer_kinds(cfg: ModelConfig, step: Step | None = None) -> list[LayerKind]:
    """The stack's layer kinds in `step` (default: the prefill), in order of their first layer;
    counts sum to L."""
    kinds: dict[tuple[object, ...], LayerKind] = {}
    for start, stop in cfg.layer_runs():
        tally = trace_layer(cfg, start, step)
        key = tally.key()
        seen = kinds.get(key)
        kinds[key] = (
            LayerKind(seen.first, seen.count + stop - start, tally) if seen else LayerKind(start, stop - start, tally)
        )
    return list(kinds.values())


def layer_sample(cfg: ModelConfig) -> dict[int, int]:
    """One representative layer per kind -> how many layers it stands for (sums to L)."""
    return {k.first: k.count for k in layer_kinds(cfg)}
