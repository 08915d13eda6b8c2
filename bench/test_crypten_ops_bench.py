"""Per-operation CrypTen microbenchmarks at GPT-2 shapes (T=128, d=768, H=12), two parties on localhost.

    tox -e bench -- -k crypten                 # or: pytest bench --benchmark-only -k crypten
    pytest bench --benchmark-only --benchmark-autosave
    pytest bench --benchmark-only --benchmark-compare --benchmark-compare-fail=mean:10%

Time is what pytest-benchmark measures; bytes (sent by both parties) and rounds go into extra_info.
"""

from __future__ import annotations

import pytest

from pibench.backends.crypten.settings import CrypTenSettings
from pibench.calibration.microbench import OpPair

T, D, H = 128, 768, 12

CASES = {  # operand shapes per call kind (`pibench.models.opkinds.CALLS`)
    "softmax": [(H, T, T)],
    "layernorm": [(T, D)],
    "gelu": [(T, 4 * D)],
    "relu": [(T, 4 * D)],
    "mul": [(T, D), (1,)],
    "linear": [(T, D), (D, 3 * D)],
    "attn_matmul": [(H, T, D // H), (H, D // H, T)],
}


@pytest.fixture(scope="module")
def pair():
    p = OpPair("crypten", CrypTenSettings())
    yield p
    p.close()


@pytest.mark.parametrize("op", CASES)
def test_crypten_op(benchmark, pair, op):
    shapes = CASES[op]
    counts = benchmark.pedantic(pair.run, args=(op, shapes), rounds=3, iterations=1)
    benchmark.extra_info.update(counts, shapes=shapes)
    assert counts["bytes"] > 0 and counts["rounds"] > 0
