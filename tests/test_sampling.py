"""Layer kinds come from the symbolic interpreter: every layer traced one by one groups exactly as the
cut-point runs say, for every variant and every value of every per-layer field; deep stacks cost
instantly."""

from __future__ import annotations

import itertools
import time

import pytest

from pibench.counting.cost import analyse
from pibench.counting.sampling import layer_kinds, layer_sample, trace_layer
from pibench.models.config import LAYER_CUTOFFS, ModelConfig
from pibench.models.variants import VARIANTS, resolve

L = 5
DIMS = {"L": L, "H": 2, "d": 16, "T": 4}
# every optional integer field of the config is a candidate per-layer field: a new one that acts on
# some layers and is missing from LAYER_CUTOFFS makes this test fail
OPTIONAL_INTS = [name for name, f in ModelConfig.__pydantic_fields__.items() if f.default is None]


def _configs():
    for name in VARIANTS.names():
        for values in itertools.product([None, 0, 1, 3, L], repeat=len(OPTIONAL_INTS)):
            try:
                yield name, resolve(name, DIMS, dict(zip(OPTIONAL_INTS, values, strict=True)))
            except Exception:
                continue


def test_optional_integer_fields_are_the_declared_cutoffs():
    assert sorted(OPTIONAL_INTS) == sorted(LAYER_CUTOFFS)


def test_kinds_group_layers_by_their_traces():
    checked = 0
    for name, cfg in _configs():
        by_trace: dict[object, list[int]] = {}
        for i in range(cfg.L):
            by_trace.setdefault(trace_layer(cfg, i).key(), []).append(i)
        expected = {layers[0]: len(layers) for layers in by_trace.values()}
        assert layer_sample(cfg) == expected, (name, cfg)
        checked += 1
    assert checked > 16 * 10


def test_sample_of_a_pruned_relu_stack():
    cfg = resolve("sm_ln_r", {"L": 4, "H": 2, "d": 16, "T": 4}, {"activation_blocks": 3})
    # layers 0-2 apply ReLU, layer 3 has an FFN without activation
    assert layer_sample(cfg) == {0: 3, 3: 1}
    cfg = resolve("sm_scfuffn_pruned", {"L": 4, "H": 2, "d": 16, "T": 4}, {"ffn_blocks_kept": 1})
    assert layer_sample(cfg) == {0: 1, 1: 3}
    assert [k.count for k in layer_kinds(cfg)] == [1, 3]


@pytest.mark.parametrize("variant", ["sm_ln_g", "sm_scfuffn_pruned", "hehofmann_scfuffn_pruned"])
def test_a_billion_layers_cost_as_fast_as_twelve(variant):
    dims = {"L": 12, "H": 12, "d": 768, "T": 128}
    small = analyse(resolve(variant, dims))
    start = time.perf_counter()
    big = analyse(resolve(variant, {**dims, "L": 10**9}))
    assert time.perf_counter() - start < 5  # not a speed test: a loop over 1e9 layers would take hours
    # the FFN FLOPs scale with the layers that keep an FFN: L (sm_ln_g), L // 2, 2L // 3
    kept = {
        "sm_ln_g": (12, 10**9),
        "sm_scfuffn_pruned": (6, 10**9 // 2),
        "hehofmann_scfuffn_pruned": (8, 2 * 10**9 // 3),
    }
    k_small, k_big = kept[variant]
    assert big.flops_ffn * k_small == small.flops_ffn * k_big
