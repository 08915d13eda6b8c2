"""Quality records in reports: their own table, measured perplexity beside a run record's costs, and
four figures (entropy heatmaps, heads by quarter of the maximum entropy, training curves, perplexity
against communication).

A quality record's variants are matched to a run record's by name and by every architecture field
but the dimensions (the quality suite trains small; the run measures GPT-2 size).
"""

from __future__ import annotations

import json
import statistics
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from pibench.quality import QUARTERS
from pibench.quality.training_record import QualityRecord
from pibench.results.latex import booktabs
from pibench.results.plots import save_figure
from pibench.results.report import Report

# the tidy frame's columns of the shares of heads in each quarter (`QUARTERS`) of the maximum entropy
QUARTER_KEYS = tuple(f"heads_share_q{i + 1}" for i in range(len(QUARTERS)))
HEADERS = ("Network Arch.", "PPL (per byte)", "overload", "collapse", "heads by quarter of max entropy", "train s")
PAIRS_NOTE = (
    "Pairs: the difference of mean perplexities is beyond the seed spread where every seed of one variant "
    "is below every seed of the other (ranges apart), else within it."
)


def quality_frame(records: Sequence[tuple[str, QualityRecord]]) -> pd.DataFrame:
    """One row per (quality record, variant), numbers only, units in the names: perplexity per byte
    (the mean over the seeds that did not diverge, with their sample standard deviation, least and
    greatest: one seed, std NaN), validation loss (nats per byte, the first seed's), the step the
    first seed diverged at (NaN: it did not), seeds trained and diverged, the shares of heads
    overloaded and collapsed (means over seeds) and in each quarter of the maximum entropy (the
    first seed's), training seconds (the sum over seeds)."""
    rows = []
    for name, record in records:
        for v in record.variants:
            q, e = v.quality, v.quality.entropy
            shares: list[float | None] = list(e.quarter_shares.values()) if e else [None] * len(QUARTERS)
            ppls = v.ppls
            entropies = [r.entropy for r in v.runs if r.entropy is not None]
            rows.append(
                {
                    "suite": record.suite.name,
                    "record": name,
                    "variant": v.name,
                    "label": v.label,
                    "val_ppl": v.mean_ppl,
                    "val_ppl_std": statistics.stdev(ppls) if len(ppls) > 1 else None,
                    "val_ppl_min": min(ppls) if ppls else None,
                    "val_ppl_max": max(ppls) if ppls else None,
                    "seeds": len(v.runs),
                    "seeds_diverged": sum(r.diverged is not None for r in v.runs),
                    "val_loss_nats": q.val_loss,
                    "diverged_at_step": q.diverged.step if q.diverged else None,
                    "overload_share": statistics.fmean(x.overload for x in entropies) if entropies else None,
                    "collapse_share": statistics.fmean(x.collapse for x in entropies) if entropies else None,
                    **dict(zip(QUARTER_KEYS, shares, strict=True)),
                    "train_s": sum(r.wall_s for r in v.runs),
                }
            )
    out = pd.DataFrame(rows)
    for key in out.columns:
        if key not in ("suite", "record", "variant", "label"):
            out[key] = pd.to_numeric(out[key])
    return out


def _cells(row: Any) -> list[str]:
    def num(x: Any, fmt: str) -> str:
        return "-" if pd.isna(x) else format(x, fmt)

    if row.seeds > 1:  # mean ± standard deviation over the seeds that finished
        ppl = "diverged" if pd.isna(row.val_ppl) else f"{row.val_ppl:.3f} ± {num(row.val_ppl_std, '.3f')}"
        ppl += f" ({int(row.seeds_diverged)} of {int(row.seeds)} diverged)" if row.seeds_diverged else ""
    elif pd.notna(row.diverged_at_step):
        ppl = f"diverged (step {int(row.diverged_at_step)})"
    else:
        ppl = num(row.val_ppl, ".3f")
    shares = " ".join(num(getattr(row, k), ".2f") for k in QUARTER_KEYS)
    overload, collapse = num(row.overload_share, ".2f"), num(row.collapse_share, ".2f")
    return [row.label, ppl, overload, collapse, shares, f"{row.train_s:.0f}"]


def pair_verdicts(frame: pd.DataFrame) -> pd.DataFrame:
    """For every pair of a record's variants trained with several seeds: the difference of their mean
    perplexities (second minus first) and whether it exceeds the spread across seeds, i.e. every seed
    of one variant is below every seed of the other (their ranges do not overlap: with 3 seeds each,
    chance orders them so 1 time in 10); else it is within the seed spread."""
    rows = []
    for record, group in frame.groupby("record", sort=False):
        trained = [r for r in group.itertuples() if r.seeds > 1 and pd.notna(r.val_ppl)]
        for i, a in enumerate(trained):
            for b in trained[i + 1 :]:
                apart = a.val_ppl_max < b.val_ppl_min or b.val_ppl_max < a.val_ppl_min
                rows.append(
                    {
                        "record": record,
                        "first": a.label,
                        "second": b.label,
                        "ppl_difference": b.val_ppl - a.val_ppl,
                        "first_range": (a.val_ppl_min, a.val_ppl_max),
                        "second_range": (b.val_ppl_min, b.val_ppl_max),
                        "beyond_seed_spread": bool(apart),
                    }
                )
    return pd.DataFrame(rows)


def _pairs_table(pairs: pd.DataFrame, fmt: str) -> str:
    def span(r: tuple[float, float]) -> str:
        return f"{r[0]:.3f}-{r[1]:.3f}"

    rows = [
        [
            p.first,
            p.second,
            f"{p.ppl_difference:+.3f}",
            span(p.first_range),
            span(p.second_range),
            "beyond the seed spread" if p.beyond_seed_spread else "within the seed spread",
        ]
        for p in pairs.itertuples()
    ]
    headers = ["first", "second", "Δ PPL (second - first)", "first's seeds", "second's seeds", "verdict"]
    return tabulate(rows, headers=headers, tablefmt="github" if fmt == "markdown" else "simple", disable_numparse=True)


def _notes(record: QualityRecord) -> str:
    seeds = sorted({len(v.runs) for v in record.variants})
    spread = (
        f"PPL is the mean ± sample standard deviation over {'/'.join(map(str, seeds))} training seeds "
        "(the same validation windows); entropy: overload and collapse the means over seeds, quarters the "
        "first seed's; train s: all seeds. "
        if seeds != [1]
        else ""
    )
    return spread + (
        f"{record.suite.name} ({record.dims_text}): {record.train.tokens:,} training bytes per variant "
        f"from the Python standard library ({record.corpus.train_bytes:,} bytes in train, "
        f"{record.corpus.validation_bytes:,} in validation); quarters {', '.join(QUARTERS)} of each head's "
        "entropy as a share of its maximum; overload: the top quarter; collapse: the bottom quarter."
    )


def render_quality(records: Sequence[tuple[str, QualityRecord]], fmt: str) -> str:
    """Quality records in `fmt` (table, markdown, latex, csv, json; `pibench.results.tables.FORMATS`): one table
    per record for display formats, one tidy frame for csv and json."""
    df = quality_frame(records)
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return json.dumps(json.loads(df.to_json(orient="records", double_precision=15)), indent=1, ensure_ascii=False)
    out = []
    for name, record in records:
        rows = [_cells(r) for r in df[df["record"] == name].itertuples()]
        if fmt == "latex":
            out.append(_latex(record, rows))
            continue
        style = "github" if fmt == "markdown" else "simple"
        table = tabulate(rows, headers=list(HEADERS), tablefmt=style, disable_numparse=True)
        notes = _notes(record)
        out.append(
            table + ("\n\n" + notes if fmt == "markdown" else "\n" + textwrap.fill(notes, 120, subsequent_indent="  "))
        )
        pairs = pair_verdicts(df[df["record"] == name])
        if len(pairs):
            out.append(_pairs_table(pairs, fmt) + "\n" + textwrap.fill(PAIRS_NOTE, 120, subsequent_indent="  "))
    return "\n\n".join(out)


def _latex(record: QualityRecord, rows: list[list[str]]) -> str:
    text = [True] + [False] * (len(HEADERS) - 1)
    return booktabs(HEADERS, rows, text, _notes(record), f"{record.suite.name}-quality")


def quality_table(record: QualityRecord) -> str:
    """The quality record as a terminal table: perplexity per byte, overload, collapse, heads by quarter."""
    return render_quality([("", record)], "table")


def plot_quality(record: QualityRecord, out_dir: str | Path, stem: str, run: Report | None = None) -> list[Path]:
    """Entropy heatmaps per variant, heads by quarter side by side, training curves and, with `run` (a
    run record's `Report` joined to this record), perplexity against communication. PNG and SVG each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"{record.suite.name} ({record.dims_text})"
    trained = [(v, v.quality.entropy) for v in record.variants if v.quality.entropy]
    figures = []

    cols = min(3, max(1, len(trained)))
    rows_n = -(-len(trained) // cols) if trained else 1
    fig, axes = plt.subplots(
        rows_n, cols, figsize=(3.4 * cols, 2.8 * rows_n + 0.8), squeeze=False, layout="constrained"
    )
    image = None
    for ax, (v, e) in zip(axes.flat, trained, strict=False):
        frac = e.per_head_fraction
        image = ax.imshow(frac, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(v.label, fontsize=8)
        ax.set_xlabel("head", fontsize=7)
        ax.set_ylabel("layer", fontsize=7)
        ax.set_xticks(range(len(frac[0])))
        ax.set_yticks(range(len(frac)))
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(trained) :]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="entropy / maximum (mean over query rows)")
    fig.suptitle(f"Attention entropy per head — {title}", fontsize=9)
    figures.append(("entropy_heatmap", fig))

    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(trained) + 3), 4.2))
    width = 0.8 / max(1, len(trained))
    for k, (v, e) in enumerate(trained):
        shares = list(e.quarter_shares.values())
        ax.bar([q + (k - (len(trained) - 1) / 2) * width for q in range(4)], shares, width, label=v.label)
    ax.set_xticks(range(4), [f"{q}\nof max entropy" for q in QUARTERS], fontsize=7)
    ax.set_ylabel("share of heads")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Heads by quarter of the maximum entropy — {title}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figures.append(("entropy_quarters", fig))

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for v in record.variants:
        q = v.quality
        curve = q.train_curve
        if curve:
            label = v.label + (" (diverged)" if q.diverged else "")
            ax.plot([step * q.tokens_per_step / 1e6 for step, _ in curve], [loss for _, loss in curve], label=label)
    ax.set_xlabel("training bytes (millions)")
    ax.set_ylabel("cross-entropy of the step's batch (nats per byte)")
    ax.set_title(f"Training curves — {title}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figures.append(("train_curves", fig))

    if run is not None:
        points = [(r.comm_gb, r.ppl_measured, r.arch) for r in run.rows if r.ppl_measured is not None]
        if points:
            fig, ax = plt.subplots(figsize=(6.4, 4.4))
            points.sort()
            ax.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", zorder=3)
            for k, (x, y, name) in enumerate(points):
                # above when higher than the nearest neighbour in x, else below: close points stay legible
                near = min((p for j, p in enumerate(points) if j != k), key=lambda p: abs(p[0] - x), default=None)
                up = near is None or y >= near[1]
                ax.annotate(name, (x, y), fontsize=7, xytext=(5, 5 if up else -11), textcoords="offset points")
            frontier, best = [], float("inf")  # the variants no other beats on both axes
            for x, y, _ in points:
                if y < best:
                    frontier.append((x, y))
                    best = y
            if len(frontier) > 1:
                xs, ys = zip(*frontier, strict=True)
                ax.step(xs, ys, where="post", linestyle="--", color="grey", linewidth=0.8, label="Pareto frontier")
                ax.legend(fontsize=7, loc="upper right", frameon=False)
            ax.set_xlabel(f"communication (GB, both parties; {run.label}, {run.suite})")
            seeds = max(len(v.runs) for v in record.variants)
            over = f", mean over {seeds} seeds" if seeds > 1 else ""
            ax.set_ylabel(f"validation perplexity per byte\n({record.dims_text}{over})")
            ax.margins(x=0.08, y=0.12)
            ax.set_title("Perplexity against communication (lower left is better)", fontsize=9)
            figures.append(("ppl_vs_comm", fig))

    return [path for name, fig in figures for path in save_figure(plt, fig, out_dir / f"{stem}-{name}")]
