"""The analytic path of a whole suite: symbolic counts for each entry. Imports neither torch nor CrypTen."""

from __future__ import annotations

from pibench.counting.cost import VariantCost, analyse
from pibench.suites.loader import Suite


def suite_costs(suite: Suite, flops: str = "paper") -> list[VariantCost]:
    """Analytic cost of every entry of `suite`, in suite order."""
    return [analyse(e.config, e.name, e.label, flops) for e in suite.entries]
