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

from pibench.interp.base import LINEAR_ROLES, MATMUL_ROLES, Ops

NONLINEAR_KINDS = ("softmax", "layernorm", "gelu", "relu")


@dataclass(frozen=True)
class SymTensor:
    """A tensor of known shape; `public` marks constants both parties know."""

    shape: tuple[int, ...]
    public: bool = False

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
    calls:       (kind, signature) -> number of calls of each operation that makes 2PC parties talk,
                 for calibrated predictions (`pibench.calibration`): ("softmax"|"layernorm", (rows,
                 cols)) with rows summed over leading dims, ("gelu"|"relu", (elements,)),
                 ("mul", (elements of a, elements of b)) and ("linear"|"attn_matmul", (elements of a,
                 elements of b, multiply-accumulates)) for secret x secret
    """

    macs: Counter[str] = field(default_factory=Counter)
    nonlinear: Counter[tuple[str, tuple[int, int]]] = field(default_factory=Counter)
    elementwise: Counter[str] = field(default_factory=Counter)
    calls: Counter[tuple[str, tuple[int, ...]]] = field(default_factory=Counter)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and 1 not in (x, y):
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        out.append(max(x, y))
    return tuple(out)


class SymbolicOps(Ops):
    """`Ops` over `SymTensor`s, recording into `self.tally`."""

    def __init__(self) -> None:
        self.tally = Tally()

    @staticmethod
    def weight(shape: tuple[int, ...]) -> SymTensor:
        return SymTensor(tuple(shape))

    def matmul(self, a: SymTensor, b: SymTensor, role: str) -> SymTensor:
        if role not in MATMUL_ROLES:
            raise ValueError(f"matmul role '{role}' has no cost entry; add it to MATMUL_ROLES")
        *ba, m, k = a.shape
        *bb, k2, n = b.shape
        if k != k2:
            raise ValueError(f"matmul of {a.shape} and {b.shape}: inner dims differ")
        batch = _broadcast(tuple(ba), tuple(bb))
        self.tally.macs[role] += math.prod(batch) * m * k * n
        if not (a.public or b.public):
            kind = "linear" if role in LINEAR_ROLES else "attn_matmul"
            self.tally.calls[(kind, (a.numel, b.numel, math.prod(batch) * m * k * n))] += 1
        return SymTensor((*batch, m, n), a.public and b.public)

    def _elementwise(self, op: str, a: SymTensor, b: SymTensor) -> SymTensor:
        out = SymTensor(_broadcast(a.shape, b.shape), a.public and b.public)
        if not out.public:
            self.tally.elementwise[op] += out.numel
        return out

    def add(self, a: SymTensor, b: SymTensor) -> SymTensor:
        return self._elementwise("add_public" if a.public or b.public else "add", a, b)

    def mul(self, a: SymTensor, b: SymTensor) -> SymTensor:
        if not (a.public or b.public):
            self.tally.calls[("mul", (a.numel, b.numel))] += 1
        return self._elementwise("mul_public" if a.public or b.public else "mul", a, b)

    def scale(self, a: SymTensor, c: float) -> SymTensor:
        if not a.public:
            self.tally.elementwise["mul_public"] += a.numel
        return a

    def _nonlinear(self, kind: str, x: SymTensor) -> SymTensor:
        *lead, rows, cols = (1,) * max(0, 2 - len(x.shape)) + x.shape
        self.tally.nonlinear[(kind, (rows, cols))] += math.prod(lead)
        signature = (math.prod(lead) * rows, cols) if kind in ("softmax", "layernorm") else (x.numel,)
        self.tally.calls[(kind, signature)] += 1
        return SymTensor(x.shape, x.public)

    def softmax(self, x: SymTensor) -> SymTensor:
        return self._nonlinear("softmax", x)

    def layernorm(self, x: SymTensor, gain: SymTensor, bias: SymTensor) -> SymTensor:
        return self._nonlinear("layernorm", x)

    def gelu(self, x: SymTensor) -> SymTensor:
        return self._nonlinear("gelu", x)

    def relu(self, x: SymTensor) -> SymTensor:
        return self._nonlinear("relu", x)

    def split_heads(self, x: SymTensor, heads: int) -> SymTensor:
        T, d = x.shape
        return SymTensor((heads, T, d // heads), x.public)

    def merge_heads(self, x: SymTensor) -> SymTensor:
        H, T, dh = x.shape
        return SymTensor((T, H * dh), x.public)

    def transpose(self, x: SymTensor) -> SymTensor:
        return SymTensor((*x.shape[:-2], x.shape[-1], x.shape[-2]), x.public)

    def causal_mask(self, T: int) -> SymTensor:
        return SymTensor((T, T), public=True)

    def causal_average(self, T: int) -> SymTensor:
        return SymTensor((T, T), public=True)

    def eye(self, T: int) -> SymTensor:
        return SymTensor((T, T), public=True)
