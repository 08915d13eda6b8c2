"""The report's two figures, PNG and SVG each, for a paper or a slide; drawn from the `Report` alone, so
they show what its table shows: every backend (measured or predicted) and every row.

    STEM-comm_by_kind   communication per variant, stacked by operation kind (`pibench.models.opkinds.KINDS`,
                        each explained in the legend), the total above each bar, in kB, MB or GB as the
                        data needs; one panel per backend of the table
    STEM-savings        communication and latency savings against the baseline: a bar per backend
                        (the record's own latency with whiskers over the repeated passes' range), the
                        papers' published savings as markers beside them where a row matches

Titles come from the suite (name, description, dimensions), wrapped so nothing is clipped; missing
values are left out, never drawn as zero; legends sit outside the axes.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

from pibench.counting.notation import BYTE_UNITS, unit_for
from pibench.models.opkinds import KINDS
from pibench.results.report import Report


def _title(rep: Report, what: str) -> str:
    dims = ", ".join(f"{k}={v}" for k, v in rep.dims.items())
    head = f"{rep.suite} ({dims})" + (f": {rep.description}" if rep.description else "")
    return "\n".join(textwrap.wrap(f"{what} — {head}", 70))


def _panels(rep: Report) -> list[tuple[str, list[dict[str, int] | None]]]:
    """(backend label, bytes by kind per row) of every backend the table shows."""
    panels: list[tuple[str, list[dict[str, int] | None]]] = [(rep.label, [r.comm_by_kind for r in rep.rows])]
    for o in rep.others:
        kinds = [o.by_kind.get(r.variant) for r in rep.rows]
        if any(kinds):
            panels.append((o.label, kinds))
    return panels


def _comm_by_kind(plt: Any, rep: Report) -> Any:
    labels = [r.arch for r in rep.rows]
    panels = _panels(rep)
    width = max(7.0, 0.75 * len(labels) + 4.5)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * (1 + 0.8 * (len(panels) - 1)), 4.8), squeeze=False)
    for ax, (label, kinds) in zip(axes[0], panels, strict=True):
        totals = [sum(k.values()) if k else None for k in kinds]
        unit = unit_for(totals, BYTE_UNITS)
        bottom = [0.0] * len(labels)
        for kind, spec in KINDS.items():
            values = [(k.get(kind, 0) if k else 0) / unit.per for k in kinds]
            if any(values):
                ax.bar(
                    labels,
                    values,
                    bottom=bottom,
                    label=f"{kind}: {spec.description}",
                    color=f"C{list(KINDS).index(kind)}",
                )
                bottom = [b + x for b, x in zip(bottom, values, strict=True)]
        for i, total in enumerate(totals):
            if total is not None:
                ax.annotate(f"{total / unit.per:.2f}", (i, total / unit.per), ha="center", va="bottom", fontsize=7)
        ax.set_ylim(0, max((t for t in totals if t), default=1) / unit.per * 1.12)
        ax.set_ylabel(f"communication ({unit.name}, both parties)")
        measured = "predicted" if label.endswith(" pred.") else "measured"
        ax.set_title(f"{label} ({measured})", fontsize=8)
        ax.set_xticks(range(len(labels)), labels, rotation=35, fontsize=7, ha="right")
    legend = {n: h for ax in axes[0] for h, n in zip(*ax.get_legend_handles_labels(), strict=True)}
    axes[0][-1].legend(
        list(legend.values()), list(legend), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False
    )
    fig.suptitle(_title(rep, "Communication by operation"), fontsize=9)
    fig.tight_layout()
    return fig


def _series(rep: Report, what: str) -> list[tuple[str, list[float | None]]]:
    """(legend label, savings per row) of every backend the table shows, the record's own first."""
    mine = "save_comm" if what == "Communication" else "save_lat"
    out: list[tuple[str, list[float | None]]] = [(f"measured ({rep.label})", [getattr(r, mine) for r in rep.rows])]
    for o in rep.others:
        theirs = o.save_comm if what == "Communication" else o.save_lat
        tag = f"predicted ({o.label.removesuffix(' pred.')})" if o.label.endswith(" pred.") else f"measured ({o.label})"
        out.append((tag, [theirs.get(r.variant) for r in rep.rows]))
    return out


def _savings(plt: Any, rep: Report) -> Any:
    labels = [r.arch for r in rep.rows]
    x = list(range(len(labels)))
    fig, axes = plt.subplots(1, 2, figsize=(max(9.0, 1.1 * len(labels) + 3.0), 4.8), sharey=True)
    figures: list[float] = []
    for ax, (what, pub) in zip(axes, (("Communication", "pub_save_comm"), ("Latency", "pub_save_lat")), strict=True):
        series = _series(rep, what)
        bar = 0.6 / len(series)
        for n, (label, values) in enumerate(series):
            offset = (n - (len(series) - 1) / 2) * bar
            shown = [(i + offset, v) for i, v in zip(x, values, strict=True) if v is not None]
            if not shown:
                continue
            bars = ax.bar([i for i, _ in shown], [v for _, v in shown], bar, label=label, color=f"C{n}")
            ax.bar_label(bars, fmt="%.2f×", fontsize=6 if len(series) == 1 else 5, label_type="center", color="white")
            figures += [v for _, v in shown]
            if n == 0 and what == "Latency":  # the repeated passes' range of the record's own latency
                spread = [
                    (i + offset, r.save_lat, r.save_lat_low, r.save_lat_high)
                    for i, r in zip(x, rep.rows, strict=True)
                    if r.save_lat and r.save_lat_low and r.save_lat_high
                ]
                if spread:
                    ax.errorbar(
                        [i for i, *_ in spread],
                        [mid for _, mid, _, _ in spread],
                        yerr=[[mid - low for _, mid, low, _ in spread], [high - mid for _, mid, _, high in spread]],
                        fmt="none",
                        ecolor="black",
                        elinewidth=0.8,
                        capsize=2,
                        label="range over the repeated passes",
                    )
                    figures += [high for *_, high in spread]
        published: list[tuple[int, float]] = [
            (i, getattr(r, pub)) for i, r in zip(x, rep.rows, strict=True) if getattr(r, pub) is not None
        ]
        if published:
            ax.plot([i + 0.38 for i, _ in published], [v for _, v in published], "D", color="black", markersize=4,
                    label="published (SecretFlow SPU, papers' WAN)")  # fmt: skip
            figures += [v for _, v in published]
        if what == "Latency" and rep.projections:  # what the papers' WAN latency compares with
            net = rep.projections[-1]
            proj = [
                (i, v) for i, r in zip(x, rep.rows, strict=True) if (v := r.projected_save_lat.get(net)) is not None
            ]
            if proj:
                ax.plot([i - 0.38 for i, _ in proj], [v for _, v in proj], "o", color="crimson", markersize=4,
                        label=f"measured ({rep.label}), projected onto {net}")  # fmt: skip
                figures += [v for _, v in proj]
        ax.axhline(1.0, color="grey", linewidth=0.8, zorder=0)
        ax.set_xticks(x, labels, rotation=35, fontsize=7, ha="right")
        ax.set_title(f"{what} savings vs {rep.baseline or 'baseline'}", fontsize=9)
    axes[0].set_ylim(0, math.ceil(max(figures or [1.0]) * 1.15 * 2) / 2)
    axes[0].set_ylabel("savings (×, baseline / variant)")
    legend = {n: h for ax in axes for h, n in zip(*ax.get_legend_handles_labels(), strict=True)}
    if legend:
        columns = min(len(legend), 3)
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=columns, fontsize=8, frameon=False)
    fig.suptitle(_title(rep, "Savings"), fontsize=9)
    rows_of_legend = -(-len(legend) // 3) if legend else 0
    fig.tight_layout(rect=(0, 0.05 + 0.04 * rows_of_legend, 1, 1))  # room for the legend below
    return fig


def plot(rep: Report, out_dir: str | Path, stem: str) -> list[Path]:
    """Write both figures (PNG and SVG) under `out_dir`; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("comm_by_kind", _comm_by_kind), ("savings", _savings)):
        written += save_figure(plt, draw(plt, rep), out_dir / f"{stem}-{name}")
    return written


def save_figure(plt: Any, fig: Any, base: Path) -> list[Path]:
    """`fig` as BASE.png (150 dpi) and BASE.svg, nothing clipped; the figure is closed."""
    paths = [base.with_suffix(".png"), base.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths
