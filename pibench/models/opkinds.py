"""One cost specification per operation kind, read by every consumer.

Two lists, each written once:

- `KINDS`: the per-operation breakdown of measured costs (records, reports, gate, plots): what the
  exchanges of a 2PC run are attributed to. `nonlinear` kinds are the ones the papers count
  ("SM:144×ℝ^{128×128}"), with their abbreviation.
- `CALLS`: the operations that make two parties talk, as the symbolic interpreter lists them in
  `Tally.calls` (kind, signature). Each says which breakdown kind it lands in, how its signature
  follows from operand shapes, how a backend's op server runs it on an `Ops` interpreter, and the
  samples a calibration measures it on (small shapes for the exact byte and round models, GPT-2-sized
  shapes for the time model). The symbolic interpreter, the calibration and the op benchmarks all
  read these entries; nothing restates them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pibench.models.ops import LINEAR_ROLES

Shape = tuple[int, ...]
Signature = tuple[int, ...]


@dataclass(frozen=True)
class Kind:
    """One kind of the per-operation breakdown."""

    name: str
    description: str
    abbrev: str | None = None  # the papers' notation, for nonlinear kinds
    end_to_end: bool = False  # only the end-to-end scope runs it (the head: embedding, LM head, argmax)
    by_chance: bool = False  # a run's figures are whole lumps where a pool ran dry: gates compare the totals only

    @property
    def nonlinear(self) -> bool:
        return self.abbrev is not None


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("softmax", "softmax over the last dim (max, exp, reciprocal of the sum)", "SM"),
        Kind("layernorm", "LayerNorm (mean, variance, inverse square root)", "LN"),
        Kind("gelu", "GELU activation", "G"),
        Kind("relu", "ReLU activation", "R"),
        Kind("argmax", "the next token: argmax of the logits, as a secret one-hot row", "AM", True),
        Kind("linear", "products with a weight matrix (projections, FFN)"),
        Kind("attn_matmul", "attention's T×T products (Q Kᵀ, softmax·V)"),
        Kind("embedding", "secret one-hot token rows times the token embedding", end_to_end=True),
        Kind("lm_head", "the LM head: hidden state times the tied token embedding", end_to_end=True),
        Kind("other", "residual scalars and other secret×secret elementwise products"),
        Kind(
            "refills",
            "a backend's refills of its pools (SPU's oblivious transfers and triples), wherever a call emptied one",
            by_chance=True,
        ),
    )
}
NONLINEAR = tuple(k.name for k in KINDS.values() if k.nonlinear)


def kinds_in(scope: str) -> tuple[str, ...]:
    """The kinds a pass in `scope` ("layers" or "end_to_end", `ModelConfig.scope`) can run."""
    return tuple(k.name for k in KINDS.values() if scope == "end_to_end" or not k.end_to_end)


ABBREV = {k.name: k.abbrev for k in KINDS.values() if k.abbrev}


HEAD_KINDS = {"head.embedding": "embedding", "head.lm_head": "lm_head"}  # end-to-end products, by role


def matmul_kind(role: str) -> str:
    """The breakdown kind of a secret x secret matrix product of `role` (`pibench.models.ops.MATMUL_ROLES`)."""
    if role in HEAD_KINDS:
        return HEAD_KINDS[role]
    return "linear" if role in LINEAR_ROLES else "attn_matmul"


def _rows_cols(shapes: Sequence[Shape]) -> Signature:
    *lead, cols = shapes[0]
    return (math.prod(lead), cols)


def _layernorm(shapes: Sequence[Shape]) -> Signature:
    """(rows, cols, gain elements opened): a fresh LayerNorm's product with its gain opens the gain's
    cols elements (the symbolic interpreter sets 0 where the gain's opened mask is reused)."""
    rows, cols = _rows_cols(shapes)
    return (rows, cols, cols)


def _elements(shapes: Sequence[Shape]) -> Signature:
    return (math.prod(shapes[0]),)


def _two_operands(shapes: Sequence[Shape]) -> Signature:
    return (math.prod(shapes[0]), math.prod(shapes[1]))


def _matmul(shapes: Sequence[Shape]) -> Signature:
    """(elements of a, elements of b, multiply-accumulates, elements of the product)."""
    a, b = shapes
    batch = math.prod(broadcast(a[:-2], b[:-2]))
    return (math.prod(a), math.prod(b), batch * a[-2] * a[-1] * b[-1], batch * a[-2] * b[-1])


def broadcast(a: Shape, b: Shape) -> Shape:
    """The broadcast shape of `a` and `b` (numpy rules), or ValueError."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and 1 not in (x, y):
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        out.append(max(x, y))
    return tuple(out)


Sample = tuple[Shape, ...]  # operand shapes of one measured call
MATMULS = ("linear", "attn_matmul", "embedding", "lm_head")
Features = Callable[[Signature], list[float]]


@dataclass(frozen=True)
class CostForm:
    """How a call's traffic follows from its signature: its bytes a combination of `bytes`' features,
    its rounds (and round trips) of `rounds`', each with a constant first (a per-call cost). A calibration
    finds the coefficients: exact integers for a backend whose counts are deterministic (CrypTen), a
    fit otherwise (`pibench.calibration.fit`). `size` is the one number a calibrated range is measured
    in (elements, a row's length, multiply-accumulates), and what a backend's traffic is interpolated
    over where it is not a combination of features (SPU: `Backend.count_model`). A backend may give a
    kind a form of its own, from its algorithm (CrypTen's log-reduction softmax: `Backend.cost_form`)."""

    name: str
    bytes: Features
    rounds: Features
    size: Callable[[Signature], int]
    # the fewest elements one of its exchanges carries: where that is 1 or 2, an exchange waits for one round
    # trip instead of two (CrypTen's all_reduce), so round trips have features of their own there
    payload: Callable[[Signature], int]

    def round_trips(self, sig: Signature) -> list[float]:
        """The features round trips are a combination of: the rounds', and again for calls whose
        smallest exchange carries one element, and for two."""
        base, narrow = self.rounds(sig), self.payload(sig)
        return [*base, *(f * (narrow == 1) for f in base), *(f * (narrow == 2) for f in base)]


ELEMENTWISE = CostForm("elementwise/1", lambda s: [1.0, s[0]], lambda s: [1.0, s[0]], lambda s: s[0], lambda s: s[0])
NORM = CostForm(  # (rows, cols, gain elements opened)
    "norm/1", lambda s: [1.0, s[0] * s[1], s[0], s[2]], lambda s: [1.0, s[0]], lambda s: s[0] * s[1], lambda s: s[0]
)
ROWS = CostForm(  # (rows, row length): a reduction over each row
    "rows/1",
    lambda s: [1.0, s[0] * s[1], s[0]],
    lambda s: [1.0, s[0] * s[1], s[0]],
    lambda s: s[0] * s[1],
    lambda s: s[0],
)


def _batch(sig: Signature) -> float:
    """The products in a batch of matrix products: (B m k)(B k n)(B m n) / (B m k n)^2 = B."""
    a, b, macs, out = sig
    return a * b * out / macs**2 if macs else 0.0


PRODUCT = CostForm(  # (elements of a, of b, multiply-accumulates, elements of the product)
    "product/2",
    lambda s: [1.0, _batch(s), s[0], s[1], s[3]],
    lambda s: [1.0, _batch(s), s[3]],
    lambda s: s[2],
    lambda s: s[0] + s[1],
)
PAIR = CostForm(  # (elements of a, of b)
    "pair/1", lambda s: [1.0, s[0], s[1]], lambda s: [1.0, s[0]], lambda s: s[0], lambda s: s[0] + s[1]
)


@dataclass(frozen=True)
class Call:
    """An operation that makes the parties talk, as listed in `Tally.calls`.

    signature:     operand shapes -> the call's signature in the tally
    run:           (ops, operands) -> result: how an op server executes it on an `Ops` interpreter
    form:          how its bytes and rounds follow from its signature (`CostForm`)
    samples:       small operand shapes for the exact byte and round fits
    time_samples:  GPT-2-sized operand shapes for the time fit
    operands:      how many operands the op server makes (extra LayerNorm gain/bias are derived)
    """

    name: str
    bucket: str  # the breakdown kind (`KINDS`) its exchanges land in
    signature: Callable[[Sequence[Shape]], Signature]
    run: Callable[[Any, Sequence[Any]], Any]
    form: CostForm
    samples: tuple[Sample, ...]
    time_samples: tuple[Sample, ...]
    weights: bool = True  # operands after the first are the server's weights (else the client's secrets)
    same_as: str | None = None  # predicted by the calibrated model of this call (not calibrated itself)
    calibrated: bool = True  # `pibench calibrate` measures it

    @property
    def model(self) -> str:
        """The call whose calibrated model predicts this one."""
        return self.same_as or self.name

    def size(self, sig: Signature) -> int:
        """The work a call does, for the time model: multiply-accumulates of products, else elements."""
        if self.name in MATMULS:
            return sig[2]
        return sig[0] * sig[1] if self.name in ("layernorm", "softmax", "argmax") else sig[0]


def _tied_product(name: str, role: str) -> Call:
    """An end-to-end product with the token embedding: it costs what any product with a weight costs,
    so the calibration's model of "linear" predicts it (it is not calibrated itself)."""
    return Call(
        name,
        name,
        _matmul,
        lambda ops, xs: ops.matmul(xs[0], xs[1], role),
        PRODUCT,
        samples=(),
        time_samples=(),
        same_as="linear",
        calibrated=False,
    )


CALLS: dict[str, Call] = {
    c.name: c
    for c in (
        Call(
            "softmax",
            "softmax",
            _rows_cols,
            lambda ops, xs: ops.softmax(xs[0]),
            ROWS,
            samples=(((1, 1),), ((1, 2),), ((2, 8),), ((3, 16),), ((1, 100),)),
            time_samples=(((12, 128, 128),), ((12, 256, 256),), ((12, 64, 512),)),
        ),
        Call(
            "layernorm",
            "layernorm",
            _layernorm,
            lambda ops, xs: ops.layernorm(*xs),
            NORM,
            samples=(((1, 8),), ((2, 8),), ((1, 16),), ((3, 100),), ((4, 32),)),
            time_samples=(((128, 768),), ((256, 768),), ((512, 768),)),
        ),
        Call(
            "gelu",
            "gelu",
            _elements,
            lambda ops, xs: ops.gelu(xs[0]),
            ELEMENTWISE,
            samples=(((1, 64),), ((2, 128),), ((1, 1000),)),
            time_samples=(((128, 768),), ((128, 3072),), ((512, 3072),)),
        ),
        Call(
            "relu",
            "relu",
            _elements,
            lambda ops, xs: ops.relu(xs[0]),
            ELEMENTWISE,
            samples=(((1, 64),), ((2, 128),), ((1, 1000),)),
            time_samples=(((128, 768),), ((128, 3072),), ((512, 3072),)),
        ),
        Call(
            "linear",
            "linear",
            _matmul,
            lambda ops, xs: ops.matmul(xs[0], xs[1], "attn.proj"),
            PRODUCT,
            samples=(((4, 8), (8, 16)), ((8, 16), (16, 32)), ((16, 8), (8, 8)), ((1, 4), (4, 4)), ((5, 2), (2, 7))),
            time_samples=(((128, 768), (768, 768)), ((128, 768), (768, 3072)), ((512, 768), (768, 3072))),
        ),
        Call(
            "attn_matmul",
            "attn_matmul",
            _matmul,
            lambda ops, xs: ops.matmul(xs[0], xs[1], "attn.scores"),
            PRODUCT,
            samples=(
                ((2, 4, 8), (2, 8, 4)),
                ((3, 8, 4), (3, 4, 8)),
                ((2, 1, 4), (2, 4, 6)),
                ((1, 5, 2), (1, 2, 3)),
                ((4, 2, 2), (4, 2, 2)),
            ),
            time_samples=(
                ((12, 128, 64), (12, 64, 128)),
                ((12, 128, 128), (12, 128, 64)),
                ((12, 512, 64), (12, 64, 512)),
            ),
            weights=False,  # Q Kᵀ and softmax·V: both operands come from activations
        ),
        # end to end: the LM head's and the embedding's products are priced as any product with a weight
        *(_tied_product(name, role) for role, name in HEAD_KINDS.items()),
        Call(
            "argmax",
            "argmax",
            _rows_cols,
            lambda ops, xs: ops.argmax(xs[0]),
            ROWS,
            samples=(((1, 2),), ((1, 16),), ((2, 32),), ((1, 100),)),
            time_samples=(((1, 8192),), ((1, 32000),), ((1, 50257),)),
            weights=False,
        ),
        Call(  # a product with a public constant (attention's 1/sqrt(d_head)): CrypTen's truncation is local,
            # SPU's exchanges
            "scale",
            "other",
            _elements,
            lambda ops, xs: ops.scale(xs[0], 0.125),
            ELEMENTWISE,
            samples=(((1, 64),), ((2, 128),), ((1, 1000),)),
            time_samples=(((12, 128, 128),), ((128, 768),), ((12, 512, 512),)),
            weights=False,
        ),
        Call(
            "mul",
            "other",
            _two_operands,
            lambda ops, xs: ops.mul(xs[0], xs[1]),
            PAIR,
            samples=(((4, 8), (1,)), ((4, 8), (4, 8)), ((2, 4, 4), (2, 4, 1))),
            time_samples=(((128, 768), (1,)), ((12, 128, 128), (12, 128, 1)), ((512, 768), (512, 768))),
        ),
    )
}
assert all(c.bucket in KINDS for c in CALLS.values())


def operand_shapes(call: str, sample: Sample) -> list[Shape]:
    """All operands an op server makes for `sample`: LayerNorm also takes a gain and a bias (width,)."""
    shapes = [tuple(s) for s in sample]
    if call == "layernorm":
        shapes += [shapes[0][-1:], shapes[0][-1:]]
    return shapes
