"""The report's two figures, PNG and SVG each, for a paper or a slide; drawn from the `Report` alone, so
they show what its table shows: every backend (measured or predicted) and every row.

    STEM-comm_by_kind   communication per variant, stacked by operation kind (`pibench.models.opkinds.KINDS`,
                        each explained in the legend), the total above each bar, in kB, MB or GB as the
                        data needs; one panel per backend of the table
    STEM-savings        communication and latency savings against the baseline: a bar per backend
                        (the record's own latency with whiskers over the repeated passes' range), the
                        papers' published savings as markers beside them where a row matches

    STEM-generation     (a record that generates) every pass's cost against the positions it attends to:
                        per variant, a decode step's bytes stacked by operation kind; beside them, each
                        variant's projected seconds per token on the papers' WAN (paper-wan)

Titles come from the suite (name, description, dimensions), wrapped so nothing is clipped; missing
values are left out, never drawn as zero; legends sit outside the axes.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pibench.counting.notation import BYTE_UNITS, unit_for
from pibench.models.opkinds import KINDS
from pibench.results.generation import generating, token_projected_s
from pibench.results.records import Record
from pibench.results.report import Report, rtt_per_round


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
    own = f"predicted ({rep.label.removesuffix(' pred.')})" if rep.predicted else f"measured ({rep.label})"
    out: list[tuple[str, list[float | None]]] = [(own, [getattr(r, mine) for r in rep.rows])]
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


def _generation(plt: Any, record: Record) -> Any:
    """Small multiples, one per generating variant: each decode step's bytes (both parties) stacked by
    kind against its context t; the last panel: each variant's projected paper-wan seconds per token."""
    variants = generating(record)
    steps = {v.label: v.measured.generation.steps[1:] for v in variants}  # type: ignore[union-attr]
    unit = unit_for([s.bytes for ss in steps.values() for s in ss], BYTE_UNITS)
    columns = min(4, len(variants) + 1)
    rows = -(-(len(variants) + 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    top = max((s.bytes for ss in steps.values() for s in ss), default=1) / unit.per * 1.1
    for ax, (label, passes) in zip(flat, steps.items(), strict=False):
        t = [s.context for s in passes]
        stacks = [(k, [s.by_kind[k].bytes / unit.per if k in s.by_kind else 0.0 for s in passes]) for k in KINDS]
        shown = [(k, ys) for k, ys in stacks if any(ys)]
        ax.stackplot(
            t,
            *[ys for _, ys in shown],
            labels=[f"{k}: {KINDS[k].description}" for k, _ in shown],
            colors=[f"C{list(KINDS).index(k)}" for k, _ in shown],
        )
        ax.set_title(label, fontsize=8)
        ax.set_ylim(0, top)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("context t (positions attended to)", fontsize=7)
        ax.set_ylabel(f"{unit.name} per token", fontsize=7)
    wan = flat[len(steps)]
    rtt = rtt_per_round(record)
    for n, (label, passes) in enumerate(steps.items()):
        t = [s.context for s in passes]
        style = "-" if n < 10 else "--"
        wan.plot(t, [token_projected_s(s, "paper-wan", rtt) for s in passes], style, label=label, color=f"C{n % 10}")
    wan.set_title("projected onto paper-wan (100 Mbit/s, 80 ms)", fontsize=8)
    wan.set_xlabel("context t (positions attended to)", fontsize=7)
    wan.set_ylabel("seconds per token", fontsize=7)
    wan.set_ylim(bottom=0)
    wan.tick_params(labelsize=7)
    for ax in flat[len(steps) + 1 :]:
        ax.axis("off")
    spare = flat[len(steps) + 1] if len(flat) > len(steps) + 1 else None  # the variants' legend, else inside
    handles, names = wan.get_legend_handles_labels()
    (spare or wan).legend(handles, names, fontsize=6, frameon=False, loc="upper left" if spare else "lower right")
    legend = {n: h for ax in flat[: len(steps)] for h, n in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=2, fontsize=7, frameon=False)
    dims = ", ".join(f"{k}={v}" for k, v in record.suite.dims.items())
    title = f"Cost per generated token (decode steps) — {record.suite.name} ({dims}), {record.backend.label} measured"
    fig.suptitle("\n".join(textwrap.wrap(title, 90)), fontsize=9)
    height = fig.get_size_inches()[1]  # room below for the kinds' legend, about 0.17 inch a row
    fig.tight_layout(rect=(0, (0.2 + 0.17 * -(-len(legend) // 2)) / height, 1, 1))
    return fig


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(rep: Report, out_dir: str | Path, stem: str) -> list[Path]:
    """Write both figures (PNG and SVG) under `out_dir`; the paths written."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("comm_by_kind", _comm_by_kind), ("savings", _savings)):
        written += save_figure(plt, draw(plt, rep), out_dir / f"{stem}-{name}")
    return written


def plot_generation(record: Record, out_dir: str | Path, stem: str) -> list[Path]:
    """STEM-generation (PNG and SVG) under `out_dir` for a record that generates; the paths written
    (none where no variant generates)."""
    if not generating(record):
        return []
    plt = _pyplot()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return save_figure(plt, _generation(plt, record), Path(out_dir) / f"{stem}-generation")


OFF_SCALE = 4.0  # an MPC perplexity over 4x the largest plaintext one is drawn at the top edge, its value named


def plot_accuracy(records: Sequence[tuple[str, Record]], out_dir: str | Path, stem: str) -> list[Path]:
    """STEM-accuracy (PNG and SVG) under `out_dir`: each variant's perplexity per byte from the MPC
    logits against that from the plaintext logits on the same real text, one marker per record (a
    backend), the diagonal where MPC costs nothing; a variant whose MPC perplexity is not finite, or
    over `OFF_SCALE` times the largest plaintext one, is drawn at the top edge with its value. None
    written where no record ran on real text."""
    ran = [(name, r) for name, r in records if any(v.measured.accuracy for v in r.variants)]
    if not ran:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    points = [
        (v.measured.accuracy.ppl_plaintext, v.measured.accuracy.ppl_mpc)
        for _, r in ran
        for v in r.variants
        if v.measured.accuracy is not None
    ]
    plain = max(x for x, _ in points)
    finite = [y for _, y in points if y is not None and y <= OFF_SCALE * plain]
    top = max([x for x, _ in points] + finite) * 1.15
    low = min([x for x, _ in points] + finite) / 1.1
    for k, (name, record) in enumerate(ran):
        xs, ys, labels, broken = [], [], [], []
        v_mpc = {v.label: v.measured.accuracy.ppl_mpc for v in record.variants if v.measured.accuracy is not None}
        for v in record.variants:
            a = v.measured.accuracy
            if a is None:
                continue
            xs.append(a.ppl_plaintext)
            ys.append(a.ppl_mpc if a.ppl_mpc is not None and a.ppl_mpc <= OFF_SCALE * plain else top)
            labels.append(v.label)
            broken.append(not a.usable)
        marker = "osD^v"[k % 5]
        windows = next(v.measured.accuracy.windows for v in record.variants if v.measured.accuracy is not None)
        tag = f"{record.backend.label} ({Path(name).stem}, {windows} windows)" if len(ran) > 1 else record.backend.label
        ax.scatter(xs, ys, marker=marker, label=tag, zorder=3)
        for x, y, label, bad in zip(xs, ys, labels, broken, strict=True):
            if bad or abs(y / x - 1) > 0.05:  # the points on the diagonal need no name: the legend says whose
                mpc = v_mpc[label]
                off = "" if y != top else " (not finite)" if mpc is None else f" (off the scale: {mpc:.2g})"
                text = label + (" (unusable)" if bad else "") + off
                ax.annotate(text, (x, y), fontsize=6.5, xytext=(4, -3), textcoords="offset points")
    ax.plot([low, top], [low, top], linestyle="--", color="grey", linewidth=0.8, label="MPC = plaintext")
    ax.set_xlim(low, top)
    ax.set_ylim(low, top * 1.05)
    first = ran[0][1]
    ax.set_xlabel("perplexity per byte, plaintext logits (each record's windows)")
    ax.set_ylabel("perplexity per byte, MPC logits")
    ax.set_title(f"Accuracy under MPC — {first.suite.name}, windows of {first.suite.dims['T']} bytes", fontsize=9)
    from matplotlib.ticker import ScalarFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(ScalarFormatter())
        axis.set_tick_params(which="minor", labelsize=6)
    ax.legend(fontsize=7, loc="lower right", frameon=False)  # named points: off the diagonal by 5%, or unusable
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return save_figure(plt, fig, Path(out_dir) / f"{stem}-accuracy")


def save_figure(plt: Any, fig: Any, base: Path) -> list[Path]:
    """`fig` as BASE.png (150 dpi) and BASE.svg, nothing clipped; the figure is closed."""
    paths = [base.with_suffix(".png"), base.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths
