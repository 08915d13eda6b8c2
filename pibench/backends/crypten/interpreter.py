"""CrypTen interpreter: the model definition on secret-shared tensors of two parties.

Weights are shared by the server (rank 0), the input embeddings by the client (rank 1). Every
operation runs inside `meter.kind(...)`, so bytes, rounds and seconds are attributed per kind.
Heads are batched: attention runs on (H, T, T) tensors, so a layer's rounds do not grow with H.
Squares use CrypTen's `square` (one masked operand opened instead of two): the GELU cube is
x·x², LayerNorm's variance the mean of squares of the centred input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from pibench.backends.crypten.masks import WeightMasks
from pibench.backends.crypten.meter import Meter
from pibench.models.opkinds import matmul_kind
from pibench.models.ops import LAYERNORM_EPS, Ops
from pibench.models.plaintext import TorchConstants

GELU_TANH_C = math.sqrt(2.0 / math.pi)


def _secret_first(a: Any, b: Any) -> tuple[Any, Any]:
    """CrypTen's operators live on the shared tensor: put it on the left of commutative ops."""
    return (b, a) if isinstance(a, torch.Tensor) else (a, b)


def max_only_softmax(x: Any, max_method: str) -> Any:
    """CrypTen's softmax (max-subtracted exp, reciprocal of the sum with `reciprocal_all_pos`) with
    the row maximum from CrypTen's tree reduction alone: CrypTen's own `softmax` calls `max(dim)`,
    which also builds a one-hot argmax (an equality test of every element and a random tie-break)
    that softmax throws away."""
    from crypten.common.functions.maximum import _max_helper_all_tree_reductions
    from crypten.config import cfg

    if x.size(-1) == 1:
        return x.new(torch.ones_like(x.data))
    maximum = _max_helper_all_tree_reductions(x, dim=x.dim() - 1, method=max_method).unsqueeze(-1)
    numerator = (x - maximum).exp()
    with cfg.temp_override({"functions.reciprocal_all_pos": True}):
        inv_denominator = numerator.sum(-1, keepdim=True).reciprocal()
    return numerator * inv_denominator


class CrypTenOps(TorchConstants, Ops):
    """`Ops` over CrypTen `MPCTensor`s (public constants are plain torch tensors)."""

    def __init__(
        self,
        meter: Meter,
        gelu: str = "tanh",
        softmax: str = "max_only",
        max_method: str = "",
        device: str = "cpu",
        masks: WeightMasks | None = None,
    ) -> None:
        self.meter, self.gelu_form, self.softmax_form, self.max_method = meter, gelu, softmax, max_method
        self.device = device  # public constants live where the shares do (`TorchConstants`)
        self.masks = masks  # reuse each weight's opened Beaver mask (None: CrypTen's fresh triples)
        self._weights: set[int] = set()  # ids of the shared weight matrices, and of their transposes
        self._transposed: dict[int, Any] = {}
        self._parts: list[Any] = []  # rows of weights handed out (`rows`), kept alive: their ids stay theirs

    def use_weights(self, weights: Mapping[str, Any]) -> None:
        """The weights products with which may reuse their masks (a variant's, as just shared)."""
        self._weights = {id(w) for w in weights.values()}
        self._transposed.clear()
        self._parts.clear()
        if self.masks is not None:
            self.masks.forget()

    def open_masks(self, weights: Mapping[str, Any]) -> None:
        """Open the masks of `weights` (reuse only; the set-up of a generation: every weight products use)."""
        if self.masks is not None:
            with self.meter.kind("linear"):  # what the products with these weights would have opened
                self.masks.open([w for w in weights.values() if id(w) in self._weights])

    def _reused(self, w: Any) -> bool:
        """Whether a product with `w` reuses its opened mask: a weight (or rows of one), masks reused."""
        return self.masks is not None and not isinstance(w, torch.Tensor) and id(w) in self._weights

    def matmul(self, a: Any, b: Any, role: str) -> Any:
        with self.meter.kind(matmul_kind(role)):
            if isinstance(a, torch.Tensor):  # public x secret, local: (b^T a^T)^T on the shared tensor
                return b.transpose(-2, -1).matmul(a.transpose(-2, -1)).transpose(-2, -1)
            if self.masks is not None and self._reused(b):
                return self.masks.product(a, b, "matmul")
            return a.matmul(b)

    def _times(self, x: Any, w: Any) -> Any:
        """x * w, a fixed weight's product reusing its opened mask where masks are reused."""
        if self.masks is not None and self._reused(w) and not self._reused(x):
            return self.masks.product(x, w, "mul")
        if self.masks is not None and self._reused(x) and not isinstance(w, torch.Tensor):
            return self.masks.product(w, x, "mul")
        return x * w

    def add(self, a: Any, b: Any) -> Any:
        with self.meter.kind("other"):
            a, b = _secret_first(a, b)
            return a + b

    def mul(self, a: Any, b: Any) -> Any:
        with self.meter.kind("other"):
            a, b = _secret_first(a, b)
            return self._times(a, b)

    def scale(self, a: Any, c: float) -> Any:
        with self.meter.kind("other"):
            return a * c

    def softmax(self, x: Any) -> Any:
        with self.meter.kind("softmax"):
            if self.softmax_form == "crypten":
                return x.softmax(-1)
            return max_only_softmax(x, self.max_method)

    def layernorm(self, x: Any, gain: Any, bias: Any) -> Any:
        with self.meter.kind("layernorm"):
            centred = x - x.mean(-1, keepdim=True)
            var = centred.square().mean(-1, keepdim=True)
            return self._times(centred * (var + LAYERNORM_EPS).inv_sqrt(), gain) + bias

    def gelu(self, x: Any) -> Any:
        with self.meter.kind("gelu"):
            if self.gelu_form == "erf":
                return x * ((x * (1 / math.sqrt(2.0))).erf() + 1) * 0.5
            inner = (x + x * x.square() * 0.044715) * GELU_TANH_C
            return x * (inner.tanh() + 1) * 0.5

    def relu(self, x: Any) -> Any:
        with self.meter.kind("relu"):
            return x.relu()

    def argmax(self, x: Any) -> Any:
        with self.meter.kind("argmax"):
            return x.argmax(dim=-1, one_hot=True)

    def split_heads(self, x: Any, heads: int) -> Any:
        T, d = x.size()
        return x.reshape(T, heads, d // heads).transpose(0, 1)

    def split(self, x: Any, parts: int) -> list[Any]:
        return list(x.split(x.size(-1) // parts, dim=-1))

    def merge_heads(self, x: Any) -> Any:
        H, T, dh = x.size()
        return x.transpose(0, 1).reshape(T, H * dh)

    def transpose(self, x: Any) -> Any:
        if id(x) not in self._weights:
            return x.transpose(-2, -1)
        if id(x) not in self._transposed:  # the same object every time: its mask is opened once (tied LM head)
            t = self._transposed[id(x)] = x.transpose(-2, -1)
            self._weights.add(id(t))
            if self.masks is not None:
                self.masks.tie(t, x)
        return self._transposed[id(x)]

    def rows(self, x: Any, start: int, stop: int) -> Any:
        """Positions start..stop-1; rows of a weight (SM(t)'s temperatures of a pass's positions) are a
        weight too, whose mask is those rows of the weight's (`WeightMasks.derive`)."""
        part = super().rows(x, start, stop)
        if self.masks is not None and not isinstance(x, torch.Tensor) and id(x) in self._weights:
            self._weights.add(id(part))
            self._parts.append(part)
            self.masks.derive(part, x, start, stop)
        return part

    def concat(self, a: Any, b: Any) -> Any:
        import crypten

        return crypten.cat([a, b], dim=-2)
