"""Per-operation CrypTen microbenchmarks at GPT-2 shapes (T=128, d=768, H=12), two parties on localhost.

    tox -e bench -- -k crypten                 # or: pytest bench --benchmark-only -k crypten
    pytest bench --benchmark-only --benchmark-autosave
    pytest bench --benchmark-only --benchmark-compare --benchmark-compare-fail=mean:10%

Time is what pytest-benchmark measures; bytes (sent by both parties) and rounds go into extra_info.
"""

from __future__ import annotations

import pytest

from pibench.mpc.opbench import OpPair

T, D, H = 128, 768, 12

CASES = {
    "softmax": ([H, T, T], None),
    "layernorm": ([T, D], None),
    "gelu": ([T, 4 * D], None),
    "relu": ([T, 4 * D], None),
    "mul": ([T, D], [1]),
    "linear": ([T, D], [D, D]),
    "attn_matmul": ([H, T, D // H], [H, D // H, T]),
}


@pytest.fixture(scope="module")
def pair():
    p = OpPair()
    yield p
    p.close()


@pytest.mark.parametrize("op", CASES)
def test_crypten_op(benchmark, pair, op):
    shape, other = CASES[op]
    counts = benchmark.pedantic(pair.run, args=(op, shape, other), rounds=3, iterations=1)
    benchmark.extra_info.update(counts, shape=shape, other=other)
    assert counts["bytes"] > 0 and counts["rounds"] > 0
