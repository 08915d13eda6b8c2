"""How SPU's (CHEETAH's) matrix products' traffic follows from their shapes: homomorphic ciphertexts.

CHEETAH multiplies an (m, k) by a (k, n) matrix with one party's operand encrypted into polynomials of
8192 coefficients (FM64's ring) and the other answering with the product's ciphertexts. It cuts the
operands into blocks (d0, d1, d2) that fit one polynomial, choosing the cut that sends the fewest
ciphertexts (`blocks`, after SPU 0.9.5's `MatMatProtocol::GetSubMatShape`), encrypts the smaller side
and packs the answers (into as few ciphertexts as the cut allows, `ciphertexts`). Bytes therefore grow
in steps of a ciphertext (0.12 to 0.25 MiB), not per element: a (1, 64) by (64, 192) product costs what
a (8, 64) by (64, 256) one does. The calibration fits what a ciphertext of each kind costs, and what a
product pays besides (its result's truncation: per element), over these counts (`PRODUCT`); a batch of
products (attention's heads) runs one product per head.
"""

from __future__ import annotations

import functools
import math

from pibench.models.opkinds import CostForm, Signature

DEGREE = 8192  # coefficients of one polynomial: CHEETAH's for a 64-bit ring (FM64, SPU's default field)


@functools.lru_cache(maxsize=4096)
def blocks(m: int, k: int, n: int, packing: bool) -> tuple[int, int, int]:
    """The block (d0, d1, d2) CHEETAH cuts an (m, k) x (k, n) product into: the one that minimises its
    price of ciphertexts sent and answered (1000 each), rotations (1 each, where answers are packed)
    and ciphertext products (0.1 each), the last such on ties, as SPU's search does."""
    best, chosen = math.inf, (1, 1, 1)
    for d0 in range(1, min(DEGREE, m) + 1):
        b0, d1 = -(-m // d0), 1
        while d1 <= k and d0 * d1 <= DEGREE:
            b1 = -(-k // d1)
            d2 = min(n, DEGREE // d0 // d1)
            b2 = -(-n // d2)
            sent = min(b0, b2) * b1
            answered = -(-(b0 * b2) // d1)
            rotations = -(-(m * n) // DEGREE) * d1 if packing else 0
            price = (sent + answered) * 1000.0 + rotations + b0 * b1 * b2 / 10.0
            if price <= best:
                best, chosen = price, (d0, d1, d2)
            d1 = d1 * 2 if packing else d1 + 1
    return chosen


@functools.lru_cache(maxsize=4096)
def ciphertexts(m: int, k: int, n: int) -> tuple[int, int, int, int]:
    """(sent, answered unpacked, answered packed by rows (BumbleBee's interleave), answered packed by
    coefficients (PackLWEs)) ciphertexts of one (m, k) x (k, n) product: one answer kind is nonzero."""
    d0, d1, d2 = blocks(m, k, n, True)
    b0, b2 = -(-m // d0), -(-n // d2)
    packing = "none" if b0 * b2 <= 1 else ("rows" if d1 < m * n else "coefficients")
    d0, d1, d2 = blocks(m, k, n, packing != "none")
    b0, b1, b2 = -(-m // d0), -(-k // d1), -(-n // d2)
    sent = min(b0 * b1, b1 * b2)
    if packing == "none":
        return sent, b0 * b2, 0, 0
    if packing == "rows":
        return sent, 0, -(-(b0 * b2) // d1), 0
    return sent, 0, 0, -(-(m * n) // DEGREE)


def dims(sig: Signature) -> tuple[int, int, int, int]:
    """(products in the batch, m, k, n) from a product's signature (elements of a, of b, multiply-
    accumulates, elements of the result); zeros where an operand is empty."""
    a, b, macs, out = sig
    if not (a and b and macs and out):
        return 0, 0, 0, 0
    batch = round(a * b * out / macs**2)  # (B m k)(B k n)(B m n) / (B m k n)^2
    n, k = macs // a, macs // out
    return batch, out // (batch * n), k, n


def _bytes(sig: Signature) -> list[float]:
    batch, m, k, n = dims(sig)
    counts = ciphertexts(m, k, n) if batch else (0, 0, 0, 0)
    return [1.0, float(batch), *(float(batch * c) for c in counts), float(sig[3])]


PRODUCT = CostForm(  # CHEETAH's: per call, per product, per ciphertext of each kind (each its own message), per
    # result element
    "cheetah-product/1",
    _bytes,
    _bytes,
    lambda s: s[2],
    lambda s: s[0] + s[1],
)
FORMS = {"linear": PRODUCT, "attn_matmul": PRODUCT}
