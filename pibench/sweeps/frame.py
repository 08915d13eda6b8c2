"""One table over a sweep's folder: a row per cell, the axes as columns, savings against the baseline
within each group of the other axes; csv and json as one tidy frame; plots of cost against an axis.

Figures per cell (units in the column names): the forward pass's bytes (both parties), rounds, round
trips and seconds as measured; its latency projected onto a network (loopback records only:
`pibench.results.report.projected_s`); with generation, the prefill and every decode step summed;
the MPC error, and accuracy on real text where the cell ran it. Savings: the baseline's figure over the
cell's, the baseline being the cell with the same values of every other axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pibench.counting.network import parse_profile
from pibench.models.variants import BASELINE
from pibench.results.generation import token_projected_s
from pibench.results.plots import _pyplot, save_figure
from pibench.results.records import Record
from pibench.results.report import projected_s, rtt_per_round
from pibench.results.tables import terminal_width
from pibench.sweeps.spec import VARIANT, show
from pibench.sweeps.store import Manifest, Store, read_manifest
from pibench.util.errors import PibenchError

DEFAULT_NETWORK = "paper-wan"
# columns a terminal's table leaves out, in this order, where it would be wider than the terminal
OPTIONAL = ("x_time", "max_abs_error", "round_trips", "time_s", "gen_time_s")


def _cell_row(values: dict[str, Any], record: Record, networks: Sequence[str]) -> dict[str, Any]:
    v = record.variants[0]
    m = v.measured
    rtt = rtt_per_round(record)
    loopback = record.run.network == "loopback"
    gen = m.generation
    row: dict[str, Any] = {k: x if isinstance(x, int | float) else show(x) for k, x in values.items() if k != VARIANT}
    row |= {
        "variant": v.name,
        "architecture": v.label,
        "backend": record.backend.name,
        "comm_GB": m.bytes / 1e9,
        "rounds": m.rounds,
        "round_trips": m.latency_rounds,
        "time_s": m.wall_s,
    }
    for name in networks:
        profile = parse_profile(name)
        row[f"{name}_min"] = projected_s(m, profile, rtt) / 60 if loopback else math.nan
    if gen is not None:
        row["gen_comm_GB"] = gen.bytes / 1e9
        row["gen_time_s"] = sum(s.wall_s for s in gen.steps)
        for name in networks:
            profile = parse_profile(name)
            total = sum(token_projected_s(s, profile, rtt) for s in gen.steps)
            row[f"gen_{name}_min"] = total / 60 if loopback else math.nan
    row["max_abs_error"] = m.max_abs_error if m.max_abs_error is not None else math.nan
    row["usable"] = m.usable
    if m.accuracy is not None:
        row |= {"agreement": m.accuracy.agreement, "ppl_mpc": m.accuracy.ppl_mpc, "ppl_plain": m.accuracy.ppl_plaintext}
    row["machine"] = record.environment.cpu_model
    return row


def sweep_frame(
    folder: str | Path, baseline: str | None = None, networks: Sequence[str] = (DEFAULT_NETWORK,)
) -> tuple[pd.DataFrame, Manifest, list[str]]:
    """The sweep's tidy frame (a row per finished cell, in the sweep's order), its manifest, and notes
    (cells not finished, failed, times from several machines)."""
    manifest = read_manifest(folder)
    store = Store(folder, manifest.schema_version)
    rows, missing, failed = [], 0, 0
    for cell in manifest.cells:
        record = store.record(cell)
        if record is None:
            failed += store.failure(cell) is not None
            missing += 1
            continue
        rows.append(_cell_row(cell.values, record, networks))
    axes = [a for a in manifest.axes if a != VARIANT]
    df = pd.DataFrame(rows)
    notes = []
    if missing:
        notes.append(
            f"{missing} of {len(manifest.cells)} cells have no record ({failed} failed: {Path(folder) / 'failed'}); "
            "`pibench sweep` runs what is left"
        )
    if df.empty:
        return df, manifest, notes
    variants = sorted({c.variant for c in manifest.cells})
    if (baseline or BASELINE) in variants:
        _savings(df, axes, baseline or BASELINE, networks)
    elif baseline:
        known = ", ".join(variants)
        raise PibenchError(f"--baseline '{baseline}' is not a variant of this sweep; its variants: {known}")
    else:
        notes.append(f"no savings: the sweep has no {BASELINE} cell (--baseline names another variant)")
    machines = sorted(df["machine"].unique())
    if len(machines) > 1:
        notes.append(f"times come from {len(machines)} machines ({'; '.join(machines)}): compare times within one")
    else:
        notes.append(f"times measured on {machines[0]}")
    return df, manifest, notes


def _savings(df: pd.DataFrame, axes: list[str], baseline: str, networks: Sequence[str]) -> None:
    """Add x_comm, x_time and x_NETWORK (the baseline's figure over the cell's: bytes, measured seconds,
    projected minutes) within each group of the other axes' values."""
    keys = axes or ["_all"]
    if not axes:
        df["_all"] = 0
    for figure, name in (("comm_GB", "x_comm"), ("time_s", "x_time"), *((f"{n}_min", f"x_{n}") for n in networks)):
        base = df[df["variant"] == baseline].set_index(keys)[figure]
        df[name] = [
            base.get(k if len(keys) > 1 else k[0], math.nan) / x if x else math.nan
            for k, x in zip(df[keys].itertuples(index=False, name=None), df[figure], strict=True)
        ]
    df.drop(columns=["_all"], errors="ignore", inplace=True)


def render_sweep(df: pd.DataFrame, manifest: Manifest, notes: list[str], fmt: str) -> str:
    """The frame as a table (terminal or markdown: rounded figures, footnotes), csv or json (every number)."""
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return df.to_json(orient="records", indent=1)
    if fmt == "latex":
        return _latex(df, manifest, notes)
    if fmt not in ("table", "markdown"):
        raise PibenchError(f"--format {fmt}: a sweep's report is a table, markdown, latex, csv or json")
    from tabulate import tabulate

    shown = df.drop(columns=["machine", "architecture"], errors="ignore").copy()
    if "usable" in shown and shown["usable"].all():
        shown = shown.drop(columns=["usable"])
    head = f"sweep {manifest.name}: {len(df)} cells" + (f" ({manifest.path})" if manifest.path else "")
    shown = shown.astype(object).where(shown.notna(), None)  # no figure: "-", not "nan"

    def table(frame: pd.DataFrame) -> str:
        return tabulate(
            frame.to_dict("records") if not frame.empty else [],
            headers="keys",
            tablefmt="github" if fmt == "markdown" else "simple",
            floatfmt=".4g",
            missingval="-",
            showindex=False,
        )

    body, hidden = table(shown), []
    width = terminal_width()
    for name in (c for c in OPTIONAL if c in shown and fmt == "table"):  # a terminal's width: least needed first
        if max(map(len, body.splitlines()), default=0) <= width:
            break
        shown = shown.drop(columns=[name])
        hidden.append(name)
        body = table(shown)
    if hidden:
        notes = [
            *notes,
            f"not shown, to fit {width} columns: {', '.join(hidden)} (--format csv or json has every column)",
        ]
    return "\n".join([head, body, *(f"  {n}" for n in notes)])


# (column, header, format) of a sweep's LaTeX table after its axes: the variants' labels, figures formatted
LATEX_COLUMNS = (
    ("architecture", "Network Arch.", "{}"),
    ("comm_GB", "Comm. (GB)", "{:.3f}"),
    ("rounds", "Rounds", "{:,.0f}"),
    ("time_s", "Lat. (s)", "{:.2f}"),
    ("x_comm", "Sav. comm.", "{:.2f}×"),
    ("x_time", "Sav. lat.", "{:.2f}×"),
)


def _latex(df: pd.DataFrame, manifest: Manifest, notes: list[str]) -> str:
    """The sweep's table for a paper (booktabs): the axes, each cell's variant by its label, GB, rounds,
    seconds, minutes projected and savings, formatted ("-" where a cell has no figure), the notes as caption."""
    from pibench.results.latex import booktabs

    axes = [a for a in manifest.axes if a != VARIANT and a in df]
    projected = [c for c in df.columns if c.endswith("_min") and not c.startswith("gen_")]
    columns = [(a, a, "{}") for a in axes] + list(LATEX_COLUMNS[:4])
    columns += [(c, f"{c.removesuffix('_min')} proj. (min.)", "{:.2f}") for c in projected]
    columns += [c for c in LATEX_COLUMNS[4:] if c[0] in df]
    columns += [(f"x_{c.removesuffix('_min')}", f"Sav. {c.removesuffix('_min')}", "{:.2f}×") for c in projected]
    columns = [c for c in columns if c[0] in df]

    def cell(value: Any, fmt: str) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return fmt.format(value) if fmt != "{}" else str(value)

    rows = [[cell(row[key], fmt) for key, _, fmt in columns] for row in df.to_dict("records")]
    text = [fmt == "{}" for _, _, fmt in columns]
    caption = f"Sweep {manifest.name}: {len(df)} cells. " + " ".join(n[0].upper() + n[1:] + "." for n in notes)
    return booktabs([h for _, h, _ in columns], rows, text, caption, f"sweep-{manifest.name}")


def _numeric_axes(df: pd.DataFrame, manifest: Manifest) -> list[str]:
    """Axes whose values are all numbers, with two or more of them (cost is drawn against them)."""
    out = []
    for axis in manifest.axes:
        if axis == VARIANT or axis not in df:
            continue
        values = pd.to_numeric(df[axis], errors="coerce")
        if values.notna().all() and values.nunique() > 1:
            out.append(axis)
    return out


def plot_sweep(df: pd.DataFrame, manifest: Manifest, out_dir: str | Path, network: str = DEFAULT_NETWORK) -> list[Path]:
    """For each numeric axis, NAME-AXIS: GB and projected minutes against it, a line per variant and
    value of the other axes; and NAME-frontier (MPC error against GB) where the sweep varies a backend
    setting. The paths written (PNG and SVG)."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    minutes = f"{network}_min"
    for axis in _numeric_axes(df, manifest):
        others = [a for a in manifest.axes if a not in (axis, VARIANT) and a in df]
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        variants = list(dict.fromkeys(df["variant"]))  # a colour per variant, a line style per value of the others
        rest: list[tuple[str, ...]] = list(dict.fromkeys(tuple(r) for r in df[others].astype(str).values.tolist()))
        for key, group in df.groupby(["variant", *others], sort=False):
            key = key if isinstance(key, tuple) else (key,)
            label = ", ".join(str(k) for k in key)
            style = {
                "color": f"C{variants.index(key[0]) % 10}",
                "linestyle": ("-", "--", ":", "-.")[rest.index(tuple(str(k) for k in key[1:])) % 4],
                "marker": "o",
                "label": label,
            }
            group = group.assign(_x=pd.to_numeric(group[axis])).sort_values("_x")
            left.plot(group["_x"], group["comm_GB"], **style)
            if minutes in group:
                right.plot(group["_x"], group[minutes], **style)
        left.set(xlabel=axis, ylabel="communication, GB (both parties)", title="bytes")
        right.set(xlabel=axis, ylabel=f"minutes, projected onto {network}", title="latency")
        for ax in (left, right):
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
        right.legend(fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.suptitle(f"sweep {manifest.name}: cost against {axis}", fontsize=10)
        fig.tight_layout()
        written += save_figure(plt, fig, out / f"{manifest.name}-{axis.replace('.', '_')}")
    settings = [a for a in manifest.axes if a.split(".")[0] in ("crypten", "spu") and a in df]
    if settings and df["max_abs_error"].notna().any():
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, group in df.groupby("variant", sort=False):
            ax.scatter(group["comm_GB"], group["max_abs_error"], label=str(key))
            for _, row in group.iterrows():
                tag = ", ".join(f"{a.split('.', 1)[1]} {row[a]}" for a in settings)
                ax.annotate(tag, (row["comm_GB"], row["max_abs_error"]), fontsize=5)
        ax.set(xlabel="communication, GB (both parties)", ylabel="max |MPC - plaintext|", yscale="log")
        ax.set_title(f"sweep {manifest.name}: accuracy against cost", fontsize=10)
        ax.legend(fontsize=6, frameon=False)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        written += save_figure(plt, fig, out / f"{manifest.name}-frontier")
    return written
