"""Local products of 64-bit shares on this CPU: torch's int64 matmul against exact 16-bit limbs
through float64 BLAS (`pibench.backends.crypten.products`), at GPT-2's shapes, one thread as a party.

    pytest bench --benchmark-only -k products

Which path is faster depends on the CPU (README, "Local products"); `local_products: auto` measures
the same thing once per shape inside each party and keeps the faster.
"""

from __future__ import annotations

import pytest
import torch

from pibench.backends.crypten import products

SHAPES = {
    "ffn_in": ((128, 768), (768, 3072)),
    "ffn_out": ((128, 3072), (3072, 768)),
    "attention_scores": ((12, 128, 64), (12, 64, 128)),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("path", ["int64", "blocks"])
@pytest.mark.parametrize("shape", SHAPES)
def test_products(benchmark, shape, path):
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randint(-(2**63), 2**63 - 1, s, dtype=torch.int64, generator=gen) for s in SHAPES[shape])
    product = products.blocks if path == "blocks" else torch.matmul
    out = benchmark.pedantic(product, args=(a, b), rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(shape=shape, path=path)
    assert torch.equal(out, torch.matmul(a, b))
