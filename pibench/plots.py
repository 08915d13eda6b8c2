"""The report's two figures, PNG and SVG each, for a paper or a slide.

    STEM-comm_by_kind   communication per variant, stacked by operation kind (`pibench.opkinds.KINDS`,
                        each explained in the legend), the total above each bar, in MB or GB as the
                        data needs
    STEM-savings        communication and latency savings against the baseline: measured bars (latency
                        with whiskers over the repeated passes' range), the papers' published savings
                        as markers beside them where a row matches

Titles come from the suite (name, description, dimensions), wrapped so nothing is clipped; missing
values are left out, never drawn as zero; legends sit outside the axes.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

from pibench.opkinds import KINDS
from pibench.report import Report


def _title(record: dict[str, Any], rep: Report, what: str) -> str:
    dims = ", ".join(f"{k}={v}" for k, v in rep.dims.items())
    described = record["suite"].get("description") or ""
    head = f"{rep.suite} ({dims})" + (f": {described}" if described else "")
    return "\n".join(textwrap.wrap(f"{what} — {head}", 70))


def _unit(largest_bytes: float) -> tuple[float, str]:
    return (1e9, "GB") if largest_bytes >= 1e9 else (1e6, "MB") if largest_bytes >= 1e6 else (1e3, "kB")


def _comm_by_kind(plt: Any, record: dict[str, Any], rep: Report) -> Any:
    labels = [r.arch for r in rep.rows]
    totals = [v["measured"]["bytes"] for v in record["variants"]]
    scale, unit = _unit(max(totals))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.75 * len(labels) + 4.5), 4.8))
    bottom = [0.0] * len(labels)
    for kind, spec in KINDS.items():
        values = [v["measured"]["by_kind"][kind]["bytes"] / scale for v in record["variants"]]
        if any(values):
            ax.bar(labels, values, bottom=bottom, label=f"{kind}: {spec.description}")
            bottom = [b + x for b, x in zip(bottom, values, strict=True)]
    for i, total in enumerate(totals):
        ax.annotate(f"{total / scale:.2f}", (i, total / scale), ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, max(totals) / scale * 1.12)
    ax.set_ylabel(f"communication ({unit}, both parties)")
    ax.set_title(_title(record, rep, f"{rep.label} communication by operation"), fontsize=9)
    ax.set_xticks(range(len(labels)), labels, rotation=35, fontsize=7, ha="right")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def _savings(plt: Any, record: dict[str, Any], rep: Report) -> Any:
    labels = [r.arch for r in rep.rows]
    x = list(range(len(labels)))
    fig, axes = plt.subplots(1, 2, figsize=(max(9.0, 1.1 * len(labels) + 3.0), 4.8), sharey=True)
    for ax, (what, mine, pub) in zip(
        axes, (("Communication", "save_comm", "pub_save_comm"), ("Latency", "save_lat", "pub_save_lat")), strict=True
    ):
        measured = [(i, getattr(r, mine)) for i, r in zip(x, rep.rows, strict=True) if getattr(r, mine) is not None]
        published = [(i, getattr(r, pub)) for i, r in zip(x, rep.rows, strict=True) if getattr(r, pub) is not None]
        if measured:
            bars = ax.bar([i for i, _ in measured], [v for _, v in measured], 0.6, label=f"measured ({rep.label})")
            ax.bar_label(bars, fmt="%.2f×", fontsize=6, label_type="center", color="white")  # whiskers go on top
        spread = [(i, r) for i, r in zip(x, rep.rows, strict=True) if what == "Latency" and r.save_lat_low]
        if spread:  # the repeated passes' range: the baseline's fastest over this one's slowest, and back
            ax.errorbar(
                [i for i, _ in spread],
                [r.save_lat for _, r in spread],
                yerr=[
                    [r.save_lat - r.save_lat_low for _, r in spread],
                    [r.save_lat_high - r.save_lat for _, r in spread],
                ],
                fmt="none",
                ecolor="black",
                elinewidth=0.8,
                capsize=2,
                label="range over the repeated passes",
            )
        if published:
            pub_x, pub_y = [i + 0.38 for i, _ in published], [v for _, v in published]
            ax.plot(pub_x, pub_y, "D", color="black", markersize=4, label="published (SecretFlow SPU, papers' WAN)")
        if what == "Latency" and rep.projections:  # what the papers' WAN latency compares with
            net = rep.projections[-1]
            proj = [(i, r.projected_save_lat.get(net)) for i, r in zip(x, rep.rows, strict=True)]
            proj = [(i, v) for i, v in proj if v is not None]
            if proj:
                ax.plot([i - 0.38 for i, _ in proj], [v for _, v in proj], "o", color="tab:orange", markersize=4,
                        label=f"measured, projected onto {net}")  # fmt: skip
        ax.axhline(1.0, color="grey", linewidth=0.8, zorder=0)
        ax.set_xticks(x, labels, rotation=35, fontsize=7, ha="right")
        ax.set_title(f"{what} savings vs {rep.baseline or 'baseline'}", fontsize=9)
    figures = [v for r in rep.rows for v in (r.save_comm, r.save_lat, r.pub_save_comm, r.pub_save_lat) if v]
    figures += [v for r in rep.rows for v in (*r.projected_save_lat.values(), r.save_lat_high) if v]
    top = max(figures or [1.0])
    axes[0].set_ylim(0, math.ceil(top * 1.15 * 2) / 2)
    axes[0].set_ylabel("savings (×, baseline / variant)")
    legend = {n: h for ax in axes for h, n in zip(*ax.get_legend_handles_labels(), strict=True)}
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend), fontsize=8, frameon=False)
    fig.suptitle(_title(record, rep, "Savings"), fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))  # room for the legend below
    return fig


def plot(record: dict[str, Any], rep: Report, out_dir: str | Path, stem: str) -> list[Path]:
    """Write both figures (PNG and SVG) under `out_dir`; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("comm_by_kind", _comm_by_kind), ("savings", _savings)):
        written += save_figure(plt, draw(plt, record, rep), out_dir / f"{stem}-{name}")
    return written


def save_figure(plt: Any, fig: Any, base: Path) -> list[Path]:
    """`fig` as BASE.png (150 dpi) and BASE.svg, nothing clipped; the figure is closed."""
    paths = [base.with_suffix(".png"), base.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths
