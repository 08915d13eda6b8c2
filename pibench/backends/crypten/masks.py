"""Beaver products with a fixed weight: each weight's mask opened once, reused for every product.

CrypTen multiplies two secrets x (activations) and W (a weight) with a fresh Beaver triple (A, B,
C = A B) each time: both parties open eps = x - A and delta = W - B, then z = C + eps B + A delta +
eps delta. A deployment whose weights are fixed opens delta = W - B once per session and keeps B,
so every later product with W opens eps alone (fresh A, and C = A B for the same B): over a
generation, every token would otherwise re-send every weight (85 million elements for GPT-2's
layers). Security is that of the one product: delta is opened once, eps is fresh every time. This
holds for every fixed weight a product uses: matrix products (`matmul`) and elementwise ones (`mul`:
LayerNorm gains, the scaled FFNs' residual scales, SM(t)'s temperatures, He & Hofmann's coefficients),
and for rows of a weight (`derive`: a decode step's row of SM(t)'s temperatures), whose mask is those
rows of the weight's.

`WeightMasks.product(x, w, op)` is that product. Its first use of a weight opens [eps, delta] in one
exchange, exactly as CrypTen's own product does (the same bytes, the same round, the same random
draws in the same order, so the same result); later uses open eps only. `opened` counts the weight
elements opened so far: the one-off set-up a run reports apart. Triples come as CrypTen's TFP
provider makes them (party 0 draws A and B and shares them and C by pseudo-random zero shares, no
traffic); the TTP provider keeps CrypTen's own products (`pibench.backends.crypten.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class _Mask:
    weight: Any  # the weight's MPCTensor (kept alive: masks are found by its id)
    b: Any  # ArithmeticSharedTensor of B, ring elements (precision 0)
    b_plain: torch.Tensor | None  # B itself, at party 0 (which makes C = A B)
    delta: torch.Tensor  # W - B, opened


class WeightMasks:
    """One party's opened weight masks, by weight (its MPCTensor's id)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self._masks: dict[int, _Mask] = {}
        self._tied: dict[int, Any] = {}  # id of a weight's transpose -> the weight (the tied LM head)
        # id of rows start..stop-1 of a weight -> (those rows, kept alive so that the id stays theirs; the
        # weight; start; stop)
        self._rows: dict[int, tuple[Any, Any, int, int]] = {}
        self.opened = 0  # weight elements whose masks were opened (set-up traffic: 8 bytes each, per party)

    def forget(self) -> None:
        """Drop every mask (new weights, or a pass that must pay its openings again)."""
        self._masks.clear()
        self._rows.clear()

    def derive(self, rows: Any, weight: Any, start: int, stop: int) -> None:
        """`rows` is rows start..stop-1 (dim -2) of `weight`: where the weight's mask is opened, theirs are
        its rows; else a product with them opens them alone, as CrypTen's own would."""
        self._rows[id(rows)] = (rows, weight, start, stop)

    def tie(self, transposed: Any, weight: Any) -> None:
        """`transposed` is `weight`'s transpose: its mask is the weight's, transposed (B^T, delta^T), so a
        tied LM head opens nothing the embedding lookup has opened."""
        self._tied[id(transposed)] = weight

    def open(self, weights: list[Any]) -> None:
        """Open the masks of `weights` now, in one exchange (a session's set-up: later products with
        them open their activations' masks alone)."""
        from crypten.common.rng import generate_random_ring_element
        from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor as Shared
        from crypten.mpc.primitives.beaver import IgnoreEncodings

        todo = [w for w in weights if self._mask(w) is None]
        if not todo:
            return
        plain = [generate_random_ring_element(w._tensor.size(), device=w.device) for w in todo]
        bs = [Shared(b, precision=0, src=0) for b in plain]
        with IgnoreEncodings([*bs, *(w._tensor for w in todo)]):
            deltas = Shared.reveal_batch([w._tensor - b for w, b in zip(todo, bs, strict=True)])
        for w, b, b_plain, delta in zip(todo, bs, plain, deltas, strict=True):
            self._masks[id(w)] = _Mask(w, b, b_plain if self.rank == 0 else None, delta)
            self.opened += w._tensor.numel()

    def _mask(self, w: Any) -> _Mask | None:
        mask = self._masks.get(id(w))
        source = self._tied.get(id(w))
        part = self._rows.get(id(w))
        if mask is None and part is not None and id(part[1]) in self._masks:
            m, (_, _, start, stop) = self._masks[id(part[1])], part
            b = m.b.shallow_copy()
            b.share = m.b.share[..., start:stop, :].contiguous()
            b_plain = None if m.b_plain is None else m.b_plain[..., start:stop, :].contiguous()
            mask = _Mask(w, b, b_plain, m.delta[..., start:stop, :].contiguous())  # not kept: a new step, new rows
        if mask is None and source is not None and id(source) in self._masks:
            m = self._masks[id(source)]
            b = m.b.shallow_copy()  # laid out afresh: int64 products of a transposed view are many times slower
            b.share = m.b.share.transpose(-2, -1).contiguous()
            b_plain = None if m.b_plain is None else m.b_plain.transpose(-2, -1).contiguous()
            mask = self._masks[id(w)] = _Mask(w, b, b_plain, m.delta.transpose(-2, -1).contiguous())
        return mask

    def product(self, x: Any, w: Any, op: str) -> Any:
        """x @ w (op "matmul": secret x (..., m, k), a secret weight w (k, n)) or x * w (op "mul": w
        broadcast against x), reusing w's opened mask."""
        from crypten.common.rng import generate_random_ring_element
        from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor as Shared
        from crypten.mpc.primitives.beaver import IgnoreEncodings

        times = getattr(torch, op)
        xs, ws, device = x._tensor, w._tensor, x.device
        a_plain = generate_random_ring_element(xs.size(), device=device)
        mask = self._mask(w)
        if mask is None:  # first use: as CrypTen's own product, keeping B and the opened delta
            b_plain = generate_random_ring_element(ws.size(), device=device)
            a, b = Shared(a_plain, precision=0, src=0), Shared(b_plain, precision=0, src=0)
            c_plain = times(a_plain, b_plain)
            with IgnoreEncodings([a, b, xs, ws]):
                eps, delta = Shared.reveal_batch([xs - a, ws - b])
            mask = self._masks[id(w)] = _Mask(w, b, b_plain if self.rank == 0 else None, delta)
            self.opened += ws.numel()
        else:
            a = Shared(a_plain, precision=0, src=0)
            # C = A B at party 0, which deals it; the other party's value only gives the shape of its share
            if mask.b_plain is not None:
                c_plain = times(a_plain, mask.b_plain)
            else:
                c_plain = torch.zeros(_product_shape(a_plain, mask.delta, op))
            with IgnoreEncodings([a, xs]):
                eps = (xs - a).reveal()
        c = Shared(c_plain.to(torch.long), precision=0, src=0)
        c.share += times(eps, mask.b.share) + times(a.share, mask.delta)
        c = c + times(eps, mask.delta)  # public: party 0 adds it
        # back to fixed point as CrypTen's product does: truncate where both carry a scale (2 parties: a
        # local division), else keep the scaled one's encoding (x a one-hot row of scale 1, from argmax)
        product = (xs if xs.encoder.scale > 1 else ws).shallow_copy()
        product.share = c.share
        if xs.encoder.scale > 1 and ws.encoder.scale > 1:
            product.div_(xs.encoder.scale)
        z = x.shallow_copy()
        z._tensor = product
        return z


def _product_shape(a: torch.Tensor, b: torch.Tensor, op: str) -> tuple[int, ...]:
    """The shape of a @ b (op "matmul") or a * b (op "mul"), for the share of C the other party holds."""
    if op == "matmul":
        return (*torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1])
    return tuple(torch.broadcast_shapes(a.shape, b.shape))
