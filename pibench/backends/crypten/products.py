"""Exact fast local products of 64-bit shares on the CPU.

A CrypTen party multiplies its int64 shares with torch's int64 matmul (in every Beaver product and
every locally made triple), and torch has no BLAS kernel for int64: a 128×768 by 768×3072 product
takes seconds where float64 takes hundredths. CrypTen's CUDA backend avoids this by splitting each
64-bit integer into 16-bit limbs and multiplying the limbs in floating point; this module does the
same on the CPU:

    a = Σ_i a_i 2^(16 i),  b = Σ_j b_j 2^(16 j)  (limbs 0 ≤ a_i, b_j < 2^16, i, j = 0..3)
    a·b mod 2^64 = Σ_{i+j ≤ 3} (a_i · b_j) 2^(16 (i+j))  mod 2^64

Each limb product sums k terms below 2^32, so it is exact in float64 while k·2^32 < 2^53, i.e. for
inner dimensions up to 2^21 (GPT-2's largest is 3072); the recombination wraps around in int64 as
CrypTen's own arithmetic does. The result is bit-identical to int64 matmul (tests).

`install(mode)` routes `torch.matmul` of two int64 tensors in this process through `blocks` ("blocks"),
through whichever path is faster for each shape on this machine ("auto": the first product of a shape
runs both, checks they agree bit for bit, and keeps the faster), or not at all ("int64"). Which path
is faster depends on the CPU: torch's int64 matmul has a vectorised kernel on some (here, AMD EPYC
family 25: 0.023 s for 128×768 by 768×3072, the limbs 0.33 s) and not on others (family 23: 2.8 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

LIMB_BITS = 16
LIMBS = 4
MAX_INNER = 2**21  # k * (2^16 - 1)^2 < 2^53
_original_matmul: Callable[..., Any] | None = None
CHOICES: dict[str, str] = {}  # "auto": shape -> the path chosen, e.g. "128x768@768x3072" -> "int64"


def _limbs(x: torch.Tensor) -> list[torch.Tensor]:
    return [((x >> (LIMB_BITS * i)) & 0xFFFF).to(torch.float64) for i in range(LIMBS)]


def blocks(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`a @ b` of int64 tensors, modulo 2^64, through float64 products of 16-bit limbs."""
    if a.shape[-1] > MAX_INNER:
        raise ValueError(f"inner dimension {a.shape[-1]} exceeds {MAX_INNER}: limb products would not be exact")
    matmul = _original_matmul or torch.matmul
    a_limbs, b_limbs = _limbs(a), _limbs(b)
    out: torch.Tensor | None = None
    for i in range(LIMBS):
        # a_i times every b_j with i + j <= 3, as one wider product
        wide = matmul(a_limbs[i], torch.cat(b_limbs[: LIMBS - i], dim=-1))
        for j, part in enumerate(wide.split(b.shape[-1], dim=-1)):
            term = part.to(torch.int64) << (LIMB_BITS * (i + j))
            out = term if out is None else out + term
    assert out is not None
    return out


def _key(a: torch.Tensor, b: torch.Tensor) -> str:
    return "x".join(map(str, a.shape)) + "@" + "x".join(map(str, b.shape))


def _chosen(a: torch.Tensor, b: torch.Tensor, original: Callable[..., Any]) -> torch.Tensor:
    """The product by the path chosen for this shape; the first time, both paths, timed and compared."""
    key = _key(a, b)
    if key in CHOICES:
        return blocks(a, b) if CHOICES[key] == "blocks" else original(a, b)
    start = time.perf_counter()
    by_int64 = original(a, b)
    middle = time.perf_counter()
    by_blocks = blocks(a, b)
    end = time.perf_counter()
    if not torch.equal(by_int64, by_blocks):
        raise RuntimeError(f"limb products differ from int64 at {key}")
    CHOICES[key] = "blocks" if end - middle < middle - start else "int64"
    return by_int64


def install(mode: str) -> None:
    """Route this process's int64 `torch.matmul` per `mode` ("int64", "blocks" or "auto")."""
    global _original_matmul
    if mode == "int64" or _original_matmul is not None:
        return
    original = _original_matmul = torch.matmul

    def matmul(a: Any, b: Any, *args: Any, **kwargs: Any) -> Any:
        if (
            not args
            and not kwargs
            and isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == torch.int64
            and b.dtype == torch.int64
            and a.dim() >= 2
            and b.dim() >= 2
            and a.device.type == "cpu"
            and a.shape[-1] <= MAX_INNER
        ):
            return blocks(a, b) if mode == "blocks" else _chosen(a, b, original)
        return original(a, b, *args, **kwargs)

    torch.matmul = matmul  # type: ignore[assignment]
