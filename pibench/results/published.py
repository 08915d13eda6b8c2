"""The papers' published figures (`pibench/data/published_costs.csv`, a copy of the project's
reference table; its columns are described in README.md) and their mapping onto the registry."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

from pibench.models.config import ModelConfig
from pibench.models.variants import VARIANTS, resolve
from pibench.util.errors import PibenchError

PAPERS = {  # the `source` column's prefixes (see the reference table's README)
    "egal": "Entropy-Guided Attention (Jha & Reagen 2025)",
    "aero": "AERO (Jha & Reagen 2024)",
}


def cite(sources: list[str]) -> str:
    """The papers and tables behind `sources` ("egal_tab3", "aero_tab4") as a reader writes them:
    "Entropy-Guided Attention (Jha & Reagen 2025), Table 3; AERO (Jha & Reagen 2024), Table 4"."""
    tables: dict[str, list[str]] = {}
    for source in sources:
        paper, _, table = source.partition("_tab")
        tables.setdefault(paper, []).append(table)
    parts = []
    for paper, numbers in tables.items():
        name = PAPERS.get(paper, paper)
        listed = sorted(set(numbers), key=lambda n: (len(n), n))
        parts.append(f"{name}, Table{'s' if len(listed) > 1 else ''} {', '.join(listed)}")
    return "; ".join(parts)


@dataclass(frozen=True)
class PublishedRow:
    """One published (configuration, variant) row. None where the paper gives no number."""

    source: str
    dataset: str
    L: int
    H: int
    d: int
    T: int
    label: str
    ppl: float | None
    ffn_flops_b: float | None  # billions of FLOPs, 2 per MAC, one prefill pass over T tokens
    attn_flops_b: float | None
    comm_gb: float | None  # GB to produce one token from T prompt tokens (SecretFlow SPU, BumbleBee)
    lat_min: float | None  # minutes, same run
    ffn_blocks_kept: int

    @property
    def variant(self) -> str:
        """The registry name of this row's architecture."""
        return variant_for_label(self.label)

    def config(self) -> ModelConfig:
        overrides = {} if self.ffn_blocks_kept == self.L else {"ffn_blocks_kept": self.ffn_blocks_kept}
        return resolve(self.variant, {"L": self.L, "H": self.H, "d": self.d, "T": self.T}, overrides)


def _num(text: str) -> float | None:
    return float(text) if text.strip() else None


@cache
def published_rows() -> tuple[PublishedRow, ...]:
    text = resources.files("pibench").joinpath("data/published_costs.csv").read_text(encoding="utf-8")
    rows = []
    for r in csv.DictReader(text.splitlines()):
        rows.append(
            PublishedRow(
                r["source"],
                r["dataset"],
                int(r["L"]),
                int(r["H"]),
                int(r["d"]),
                int(r["T"]),
                r["variant"],
                _num(r["ppl"]),
                _num(r["ffn_flops_b"]),
                _num(r["attn_flops_b"]),
                _num(r["comm_gb"]),
                _num(r["lat_min"]),
                int(r["ffn_blocks_kept"]),
            )
        )
    return tuple(rows)


def variant_for_label(label: str) -> str:
    for entry in VARIANTS:
        if label in entry.value.paper_labels:
            return entry.name
    raise PibenchError(f"no registered variant carries the paper label '{label}'")
