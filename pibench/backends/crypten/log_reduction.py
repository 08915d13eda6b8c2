"""How CrypTen's softmax and argmax traffic follows from a row's length: its log-reduction maximum
(`functions.max_method: log_reduction`, the default), as CrypTen 0.4.1 computes it.

The maximum of a row of n runs int(ln n) steps, each comparing the halves of what is left (m // 2
pairs of m), then compares the k values left with each other (k - 1 rows of k) and multiplies those
comparisons together (k - 2 products of k, in ceil(log2(k - 1)) rounds). Softmax adds an exponential
and a product per element and a reciprocal per row; argmax an equality test per element and a random
tie-break. Over these features a calibration's integer coefficients reproduce every row length
measured, 1 to 50257 (`pibench calibrate`: tests/test_calibration.py), so a prediction past the
lengths measured is exact where CrypTen computes so.
"""

from __future__ import annotations

import math

from pibench.models.opkinds import CALLS, CostForm, Signature


def tree(n: int) -> tuple[int, int, int, int, int]:
    """(steps, pairs compared over the steps, comparisons of the last k, their products, rounds of
    those products) of the log-reduction maximum of n values."""
    steps = int(math.log(n)) if n > 1 else 0
    m, pairs = n, 0
    for _ in range(steps):
        pairs += m // 2
        m = m // 2 + m % 2
    row = m if m > 1 else 2  # CrypTen compares at least two
    depth = math.ceil(math.log2(row - 1)) if row > 2 else 0
    return steps, pairs, (row - 1) * m, max(row - 2, 0) * m, depth


def _bytes(sig: Signature, least: int) -> list[float]:
    rows, n = sig
    if n < least:
        return [0.0] * 5
    _, pairs, comparisons, products, _ = tree(n)
    return [rows * f for f in (pairs, comparisons, products, n, 1)]


def _rounds(sig: Signature, least: int) -> list[float]:
    n = sig[1]
    if n < least:
        return [0.0] * 3
    steps, _, _, _, depth = tree(n)
    return [float(steps), float(depth), 1.0]


def _form(kind: str, least: int) -> CostForm:
    """The form of `kind` over rows of at least `least` values (shorter ones exchange nothing)."""
    return CostForm(
        f"crypten-log-reduction-{kind}/1",
        lambda s: _bytes(s, least),
        lambda s: _rounds(s, least),
        size=lambda s: s[1],
        payload=lambda s: s[0],
    )


# softmax of one value is 1 (nothing exchanged); argmax of one value still runs its comparison
FORMS = {"softmax": _form("softmax", 2), "argmax": _form("argmax", 1)}

# Row lengths the calibration measures the two on: every one to 40, each side of the powers of two, up
# to GPT-2's vocabulary (argmax) and 4096 (softmax: a long context's rows); a few with 2 and 3 rows,
# where an exchange carries more elements (round trips: `CostForm.payload`)
LENGTHS = (*range(1, 41), 63, 64, 65, 100, 127, 128, 129, 255, 256, 257, 500, 1000, 1024, 2048, 3000, 4096)
SAMPLES = {
    "softmax": (*(((1, n),) for n in LENGTHS), *(((r, n),) for r in (2, 3) for n in (2, 8, 64, 129))),
    "argmax": (*(((1, n),) for n in (*LENGTHS, 32000, 50257)), *(((r, n),) for r in (2, 3) for n in (2, 64, 97))),
}
# the smallest exchanges of the other kinds, one and two elements (`CostForm.payload`)
NARROW = {"gelu": (((1, 1),), ((1, 2),)), "relu": (((1, 1),), ((1, 2),)), "mul": (((1,), (1,)),)}


def count_samples(name: str) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """The shapes CrypTen's calibration measures call `name`'s counts on."""
    return SAMPLES.get(name, (*CALLS[name].samples, *NARROW.get(name, ())))
