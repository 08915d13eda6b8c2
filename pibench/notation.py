"""How the papers write costs: "SM:144×ℝ^{128×128}" for nonlinear operations, "14.5B" for FLOPs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pibench.cost import VariantCost
from pibench.opkinds import ABBREV


def _term(kind: str, count: int, shape: Sequence[int]) -> str:
    return f"{ABBREV[kind]}:{count}×ℝ^{{{shape[0]}×{shape[1]}}}"


def nonlinear_notation(cost: VariantCost) -> str:
    """E.g. "SM:144×ℝ^{128×128} LN:24×ℝ^{128×768} G:12×ℝ^{128×3072}"; "-" when there are none."""
    return " ".join(_term(n.kind, n.count, n.shape) for n in cost.nonlinear) or "-"


def nonlinear_notation_json(nonlinear: dict[str, Any]) -> str:
    """The same notation from a record's `nonlinear` object (`VariantCost.to_json`)."""
    terms = []
    for kind, entry in nonlinear.items():
        for group in entry.get("groups") or [entry]:
            terms.append(_term(kind, group["count"], group["shape"]))
    return " ".join(terms) or "-"


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
