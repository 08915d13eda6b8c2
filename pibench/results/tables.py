"""One tidy table behind every report format.

A report's rows become `Column`s: each has a group (what `--columns` selects), a key with its unit
(`comm_gb`, `lat_min`, `comm_savings`: the name in csv, json and the pandas frame, which hold numbers
only) and a two-level header (a top such as "Comm. (GB)" over a sub-column such as "CrypTen" or
"pub."). Display formats render the same columns:

    table     for a terminal: the default groups that fit its width ($COLUMNS, else 120), two header
              lines (tops span their sub-columns), footers wrapped; hidden groups are named
    markdown  one header line "Comm. (GB) [CrypTen]" (GitHub tables do not span)
    latex     booktabs, tops over \\cmidrule'd sub-columns, notation as math, a caption line
    csv/json  the tidy frame: one row per (record, variant), numbers as numbers, with `suite`,
              `record`, `backend` columns; `pd.read_csv` / `pd.read_json` give numeric dtypes
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tabulate as tabulate_module
from tabulate import tabulate

from pibench.counting.notation import BYTE_UNITS, TIME_UNITS, Unit, billions, unit_for
from pibench.results.latex import render_latex
from pibench.results.report import Report, Row, footer, title
from pibench.util.errors import PibenchError, did_you_mean

if TYPE_CHECKING:  # pandas is imported where a frame is made: the CLI's parser reads FORMATS and GROUPS alone
    import pandas as pd

FORMATS = ("table", "markdown", "csv", "latex", "json")
GROUPS = {  # what each group of columns holds, for --columns and the README
    "quality": "measured perplexity per byte, from quality records given beside (pibench train), and PPL [pub.]",
    "accuracy": "with trained weights: perplexity per byte from plaintext and MPC logits on real text, top-1 "
    "agreement, logit error",
    "cost": "PPL [pub.], #nonlinear operations, FLOPs of FFN and attention (analytic)",
    "comm": "communication, GB sent by both parties (measured)",
    "latency": "forward-pass minutes (measured, median of repeats)",
    "savings": "communication and latency savings against the baseline (measured)",
    "published": "the papers' savings (SecretFlow SPU over their WAN)",
    "published_abs": "the papers' GB and minutes",
    "projected": "latency savings projected onto each network profile",
    "projected_lat": "latency minutes projected onto each network profile",
    "others": "other backends' GB, minutes and savings (measured or predicted)",
    "predicted": "the calibrated model's GB and minutes",
    "spread": "the fastest and slowest of the repeated timed passes: latency minutes and latency savings",
    "rounds": "rounds (blocking exchanges of the busier party)",
    "error": "the MPC output's largest absolute error against plaintext",
    "memory": "the larger party's peak resident memory, GB",
}
# Tried in this order for a terminal until the width is used; `all` for every group.
DEFAULT_GROUPS = (
    *("quality", "accuracy", "comm", "latency", "savings", "others", "published", "projected", "spread", "predicted"),
    *("published_abs", "projected_lat", "cost"),
)
PASTE_GROUPS = (
    "accuracy",
    "cost",
    "comm",
    "latency",
    "spread",
    "savings",
    "published_abs",
    "published",
    "projected",
    "others",
    "predicted",
)
LATEX_GROUPS = ("comm", "latency", "savings", "published")  # 7 columns: one column of a paper
TOPS = (  # display order (a top's name before its unit): a top's sub-columns stand together
    "Network Arch.",
    "PPL",
    "Top-1 agr.",
    "Logit err.",
    "#Nonlinear Ops",
    "FLOPs FFN",
    "FLOPs Attn.",
    "Comm.",
    "Lat.",
    "Savings Comm.",
    "Savings Lat.",
    "Rounds",
    "MPC error",
    "Peak RSS",
)
DEFAULT_WIDTH = 120
tabulate_module.MIN_PADDING = 0  # header cells as wide as their text (tabulate pads them by 2)


@dataclass(frozen=True)
class Column:
    group: str
    key: str  # the tidy frame's column name, with its unit
    top: str
    sub: str  # "" for a single-level column
    get: Callable[[Row], Any]
    show: Callable[[Any], str]

    @property
    def flat(self) -> str:
        return f"{self.top} [{self.sub}]" if self.sub else self.top


def _num(fmt: str) -> Callable[[Any], str]:
    """`fmt` for a figure; one of a million or more in powers of ten (an MPC perplexity of 1.4e+243 is
    a broken model, not 244 digits)."""
    return lambda x: "-" if x is None else format(x, ".2g" if abs(x) >= 1e6 else fmt)


def _times(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}×"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _figures(rep: Report) -> tuple[list[float | None], list[float | None]]:
    """Every figure of the report's communication (GB) and latency (minutes) columns."""
    comm: list[float | None] = []
    lat: list[float | None] = []
    for r in rep.rows:
        comm += [r.comm_gb, r.pred_comm_gb, r.pub_comm_gb, *(o.comm_gb[r.variant] for o in rep.others)]
        lat += [r.lat_min, r.lat_min_fastest, r.lat_min_slowest, r.pred_lat_min, r.pub_lat_min]
        lat += [*r.projected_lat_min.values(), *(o.lat_min[r.variant] for o in rep.others)]
    return comm, lat


def _by_variant(values: dict[str, float | None]) -> Callable[[Row], float | None]:
    """A column of another backend's figures, per row's variant."""
    return lambda r: values.get(r.variant)


def _projected(field: str, profile: str) -> Callable[[Row], float | None]:
    """A column of a row's projected figures (`field`) under one network profile."""
    return lambda r: getattr(r, field).get(profile)


def display_units(rep: Report) -> tuple[Unit, Unit]:
    """The units the report's communication and latency columns are shown in (one each, so that the
    columns under one header agree): the largest in which its largest figure is at least 1."""
    comm, lat = _figures(rep)
    return (
        unit_for((None if x is None else x * 1e9 for x in comm), BYTE_UNITS),
        unit_for((None if x is None else x * 60 for x in lat), TIME_UNITS),
    )


def columns(rep: Report) -> list[Column]:
    """Every column the report can show, in display order; communication and latency in the units of
    `display_units` (the tidy frame keeps GB and minutes)."""
    tag = rep.label
    comm_unit, lat_unit = display_units(rep)
    comm_top, lat_top = f"Comm. ({comm_unit.name})", f"Lat. ({lat_unit.name})"

    def gb(x: float | None) -> str:
        return comm_unit.show(None if x is None else x * 1e9)

    def minutes(x: float | None) -> str:
        return lat_unit.show(None if x is None else x * 60)

    cols = [
        Column("arch", "label", "Network Arch.", "", lambda r: r.arch, str),
        Column("quality", "ppl_measured", "PPL", "meas.", lambda r: r.ppl_measured, _num(".2f")),
        # beside a measured perplexity, the published one belongs to the quality group
        Column("quality" if rep.quality_by else "cost", "ppl_pub", "PPL", "pub.", lambda r: r.ppl, _num(".2f")),
        Column("accuracy", "ppl_plaintext", "PPL", "plaintext", lambda r: r.ppl_plain, _num(".3f")),
        Column("accuracy", "ppl_mpc", "PPL", tag, lambda r: r.ppl_mpc, _num(".3f")),
        Column("accuracy", "top1_agreement", "Top-1 agr.", tag, lambda r: r.agreement, _num(".1%")),
        Column("accuracy", "logit_err_mean", "Logit err.", f"{tag} mean", lambda r: r.logit_err_mean, _num(".2g")),
        Column("accuracy", "logit_err_max", "Logit err.", f"{tag} max", lambda r: r.logit_err_max, _num(".2g")),
        Column("cost", "nonlinear", "#Nonlinear Ops", "", lambda r: r.nonlinear, str),
        Column("cost", "flops_ffn", "FLOPs FFN", "", lambda r: r.flops_ffn, billions),
        Column("cost", "flops_attn", "FLOPs Attn.", "", lambda r: r.flops_attn, billions),
        Column("comm", "comm_gb", comm_top, tag, lambda r: r.comm_gb, gb),
        Column("latency", "lat_min", lat_top, tag, lambda r: r.lat_min, minutes),
        Column("spread", "lat_min_fastest", lat_top, "fastest", lambda r: r.lat_min_fastest, minutes),
        Column("spread", "lat_min_slowest", lat_top, "slowest", lambda r: r.lat_min_slowest, minutes),
        Column("savings", "comm_savings", "Savings Comm.", tag, lambda r: r.save_comm, _times),
        Column("savings", "lat_savings", "Savings Lat.", tag, lambda r: r.save_lat, _times),
        Column("spread", "lat_savings_low", "Savings Lat.", "low", lambda r: r.save_lat_low, _times),
        Column("spread", "lat_savings_high", "Savings Lat.", "high", lambda r: r.save_lat_high, _times),
    ]
    for o in rep.others:
        k = _slug(o.label)
        cols += [
            Column("others", f"{k}_comm_gb", comm_top, o.label, _by_variant(o.comm_gb), gb),
            Column("others", f"{k}_lat_min", lat_top, o.label, _by_variant(o.lat_min), minutes),
            Column("others", f"{k}_comm_savings", "Savings Comm.", o.label, _by_variant(o.save_comm), _times),
            Column("others", f"{k}_lat_savings", "Savings Lat.", o.label, _by_variant(o.save_lat), _times),
            Column("accuracy", f"{k}_ppl_mpc", "PPL", o.label, _by_variant(o.ppl_mpc), _num(".3f")),
            Column("accuracy", f"{k}_top1_agreement", "Top-1 agr.", o.label, _by_variant(o.agreement), _num(".1%")),
        ]
    if rep.predicted_by:
        cols += [
            Column("predicted", "pred_comm_gb", comm_top, f"{tag}, pred.", lambda r: r.pred_comm_gb, gb),
            Column("predicted", "pred_lat_min", lat_top, f"{tag}, pred.", lambda r: r.pred_lat_min, minutes),
        ]
    cols += [
        Column("published_abs", "pub_comm_gb", comm_top, "SPU, pub.", lambda r: r.pub_comm_gb, gb),
        Column("published_abs", "pub_lat_min", lat_top, "SPU, pub.", lambda r: r.pub_lat_min, minutes),
        Column("published", "pub_comm_savings", "Savings Comm.", "pub.", lambda r: r.pub_save_comm, _times),
        Column("published", "pub_lat_savings", "Savings Lat.", "pub.", lambda r: r.pub_save_lat, _times),
    ]
    for p in rep.projections:
        k = _slug(p)
        cols += [
            Column(
                "projected_lat",
                f"proj_lat_min_{k}",
                lat_top,
                f"{p} proj.",
                _projected("projected_lat_min", p),
                minutes,
            ),
            Column(
                "projected",
                f"proj_lat_savings_{k}",
                "Savings Lat.",
                f"{p} proj.",
                _projected("projected_save_lat", p),
                _times,
            ),
        ]
    cols += [
        Column("rounds", "rounds", "Rounds", tag, lambda r: r.rounds, lambda x: f"{x:,}"),
        Column("error", "max_abs_error", "MPC error", "max abs", lambda r: r.max_abs_error, _num(".1e")),
        Column("memory", "peak_rss_gb", "Peak RSS (GB)", "per party", lambda r: r.peak_rss_gb, _num(".2f")),
    ]
    order = {t: i for i, t in enumerate(TOPS)}
    return sorted(cols, key=lambda c: order[c.top.split(" (")[0]])  # stable: within a top, the order above


def parse_columns(text: str | None) -> tuple[str, ...] | None:
    """`--columns cost,comm,...` or `all`; None for each format's default."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return tuple(GROUPS)
    for n in names:
        if n not in GROUPS:
            raise PibenchError(
                f"--columns: unknown column group '{n[:40]}'{did_you_mean(n, list(GROUPS))}; "
                f"groups: {', '.join(GROUPS)}, or all"
            )
    if not names:
        raise PibenchError("--columns: name at least one column group")
    return tuple(names)


def _pick(cols: list[Column], groups: Sequence[str]) -> list[Column]:
    return [c for c in cols if c.group == "arch" or c.group in groups]


# --- the tidy frame -----------------------------------------------------------------------------


def frame(reports: Sequence[Report], groups: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (record, variant), numeric columns named with their units; `groups` None: all."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for rep in reports:
        cols = _pick(columns(rep), groups or tuple(GROUPS))
        for r in rep.rows:
            meta = {
                "suite": rep.suite,
                "record": r.record or rep.record,
                "backend": rep.label,
                "variant": r.variant,
                "usable": r.usable,
            }
            rows.append(meta | {c.key: c.get(r) for c in cols} | {"measured_by": rep.measured_by})
    out = pd.DataFrame(rows)
    for key in out.columns:  # None -> NaN in numeric columns, so they stay numeric
        if key not in ("suite", "record", "backend", "variant", "label", "nonlinear", "measured_by", "usable"):
            out[key] = pd.to_numeric(out[key])
    return out


# --- display ------------------------------------------------------------------------------------


def terminal_width() -> int:
    """$COLUMNS where it is a sensible number, else 120 (also when output goes to a file)."""
    value = os.environ.get("COLUMNS", "")
    return int(value) if value.isdigit() and 40 <= int(value) <= 1000 else DEFAULT_WIDTH


def _runs(cols: list[Column]) -> list[tuple[int, int]]:
    """(first, last) indices of consecutive two-level columns under one top; single columns alone."""
    runs, i = [], 0
    while i < len(cols):
        j = i
        while j + 1 < len(cols) and cols[i].sub and cols[j + 1].top == cols[i].top:
            j += 1
        runs.append((i, j))
        i = j + 1
    return runs


def _two_level(cols: list[Column], rows: list[list[str]]) -> str:
    """A tabulate "simple" table with two header lines: sub-columns below, and above them their top,
    spanning the sub-columns it heads."""
    heads = []
    for i, j in _runs(cols):
        if i == j:
            c = cols[i]
            heads.append(f"{c.top}\n{c.sub}" if c.sub else f"\n{c.top}")
            continue
        subs = [c.sub for c in cols[i : j + 1]]
        have = sum(max(len(subs[k]), *(len(r[i + k]) for r in rows)) for k in range(len(subs))) + 2 * (j - i)
        subs[-1] += " " * max(0, len(cols[i].top) - have)  # room for the top over the span
        heads += [f"\n{s}" for s in subs]
    lines = tabulate(rows, headers=heads, tablefmt="simple", disable_numparse=True).splitlines()
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[2])]
    top = list(lines[0].ljust(len(lines[2])))
    for i, j in _runs(cols):
        if i != j:
            start, end = spans[i][0], spans[j][1]
            top[start:end] = f" {cols[i].top} ".center(end - start, "─")
    return "\n".join(["".join(top).rstrip(), *(ln.rstrip() for ln in lines[1:])])


def _fit(rep: Report, cols: list[Column], width: int, required: Sequence[str] = ()) -> tuple[list[Column], list[str]]:
    """The `required` groups (asked for by name, as --predict asks for predicted), then the default
    groups, in order, that keep the table within `width`; and those left out."""
    shown, hidden = ["arch", *(g for g in required if any(c.group == g for c in cols))], []
    for g in DEFAULT_GROUPS:
        if g in shown or all(c.get(r) is None for c in cols if c.group == g for r in rep.rows):
            continue  # shown already, or nothing to show (e.g. no published row matches)
        if _width(rep, [c for c in cols if c.group in (*shown, g)]) <= width:
            shown.append(g)
        else:
            hidden.append(g)
    return [c for c in cols if c.group in shown], hidden


def _width(rep: Report, cols: list[Column]) -> int:
    return max(len(line) for line in _two_level(cols, _cells(rep, cols)).splitlines())


def _cells(rep: Report, cols: list[Column]) -> list[list[str]]:
    return [[c.show(c.get(r)) for c in cols] for r in rep.rows]


def fit_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int,
    wrap: Sequence[str] = (),
    spare: Sequence[str] = (),
    fmt: str = "simple",
) -> tuple[str, list[str]]:
    """A tabulate table of `rows` within `width` columns where it can be: as it is if it fits, else the
    columns named in `wrap` broken at their spaces (the papers' notation one kind a line; long notes
    folded), then the `spare` columns left out, least needed first. Returns the table and the headers
    left out (for a footer that names them)."""
    heads: list[str] = list(headers)
    cells: list[list[str]] = [list(r) for r in rows]

    def render(hs: list[str], rs: list[list[str]]) -> str:
        return tabulate(rs, headers=hs, tablefmt=fmt, disable_numparse=True)

    def wide(text: str) -> int:
        return max((len(line) for line in text.splitlines()), default=0)

    table, left_out = render(heads, cells), []
    for name in wrap:
        if wide(table) <= width or name not in heads:
            continue
        i = heads.index(name)
        others = wide(render(heads[:i] + heads[i + 1 :], [r[:i] + r[i + 1 :] for r in cells]))
        room = max(12, width - others - 2)
        cells = [
            [*r[:i], "\n".join(textwrap.wrap(r[i], room, break_on_hyphens=False)) or r[i], *r[i + 1 :]] for r in cells
        ]
        table = render(heads, cells)
    for name in spare:
        if wide(table) <= width or name not in heads:
            continue
        i = heads.index(name)
        heads, cells = heads[:i] + heads[i + 1 :], [r[:i] + r[i + 1 :] for r in cells]
        left_out.append(name)
        table = render(heads, cells)
    return table, left_out


def wrap_lines(lines: list[str], width: int) -> str:
    return "\n".join(textwrap.fill(ln, width, subsequent_indent="  ", break_on_hyphens=False) for ln in lines)


def render_table(rep: Report, groups: Sequence[str] | None, width: int, required: Sequence[str] = ()) -> str:
    """`groups` None: `required` and the default groups that fit `width`."""
    cols = columns(rep)
    if groups is None:
        cols, hidden = _fit(rep, cols, width, required)
    else:
        cols, hidden = _pick(cols, groups), []
    notes = footer(rep, {c.group for c in cols})
    if hidden:
        notes.append(
            f"Not shown, to fit {width} columns: {', '.join(hidden)} (--columns GROUP,... or all; COLUMNS=N to widen)."
        )
    wide = _width(rep, cols)
    if wide > width:
        notes.append(f"This table is {wide} characters wide, more than the {width} it was asked to fit.")
    return f"{title(rep)}\n{_two_level(cols, _cells(rep, cols))}\n{wrap_lines(notes, width)}"


def _with_figures(rep: Report, cols: list[Column]) -> list[Column]:
    """`cols` without those that have no figure in any row (all "-": no published row matches, nothing
    repeated for a spread...): a pasted table shows what was measured, not a grid of dashes."""
    return [c for c in cols if c.group == "arch" or any(c.get(r) is not None for r in rep.rows)]


def render_markdown(rep: Report, groups: Sequence[str] | None, default: Sequence[str] = PASTE_GROUPS) -> str:
    """`groups` None: the `default` groups' columns that have a figure in some row."""
    cols = _pick(columns(rep), groups or default)
    cols = cols if groups else _with_figures(rep, cols)
    table = tabulate(_cells(rep, cols), headers=[c.flat for c in cols], tablefmt="github", disable_numparse=True)
    return f"**{title(rep)}**\n\n{table}\n\n" + "\n\n".join(footer(rep, {c.group for c in cols}))


def render(
    reports: Sequence[Report],
    fmt: str,
    groups: Sequence[str] | None = None,
    width: int | None = None,
    required: Sequence[str] = (),
) -> str:
    """`reports` in `fmt`; `groups` None: the format's default columns, with `required` (groups an
    option asked for by name) always among them; `width`: the terminal's."""
    if fmt not in FORMATS:
        raise PibenchError(f"unknown format '{fmt}'; one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return frame(reports, groups).to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return json.dumps(
            json.loads(frame(reports, groups).to_json(orient="records", double_precision=15)),
            indent=1,
            ensure_ascii=False,
        )
    if fmt == "latex":
        picked = [
            (
                rep,
                _pick(columns(rep), groups)
                if groups
                else _with_figures(rep, _pick(columns(rep), (*LATEX_GROUPS, *required))),
            )
            for rep in reports
        ]
        return "\n\n".join(render_latex(rep, cols, _runs(cols)) for rep, cols in picked)
    if fmt == "markdown":
        return "\n\n".join(render_markdown(rep, groups, (*PASTE_GROUPS, *required)) for rep in reports)
    return "\n\n".join(render_table(rep, groups, width or terminal_width(), required) for rep in reports)


# --- two records side by side -------------------------------------------------------------------


@dataclass(frozen=True)
class Compared:
    """A metric `pibench compare` sets side by side: its tidy column, and for communication and
    latency the family of units it is displayed in (the frame keeps GB and minutes)."""

    name: str
    key: str
    units: tuple[Unit, ...] = ()

    @property
    def label(self) -> str:  # in csv and json: the fixed unit
        return f"{self.name} ({self.units[0].name})" if self.units else self.name


COMPARED = (
    Compared("Comm.", "comm_gb", BYTE_UNITS),
    Compared("Lat.", "lat_min", TIME_UNITS),
    Compared("Lat. fastest", "lat_min_fastest", TIME_UNITS),
    Compared("Lat. slowest", "lat_min_slowest", TIME_UNITS),
    Compared("Savings Comm.", "comm_savings"),
    Compared("Savings Lat.", "lat_savings"),
    Compared("Rounds", "rounds"),
    Compared("MPC error", "max_abs_error"),
    Compared("Peak RSS (GB)", "peak_rss_gb"),
)


def compare_frame(a: Report, b: Report) -> pd.DataFrame:
    """One row per (variant, metric) of the variants both reports have: A, B and B's change in %."""
    import pandas as pd

    fa, fb = (frame([r]).set_index("variant") for r in (a, b))
    rows = []
    for name in [n for n in fa.index if n in fb.index]:
        for metric in COMPARED:
            x, y = fa.at[name, metric.key], fb.at[name, metric.key]
            change = (y / x - 1) * 100 if pd.notna(x) and pd.notna(y) and x else float("nan")
            rows.append(
                {
                    "variant": name,
                    "label": fa.at[name, "label"],
                    "metric": metric.label,
                    "a": x,
                    "b": y,
                    "change_pct": change,
                }
            )
    return pd.DataFrame(rows, columns=["variant", "label", "metric", "a", "b", "change_pct"])


def render_compare(df: pd.DataFrame, fmt: str, about: list[str], width: int | None = None) -> str:
    """csv and json: the frame (GB and minutes); display formats show communication and latency in the
    unit their largest figure calls for (one per family, so that fastest, median and slowest agree)."""
    import pandas as pd

    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return json.dumps(json.loads(df.to_json(orient="records", double_precision=15)), indent=1, ensure_ascii=False)
    metrics = {m.label: m for m in COMPARED}
    per = {BYTE_UNITS: 1e9, TIME_UNITS: 60.0}

    def figures(family: tuple[Unit, ...]) -> list[float]:
        rows = df[df["metric"].isin([m.label for m in COMPARED if m.units == family])]
        return [x * per[family] for x in (*rows["a"], *rows["b"]) if pd.notna(x)]

    units = {family: unit_for(figures(family), family) for family in per}
    shown = []
    for _, group in df.groupby("variant", sort=False):
        for i, r in enumerate(group.itertuples()):
            m = metrics[r.metric]
            if m.units:
                unit = units[m.units]
                name = f"{m.name} ({unit.name})"
                cells = [unit.show(None if pd.isna(x) else x * per[m.units]) for x in (r.a, r.b)]
            else:
                name, cells = m.name, [_fmt_metric(m.name, x) for x in (r.a, r.b)]
            shown.append([r.label if i == 0 else "", name, *cells, _pct(r.change_pct)])
    style = "github" if fmt == "markdown" else "simple"
    table = tabulate(
        shown, headers=["Network Arch.", "metric", "A", "B", "B vs A"], tablefmt=style, disable_numparse=True
    )
    return table + "\n" + wrap_lines(about, width or terminal_width())


def _fmt_metric(metric: str, x: float) -> str:
    import pandas as pd

    if pd.isna(x):
        return "-"
    if metric == "Rounds":
        return f"{int(x):,}"
    if metric.startswith("Savings"):
        return f"{x:.2f}×"
    return f"{x:.1e}" if metric == "MPC error" else f"{x:.3f}"


def _pct(x: float) -> str:
    import pandas as pd

    return "-" if pd.isna(x) else f"{x:+.1f}%"
