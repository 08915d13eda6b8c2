"""CrypTen interpreter: the model definition on secret-shared tensors of two parties.

Weights are shared by the server (rank 0), the input embeddings by the client (rank 1). Every
operation runs inside `meter.kind(...)`, so bytes, rounds and seconds are attributed per kind.
Heads are batched: attention runs on (H, T, T) tensors, so a layer's rounds do not grow with H.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pibench.interp.base import LAYERNORM_EPS, LINEAR_ROLES, Ops
from pibench.interp.plaintext import TorchConstants
from pibench.mpc.meter import Meter

GELU_TANH_C = math.sqrt(2.0 / math.pi)


def _secret_first(a: Any, b: Any) -> tuple[Any, Any]:
    """CrypTen's operators live on the shared tensor: put it on the left of commutative ops."""
    return (b, a) if isinstance(a, torch.Tensor) else (a, b)


class CrypTenOps(TorchConstants, Ops):
    """`Ops` over CrypTen `MPCTensor`s (public constants are plain torch tensors)."""

    def __init__(self, meter: Meter, gelu: str = "tanh") -> None:
        self.meter, self.gelu_form = meter, gelu

    def matmul(self, a: Any, b: Any, role: str) -> Any:
        with self.meter.kind("linear" if role in LINEAR_ROLES else "attn_matmul"):
            return a.matmul(b)

    def add(self, a: Any, b: Any) -> Any:
        with self.meter.kind("other"):
            a, b = _secret_first(a, b)
            return a + b

    def mul(self, a: Any, b: Any) -> Any:
        with self.meter.kind("other"):
            a, b = _secret_first(a, b)
            return a * b

    def scale(self, a: Any, c: float) -> Any:
        with self.meter.kind("other"):
            return a * c

    def softmax(self, x: Any) -> Any:
        with self.meter.kind("softmax"):
            return x.softmax(-1)

    def layernorm(self, x: Any, gain: Any, bias: Any) -> Any:
        with self.meter.kind("layernorm"):
            centred = x - x.mean(-1, keepdim=True)
            var = (centred * centred).mean(-1, keepdim=True)
            return centred * (var + LAYERNORM_EPS).inv_sqrt() * gain + bias

    def gelu(self, x: Any) -> Any:
        with self.meter.kind("gelu"):
            if self.gelu_form == "erf":
                return x * ((x * (1 / math.sqrt(2.0))).erf() + 1) * 0.5
            inner = (x + x * x * x * 0.044715) * GELU_TANH_C
            return x * (inner.tanh() + 1) * 0.5

    def relu(self, x: Any) -> Any:
        with self.meter.kind("relu"):
            return x.relu()

    def split_heads(self, x: Any, heads: int) -> Any:
        T, d = x.size()
        return x.reshape(T, heads, d // heads).transpose(0, 1)

    def merge_heads(self, x: Any) -> Any:
        H, T, dh = x.size()
        return x.transpose(0, 1).reshape(T, H * dh)

    def transpose(self, x: Any) -> Any:
        return x.transpose(-2, -1)
