"""Symbolic interpreter: runs the model definition on shapes alone and tallies what it executes.

No tensor of model size is allocated. Every operation has a cost entry: matrix products count
multiply-accumulates by role, nonlinear operations count (kind, rows x cols) instances, elementwise
operations count elements, layout operations are free by definition. There is no silent zero: a
method the tally does not know raises.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pibench.models.opkinds import CALLS, NONLINEAR, broadcast, matmul_kind
from pibench.models.ops import MATMUL_ROLES, Ops


@dataclass(frozen=True)
class SymTensor:
    """A tensor of known shape; `public` marks constants both parties know."""

    shape: tuple[int, ...]
    public: bool = False
    weight: str = ""  # the weight's name, for a weight matrix (and its transpose): products may reuse its mask

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class Tally:
    """What one forward pass executed.

    macs:        role -> multiply-accumulates of matrix products
    nonlinear:   (kind, (rows, cols)) -> number of such operations (a softmax over each row of a
                 rows x cols matrix is one op, as in the papers' "SM:144 x R^{128x128}")
    elementwise: "add" | "add_public" | "mul" | "mul_public" -> elements of secret results
                 (add, mul: secret with secret; *_public: secret with a public constant)
    calls:       (kind, signature) -> number of calls of each operation that makes 2PC parties talk
                 (`pibench.models.opkinds.CALLS`: the kinds and how their signatures follow from shapes)
    opened:      weight elements whose Beaver masks the pass opens (each product with a weight opens
                 it, or only the first: `SymbolicOps.masks`)
    """

    macs: Counter[str] = field(default_factory=Counter)
    nonlinear: Counter[tuple[str, tuple[int, int]]] = field(default_factory=Counter)
    elementwise: Counter[str] = field(default_factory=Counter)
    calls: Counter[tuple[str, tuple[int, ...]]] = field(default_factory=Counter)
    opened: int = 0

    def add(self, other: Tally, times: int = 1) -> None:
        """Add `times` copies of `other` (a layer kind standing for `times` layers)."""
        self.opened += other.opened * times
        pairs: tuple[tuple[Counter[Any], Counter[Any]], ...] = (
            (self.macs, other.macs),
            (self.nonlinear, other.nonlinear),
            (self.elementwise, other.elementwise),
            (self.calls, other.calls),
        )
        for mine, theirs in pairs:
            for key, n in theirs.items():
                mine[key] += n * times

    def key(self) -> tuple[object, ...]:
        """A hashable summary: equal keys, equal work on equal shapes (and so equal 2PC bytes and rounds)."""
        return tuple(tuple(sorted(c.items())) for c in (self.macs, self.nonlinear, self.elementwise, self.calls))


MASKS = ("fresh", "reuse", "opened")


class SymbolicOps(Ops):
    """`Ops` over `SymTensor`s, recording into `self.tally`.

    `masks`: what a 2PC product with a fixed weight (a matrix, a LayerNorm gain, a scale: every
    `ParamSpec.use == "product"`) opens (`pibench.backends.crypten.masks`): "fresh", the weight's masked
    value every time (CrypTen's own product); "reuse", only at the weight's first product of the pass;
    "opened", never (a decode step after the set-up opened every weight). A product that opens the
    activation alone counts the weight's elements as 0 in its signature ((elements of a, 0, MACs, out)
    for a matrix product, (elements, 0) for an elementwise one, (rows, cols, 0) for a LayerNorm)."""

    def __init__(self, masks: str = "fresh") -> None:
        if masks not in MASKS:
            raise ValueError(f"masks must be one of {', '.join(MASKS)}, not {masks!r}")
        self.tally, self.masks, self._opened = Tally(), masks, set[str]()

    @staticmethod
    def weight(shape: tuple[int, ...]) -> SymTensor:
        """A secret tensor of `shape` (an activation, or a weight that is not a matrix product's)."""
        return SymTensor(tuple(shape))

    @staticmethod
    def param(name: str, shape: tuple[int, ...]) -> SymTensor:
        """The weight `name`, whose mask products may reuse."""
        return SymTensor(tuple(shape), weight=name)

    def _opens(self, b: SymTensor) -> bool:
        """Whether a product with `b` opens `b`'s masked value (and counts its elements as opened)."""
        if not b.weight or self.masks == "fresh":
            opens = True
        else:
            opens = self.masks == "reuse" and b.weight not in self._opened
            self._opened.add(b.weight)
        self.tally.opened += b.numel if opens and b.weight else 0
        return opens

    def matmul(self, a: SymTensor, b: SymTensor, role: str) -> SymTensor:
        if role not in MATMUL_ROLES:
            raise ValueError(f"matmul role '{role}' has no cost entry; add it to MATMUL_ROLES")
        *ba, m, k = a.shape
        *bb, k2, n = b.shape
        if k != k2:
            raise ValueError(f"matmul of {a.shape} and {b.shape}: inner dims differ")
        batch = broadcast(tuple(ba), tuple(bb))
        self.tally.macs[role] += math.prod(batch) * m * k * n
        if not (a.public or b.public):
            kind = matmul_kind(role)
            sig = CALLS[kind].signature((a.shape, b.shape))
            if not self._opens(b):
                sig = (sig[0], 0, *sig[2:])
            self.tally.calls[(kind, sig)] += 1
        return SymTensor((*batch, m, n), a.public and b.public)

    def _elementwise(self, op: str, a: SymTensor, b: SymTensor) -> SymTensor:
        out = SymTensor(broadcast(a.shape, b.shape), a.public and b.public)
        if not out.public:
            self.tally.elementwise[op] += out.numel
        return out

    def add(self, a: SymTensor, b: SymTensor) -> SymTensor:
        return self._elementwise("add_public" if a.public or b.public else "add", a, b)

    def mul(self, a: SymTensor, b: SymTensor) -> SymTensor:
        if not (a.public or b.public):
            ea, eb = CALLS["mul"].signature((a.shape, b.shape))
            if b.weight and not self._opens(b):  # a fixed weight's opened mask reused: its activation alone
                eb = 0
            elif a.weight and not b.weight and not self._opens(a):
                ea = 0
            self.tally.calls[("mul", (ea, eb))] += 1
        return self._elementwise("mul_public" if a.public or b.public else "mul", a, b)

    def scale(self, a: SymTensor, c: float) -> SymTensor:
        if not a.public:
            self.tally.elementwise["mul_public"] += a.numel
            self.tally.calls[("scale", (a.numel,))] += 1
        return a

    def _nonlinear(self, kind: str, x: SymTensor, sig: tuple[int, ...] | None = None) -> SymTensor:
        assert kind in NONLINEAR, kind
        *lead, rows, cols = (1,) * max(0, 2 - len(x.shape)) + x.shape
        self.tally.nonlinear[(kind, (rows, cols))] += math.prod(lead)
        self.tally.calls[(kind, sig or CALLS[kind].signature((x.shape,)))] += 1
        return SymTensor(x.shape, x.public)

    def softmax(self, x: SymTensor) -> SymTensor:
        return self._nonlinear("softmax", x)

    def layernorm(self, x: SymTensor, gain: SymTensor, bias: SymTensor) -> SymTensor:
        rows, cols, gain_cols = CALLS["layernorm"].signature((x.shape,))
        opened = self._opens(gain) if gain.weight else True  # the product with the gain opens it, or reuses it
        return self._nonlinear("layernorm", x, (rows, cols, gain_cols if opened else 0))

    def gelu(self, x: SymTensor) -> SymTensor:
        return self._nonlinear("gelu", x)

    def relu(self, x: SymTensor) -> SymTensor:
        return self._nonlinear("relu", x)

    def argmax(self, x: SymTensor) -> SymTensor:
        return self._nonlinear("argmax", x)

    def split_heads(self, x: SymTensor, heads: int) -> SymTensor:
        T, d = x.shape
        return SymTensor((heads, T, d // heads), x.public)

    def split(self, x: SymTensor, parts: int) -> list[SymTensor]:
        *lead, n = x.shape
        if n % parts:
            raise ValueError(f"cannot split {x.shape} into {parts} parts")
        return [SymTensor((*lead, n // parts), x.public) for _ in range(parts)]

    def merge_heads(self, x: SymTensor) -> SymTensor:
        H, T, dh = x.shape
        return SymTensor((T, H * dh), x.public)

    def transpose(self, x: SymTensor) -> SymTensor:  # a weight's transpose shares its mask (tied LM head)
        return SymTensor((*x.shape[:-2], x.shape[-1], x.shape[-2]), x.public, x.weight)

    def concat(self, a: SymTensor, b: SymTensor) -> SymTensor:
        *lead, m, k = a.shape
        if (*lead, k) != (*b.shape[:-2], b.shape[-1]):
            raise ValueError(f"cannot concatenate {a.shape} and {b.shape} along positions")
        return SymTensor((*lead, m + b.shape[-2], k), a.public and b.public)

    def rows(self, x: SymTensor, start: int, stop: int) -> SymTensor:
        if not 0 <= start < stop <= x.shape[-2]:
            raise ValueError(f"rows {start}..{stop - 1} of {x.shape}")
        # rows of a weight are that weight's (SM(t)'s temperature of the positions a pass computes): their
        # mask is a part of the weight's, opened with it
        return SymTensor((*x.shape[:-2], stop - start, x.shape[-1]), x.public, x.weight)

    def causal_mask(self, n: int, t: int | None = None) -> SymTensor:
        return SymTensor((n, n if t is None else t), public=True)

    def causal_average(self, n: int, t: int | None = None) -> SymTensor:
        return SymTensor((n, n if t is None else t), public=True)

    def eye(self, n: int, t: int | None = None) -> SymTensor:
        return SymTensor((n, n if t is None else t), public=True)
