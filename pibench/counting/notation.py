"""How costs are written: the papers' "SM:144×ℝ^{128×128}" for nonlinear operations and "14.5B" for
FLOPs, and the unit a displayed column of bytes or seconds is scaled to (GB, MB, kB; min., s), so that
a small suite shows "12.3 MB", not "0.012 GB". Machine-readable formats keep fixed units."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pibench.counting.cost import VariantCost
from pibench.models.opkinds import ABBREV


def _term(kind: str, count: int, shape: Sequence[int]) -> str:
    return f"{ABBREV[kind]}:{count}×ℝ^{{{shape[0]}×{shape[1]}}}"


def nonlinear_notation(cost: VariantCost) -> str:
    """E.g. "SM:144×ℝ^{128×128} LN:24×ℝ^{128×768} G:12×ℝ^{128×3072}"; "-" when there are none."""
    return " ".join(_term(n.kind, n.count, n.shape) for n in cost.nonlinear) or "-"


def nonlinear_notation_json(nonlinear: Mapping[str, Any]) -> str:
    """The same notation from a record's `nonlinear` entries (kind -> an entry with `count`, `shape` and,
    where a kind comes in several shapes, `groups` of count and shape)."""
    terms = []
    for kind, entry in nonlinear.items():
        for group in entry.groups or [entry]:
            terms.append(_term(kind, group.count, group.shape))
    return " ".join(terms) or "-"


def nonlinear_totals(cost: VariantCost) -> str:
    """Operations and elements per kind, whatever their shapes: "SM:4608 (17.2M el.) LN:...", for a
    sum of passes whose shapes differ (every decode step's softmax rows are one longer)."""
    terms = []
    for kind in dict.fromkeys(n.kind for n in cost.nonlinear):
        groups = [n for n in cost.nonlinear if n.kind == kind]
        count, elements = sum(g.count for g in groups), sum(g.elements for g in groups)
        terms.append(f"{ABBREV[kind]}:{count} ({_si(elements)} el.)")
    return " ".join(terms) or "-"


def _si(n: int) -> str:
    for per, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= per:
            return f"{n / per:.1f}{suffix}"
    return str(n)


def billions(flops: int) -> str:
    """FLOPs as the papers print them: 14495514624 -> "14.5B", 905969664 -> "0.9B"; counts under
    0.1B in M, K or units."""
    for scale, floor, suffix in ((1e9, 1e8, "B"), (1e6, 1e5, "M"), (1e3, 1e2, "K")):
        if flops >= floor:
            return f"{flops / scale:.1f}{suffix}"
    return str(flops)


COST_COLUMNS = ("variant", "label", "#nonlinear ops", "FLOPs FFN", "FLOPs attn")


def cost_rows(costs: Sequence[VariantCost]) -> list[list[str]]:
    """One row per variant, in COST_COLUMNS order."""
    return [[c.variant, c.label, nonlinear_notation(c), billions(c.flops_ffn), billions(c.flops_attn)] for c in costs]


@dataclass(frozen=True)
class Unit:
    """A display unit: `per` base units (bytes or seconds) make one; values shown with `fmt`."""

    name: str
    per: float
    fmt: str

    def show(self, base: float | None) -> str:
        return "-" if base is None else format(base / self.per, self.fmt)


BYTE_UNITS = (Unit("GB", 1e9, ".3f"), Unit("MB", 1e6, ".2f"), Unit("kB", 1e3, ".2f"), Unit("B", 1, ".0f"))
TIME_UNITS = (Unit("min.", 60, ".3f"), Unit("s", 1, ".2f"))


def unit_for(values: Iterable[float | None], units: Sequence[Unit]) -> Unit:
    """The largest unit in which the largest of `values` (base units; None skipped) is at least 1,
    else the smallest unit; the first unit when there are no values."""
    largest = max((v for v in values if v is not None and v == v), default=None)
    if largest is None:
        return units[0]
    return next((u for u in units if largest >= u.per), units[-1])
