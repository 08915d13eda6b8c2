"""Exact fast local products: 64-bit shares multiplied through float64 limbs equal torch's int64
matmul bit for bit, wrap-around included, at every shape GPT-2 uses; a run gives the same bytes,
rounds and output whichever way its parties multiply."""

from __future__ import annotations

import pytest
import torch

from pibench.backends.crypten import products
from tests.conftest import run_each, write_suite

GEN = torch.Generator().manual_seed(0)


def ring(*shape: int) -> torch.Tensor:
    """Uniform 64-bit ring elements: most products wrap around 2^64 many times."""
    return torch.randint(-(2**63), 2**63 - 1, shape, dtype=torch.int64, generator=GEN)


@pytest.mark.parametrize(
    "a, b",
    [
        ((128, 768), (768, 3072)),  # FFN in
        ((128, 3072), (3072, 768)),  # FFN out: the largest inner dimension GPT-2 uses
        ((128, 768), (768, 2304)),  # Q, K, V in one product
        ((12, 128, 64), (12, 64, 128)),  # Q K^T, batched over heads
        ((12, 128, 128), (12, 128, 64)),  # softmax(.) V
        ((3, 5), (5, 2)),
    ],
)
def test_limbs_equal_int64_bit_for_bit(a, b):
    x, y = ring(*a), ring(*b)
    assert torch.equal(products.blocks(x, y), torch.matmul(x, y))


def test_extremes_and_the_exactness_bound():
    k = 3072
    x = torch.full((2, k), 2**63 - 1, dtype=torch.int64)  # every limb at 2^16 - 1
    y = torch.full((k, 2), -(2**63), dtype=torch.int64)
    assert torch.equal(products.blocks(x, y), torch.matmul(x, y))
    # k (2^16 - 1)^2 must stay below 2^53 for float64 to add the limb products exactly
    assert products.MAX_INNER * (2**16 - 1) ** 2 < 2**53
    with pytest.raises(ValueError, match="exceeds"):
        products.blocks(
            torch.zeros(1, products.MAX_INNER + 1, dtype=torch.int64),
            torch.zeros(products.MAX_INNER + 1, 1, dtype=torch.int64),
        )


def test_runs_are_identical_whichever_way_parties_multiply(tmp_path):
    tiny = "model: {{L: 2, H: 2, d: 32, T: 8}}\nvariants: [sm_ln_g, sm]\ncrypten: {{local_products: {}}}\n"
    modes = ("int64", "blocks", "auto")
    runs = {m: (write_suite(tmp_path, tiny.format(m), f"{m}.yaml"), ["--repeats", "1"]) for m in modes}
    records = {m: rec for m, (_, rec) in run_each(tmp_path, runs, timeout=120).items()}
    figures = {
        m: [(v["measured"]["bytes"], v["measured"]["rounds"], v["measured"]["max_abs_error"]) for v in r["variants"]]
        for m, r in records.items()
    }
    assert figures["int64"] == figures["blocks"] == figures["auto"]  # the same seed: the same output
    chosen = records["auto"]["variants"][0]["measured"]["parties"][0]["choices"]
    # auto timed both paths on the first product of each shape and kept one; the record says which
    assert chosen and set(chosen.values()) <= {"int64", "blocks"} and "8x32@32x96" in chosen
    assert records["blocks"]["variants"][0]["measured"]["parties"][0]["choices"] == {}
    assert records["auto"]["backend"]["settings"]["local_products"] == "auto"
