"""Savings tables in the papers' layout (Network Arch., PPL, #Nonlinear Ops, FLOPs, Comm., Lat.,
Savings), measured beside published, in five formats; and the two plots.

Measured columns come from a run record, are tagged with its backend ("[CrypTen]"), and name their
settings, network and what the MPC error covers in a footer; a variant whose MPC output is unusable
is flagged. Where a record's variant config equals a published row's (`pibench/data/published_costs.csv`),
that row's figures (SecretFlow SPU, as the papers measured them) stand beside as their own columns,
with their own savings against the published baseline. PPL is the published one (pibench does not train).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from pibench.backends import BACKENDS
from pibench.config import ModelConfig
from pibench.errors import PibenchError, did_you_mean
from pibench.network import DEFAULT_PROJECTIONS, NetworkProfile, parse_profile, project_variant
from pibench.notation import billions, nonlinear_notation_json
from pibench.opkinds import KINDS
from pibench.protocols import BackendColumns, other_backends
from pibench.reference import PublishedRow, published_rows
from pibench.variants import BASELINE

FORMATS = ("table", "markdown", "csv", "latex", "json")
PUBLISHED_SETUP = (
    "SecretFlow SPU, BumbleBee 2PC, two AMD EPYC 7502 machines, WAN emulated at 100 Mbit/s and 80 ms "
    "(Jha & Reagen); whether GB counts one party or both is not stated"
)


@dataclass
class Row:
    """One variant's line; None where there is no figure."""

    variant: str
    arch: str
    ppl: float | None
    nonlinear: str
    flops_ffn: int
    flops_attn: int
    comm_gb: float
    lat_min: float
    save_comm: float | None
    save_lat: float | None
    pub_comm_gb: float | None
    pub_lat_min: float | None
    pub_save_comm: float | None
    pub_save_lat: float | None
    pub_source: str | None
    projected_lat_min: dict[str, float | None]  # profile -> projected minutes (loopback records only)
    usable: bool = True  # the MPC output was within the usable error (`pibench.measure`)
    pred_comm_gb: float | None = None  # the calibrated model's prediction (`--predict`)
    pred_lat_min: float | None = None


@dataclass
class Report:
    """The rows of one record, and what produced them."""

    record: str
    suite: str
    dims: dict[str, int]
    label: str  # the backend's column tag
    measured_by: str
    published_by: str | None
    baseline: str | None
    rows: list[Row]
    projections: list[str]  # profile names of the projected latency columns
    projected_by: str | None  # how, or why not
    predicted_by: str | None = None  # set when the predicted columns are shown
    error_by: str = ""  # what the MPC error covers, and which outputs are unusable
    others: list[BackendColumns] = field(default_factory=list)  # other backends' columns (`pibench.protocols`)


def _published_index() -> dict[ModelConfig, PublishedRow]:
    return {row.config(): row for row in reversed(published_rows())}  # first row wins


def measured_by(record: dict[str, Any]) -> str:
    """Which backend, settings and network produced a record's measured columns."""
    b, run = record["backend"], record["run"]
    impl = BACKENDS.get(b["name"]) if b["name"] in BACKENDS else None
    exactly = "exactly" if impl is None or not impl.count_tolerance else "(counts vary a little between identical runs)"
    how = "every layer measured" if run["full"] else f"layers sampled, bytes and rounds extrapolated {exactly}"
    backend = impl.describe(b["settings"], b["version"]) if impl else b["protocol"]
    chosen = [c for v in record["variants"] for p in v["measured"]["parties"] for c in p.get("choices", {}).values()]
    if chosen:
        tally = ", ".join(f"{k} {chosen.count(k)}" for k in sorted(set(chosen)))
        backend += f" (chosen per product shape: {tally})"
    return (
        f"{backend}, network {run['network']}, {how}; Comm. = bytes sent by both parties (1 GB = 1e9 B); "
        f"Lat. = forward-pass wall time on {record['environment']['cpu_count']} cores"
    )


def _error_by(record: dict[str, Any]) -> str:
    bad = [v["label"] for v in record["variants"] if not v["measured"]["usable"]]
    scope = (
        "the whole stack"
        if record["run"]["full"]
        else "what ran: the input stage and one layer per layer kind applied in turn, not the whole stack"
    )
    flagged = f"; UNUSABLE output (error over 10% of the output's scale): {', '.join(bad)}" if bad else ""
    return f"MPC error against the plaintext interpreter covers {scope}{flagged}"


def _pick_baseline(variants: list[dict[str, Any]], baseline: str | None) -> dict[str, Any] | None:
    """The baseline variant by name or registry name; an explicit one that is absent is an error."""
    name = baseline or BASELINE
    base = next((v for v in variants if name in (v["name"], v["variant"])), None)
    if base is None and baseline is not None:
        names = [v["name"] for v in variants]
        raise PibenchError(
            f"--baseline '{baseline}' is not a variant of the record{did_you_mean(baseline, names)}; "
            f"its variants: {', '.join(names)}"
        )
    return base


def _row(
    rtt: bool,
    v: dict[str, Any],
    base: dict[str, Any] | None,
    pub: PublishedRow | None,
    pub_base: PublishedRow | None,
    profiles: list[NetworkProfile],
    from_loopback: bool,
) -> Row:
    m, a = v["measured"], v["analytic"]
    return Row(
        variant=v["name"],
        arch=v["label"] + ("" if m["usable"] else " (unusable output)"),
        ppl=pub.ppl if pub else None,
        nonlinear=nonlinear_notation_json(a["nonlinear"]),
        flops_ffn=a["flops"]["ffn"],
        flops_attn=a["flops"]["attn"],
        comm_gb=m["bytes"] / 1e9,
        lat_min=m["wall_s"] / 60,
        save_comm=base["measured"]["bytes"] / m["bytes"] if base else None,
        save_lat=base["measured"]["wall_s"] / m["wall_s"] if base else None,
        pub_comm_gb=pub.comm_gb if pub else None,
        pub_lat_min=pub.lat_min if pub else None,
        pub_save_comm=pub_base.comm_gb / pub.comm_gb if pub and pub_base and pub.comm_gb else None,
        pub_save_lat=pub_base.lat_min / pub.lat_min if pub and pub_base and pub.lat_min else None,
        pub_source=pub.source if pub else None,
        projected_lat_min={
            p.name: project_variant(m, p, rtt) / 60 if from_loopback else None for p in profiles if p.bandwidth_bps
        },
        usable=m["usable"],
    )


def build_report(
    record: dict[str, Any],
    name: str = "",
    baseline: str | None = None,
    networks: Sequence[str] | None = None,
    predict: bool = False,
    others: Sequence[dict[str, Any]] = (),
    backends: Sequence[str] = (),
) -> Report:
    """`networks`: profiles to project latency onto (default: the record's suite's, else lan and paper-wan);
    `baseline`: the variant savings are against (default sm_ln_g where the record has it); `backends`:
    other backends whose columns stand beside (measured from `others`, records of the same suite,
    else predicted)."""
    variants = record["variants"]
    profiles = [parse_profile(n) for n in networks or record["run"].get("project") or DEFAULT_PROJECTIONS]
    from_loopback = record["run"]["network"] == "loopback"
    base = _pick_baseline(variants, baseline)
    index = _published_index()
    published = {v["name"]: index.get(ModelConfig(**v["config"])) for v in variants}
    pub_base = published.get(base["name"]) if base else None
    backend = record["backend"]["name"]
    rtt = BACKENDS.get(backend).rounds_are_round_trips if backend in BACKENDS else True
    rows = [_row(rtt, v, base, published[v["name"]], pub_base, profiles, from_loopback) for v in variants]
    if predict:
        for row, v in zip(rows, variants, strict=True):
            pred = v.get("predicted")
            row.pred_comm_gb = pred["gb"] if pred else None
            row.pred_lat_min = pred["minutes"]["loopback"] if pred else None
    sources = sorted({r.pub_source for r in rows if r.pub_source})
    linked = [p for p in profiles if p.bandwidth_bps]
    return Report(
        record=name,
        suite=record["suite"]["name"],
        dims=record["suite"]["dims"],
        label=record["backend"]["label"],
        measured_by=measured_by(record),
        published_by=f"{', '.join(sources)}: {PUBLISHED_SETUP}" if sources else None,
        baseline=base["label"] if base else None,
        rows=rows,
        projections=[p.name for p in linked],
        projected_by=(
            "projected from this loopback run onto "
            + "; ".join(p.describe() for p in linked)
            + " by pibench's latency model (compute + max(exchange CPU time, wire time)"
            + (" + rounds x RTT" if rtt else "; no RTT term: this backend's rounds are messages, not round trips")
            + "; see pibench/network.py), not measured"
            if from_loopback
            else "no projection: projections start from a loopback run, and this run was not one"
        ),
        predicted_by=(
            "the calibrated cost model's prediction stored in the record (pibench/calibration; shipped "
            "calibration, same settings), not measured; '-' where the record has none"
            if predict
            else None
        ),
        error_by=_error_by(record),
        others=other_backends(record, others, backends, base["name"] if base else None, measured_by),
    )


# --- formats ------------------------------------------------------------------------------------

BASE_HEADERS = (
    "Network Arch.",
    "PPL [pub.]",
    "#Nonlinear Ops",
    "FLOPs FFN",
    "FLOPs Attn.",
    "Comm. (GB) [{label}]",
    "Lat. (min.) [{label}]",
    "Savings Comm. [{label}]",
    "Savings Lat. [{label}]",
    "Comm. (GB) [SPU, pub.]",
    "Lat. (min.) [SPU, pub.]",
    "Savings Comm. [pub.]",
    "Savings Lat. [pub.]",
)


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _times(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}×"


def headers(rep: Report) -> list[str]:
    tag = rep.label
    predicted = [f"Comm. (GB) [{tag}, predicted]", f"Lat. (min.) [{tag}, predicted]"] if rep.predicted_by else []
    base = [h.format(label=tag) for h in BASE_HEADERS]
    others = [h.format(label=o.label) for o in rep.others for h in BASE_HEADERS[5:9]]
    return [*base[:9], *others, *base[9:], *(f"Lat. (min.) [{tag}, {p}, proj.]" for p in rep.projections), *predicted]


def _other_cells(r: Row, others: Sequence[BackendColumns]) -> list[str]:
    cells = []
    for o in others:
        n = r.variant
        cells += [_num(o.comm_gb[n], ".3f"), _num(o.lat_min[n], ".3f"), _times(o.save_comm[n]), _times(o.save_lat[n])]
    return cells


def _cells(r: Row, predict: bool = False, others: Sequence[BackendColumns] = ()) -> list[str]:
    projected = [_num(v, ".2f") for v in r.projected_lat_min.values()]
    predicted = [_num(r.pred_comm_gb, ".3f"), _num(r.pred_lat_min, ".3f")] if predict else []
    return [
        r.arch,
        _num(r.ppl, ".2f"),
        r.nonlinear,
        billions(r.flops_ffn),
        billions(r.flops_attn),
        f"{r.comm_gb:.3f}",
        f"{r.lat_min:.3f}",
        _times(r.save_comm),
        _times(r.save_lat),
        *_other_cells(r, others),
        _num(r.pub_comm_gb, ".2f"),
        _num(r.pub_lat_min, ".2f"),
        _times(r.pub_save_comm),
        _times(r.pub_save_lat),
        *projected,
        *predicted,
    ]


def _title(rep: Report) -> str:
    dims = ", ".join(f"{k}={v}" for k, v in rep.dims.items())
    return f"{rep.suite} ({dims})" + (f" — {rep.record}" if rep.record else "")


def _footer(rep: Report) -> list[str]:
    lines = [f"[{rep.label}]: measured by pibench: {rep.measured_by}.", f"{rep.error_by}."]
    for o in rep.others:
        lines.append(f"[{o.label}]: " + ("" if "predicted" in o.label else "measured by pibench: ") + f"{o.about}.")
    lines.append(
        f"[SPU, pub.], [pub.]: published: {rep.published_by}."
        if rep.published_by
        else "[pub.]: no published row matches."
    )
    lines.append(f"Savings against {rep.baseline}." if rep.baseline else "Savings: no baseline variant in this record.")
    if rep.projections:
        lines.append(f"[{rep.label}, PROFILE, proj.]: {rep.projected_by}.")
    if rep.predicted_by:
        lines.append(f"[{rep.label}, predicted]: {rep.predicted_by}.")
    return lines


LATEX_SPECIALS = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(c, c) for c in text).replace("×", r"$\times$").replace("—", "--")


def _latex_cell(text: str, column: int) -> str:
    if column == 2 and text != "-":  # nonlinear ops: SM:144×ℝ^{128×128} -> SM:$144\times\mathbb{R}^{128\times128}$
        terms = []
        for term in text.split():
            kind, _, rest = term.partition(":")
            count, _, shape = rest.partition("×ℝ^")
            dims = shape.strip("{}").replace("×", r"\times ")
            terms.append(f"{kind}:${count}\\times\\mathbb{{R}}^{{{dims}}}$")
        return " ".join(terms)
    return latex_escape(text)


def to_latex(rep: Report) -> str:
    """A `tabular` (needs \\usepackage{amssymb} for \\mathbb); the footer is its last, spanning row."""
    n = len(headers(rep))
    out = [f"% {latex_escape(_title(rep))}", r"\begin{tabular}{l" + "r" * (n - 1) + "}", r"\hline"]
    out.append(" & ".join(latex_escape(h) for h in headers(rep)) + r" \\")
    out.append(r"\hline")
    for r in rep.rows:
        cells = _cells(r, bool(rep.predicted_by), rep.others)
        out.append(" & ".join(_latex_cell(c, i) for i, c in enumerate(cells)) + r" \\")
    out.append(r"\hline")
    for line in _footer(rep):
        out.append(rf"\multicolumn{{{n}}}{{p{{\linewidth}}}}{{\footnotesize {latex_escape(line)}}} \\")
    out.append(r"\end{tabular}")
    return "\n".join(out)


def render(reports: list[Report], fmt: str) -> str:
    if fmt not in FORMATS:
        raise PibenchError(f"unknown format '{fmt}'; one of {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps([asdict(r) for r in reports], indent=2, ensure_ascii=False)
    parts = []
    for rep in reports:
        rows = [_cells(r, bool(rep.predicted_by), rep.others) for r in rep.rows]
        if fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(["record", "suite", *headers(rep), "measured_by", "published_by", "projected_by"])
            for cells in rows:
                meta = [rep.measured_by, rep.published_by or "", rep.projected_by or ""]
                writer.writerow([rep.record, rep.suite, *cells, *meta])
            parts.append(buf.getvalue().rstrip("\n"))
        elif fmt == "latex":
            parts.append(to_latex(rep))
        else:
            style = "github" if fmt == "markdown" else "simple"
            table = tabulate(rows, headers=headers(rep), tablefmt=style, disable_numparse=True)
            title = f"**{_title(rep)}**" if fmt == "markdown" else _title(rep)
            sep = "\n\n" if fmt == "markdown" else "\n"
            parts.append(title + sep + table + sep + sep.join(_footer(rep)))
    return "\n\n".join(parts)


# --- plots --------------------------------------------------------------------------------------


def plot(record: dict[str, Any], rep: Report, out_dir: str | Path, stem: str) -> list[Path]:
    """Two figures, PNG and SVG each: communication per variant stacked by operation kind, and
    savings against the baseline, measured beside published."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = [r.arch for r in rep.rows]
    written = []

    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels)), 4.5))
    bottom = [0.0] * len(labels)
    for kind in KINDS:
        values = [v["measured"]["by_kind"][kind]["bytes"] / 1e9 for v in record["variants"]]
        if any(values):
            ax.bar(labels, values, bottom=bottom, label=kind)
            bottom = [b + x for b, x in zip(bottom, values, strict=True)]
    ax.set_ylabel("communication (GB, both parties)")
    ax.set_title(f"{_title(rep)}: {rep.label} communication by operation", fontsize=9)
    ax.legend(fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=35, fontsize=7, ha="right")
    fig.tight_layout()
    written += _save(fig, out_dir / f"{stem}-comm_by_kind")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(labels)), 4.5), sharey=True)
    x = range(len(labels))
    for ax, (what, mine, pub) in zip(
        axes, (("Comm.", "save_comm", "pub_save_comm"), ("Lat.", "save_lat", "pub_save_lat")), strict=True
    ):
        ax.bar([i - 0.2 for i in x], [getattr(r, mine) or 0 for r in rep.rows], 0.4, label=f"measured ({rep.label})")
        ax.bar([i + 0.2 for i in x], [getattr(r, pub) or 0 for r in rep.rows], 0.4, label="published (SPU)")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xticks(list(x), labels, rotation=35, fontsize=7, ha="right")
        ax.set_title(f"{what} savings vs {rep.baseline or 'baseline'}", fontsize=9)
    axes[0].set_ylabel("savings (×)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    written += _save(fig, out_dir / f"{stem}-savings")
    plt.close(fig)
    return written


def _save(fig: Any, base: Path) -> list[Path]:
    paths = [base.with_suffix(".png"), base.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=150)
    return paths
