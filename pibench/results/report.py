"""Savings tables in the papers' layout (Network Arch., PPL, #Nonlinear Ops, FLOPs, Comm., Lat.,
Savings), measured beside published: the rows and what produced them (formats: `pibench.results.tables`,
plots: `pibench.results.plots`).

Measured columns come from a run record, are tagged with its backend ("[CrypTen]"), and name their
settings, network and what the MPC error covers in a footer; a variant whose MPC output is unusable
is flagged. Where a record's variant config equals a published row's (`pibench/data/published_costs.csv`),
that row's figures (SecretFlow SPU, as the papers measured them) stand beside as their own columns,
with their own savings against the published baseline. PPL [pub.] is the published one; PPL [meas.]
comes from `pibench train`'s quality records given beside. Records of one suite and backend under
different settings make one table (`merge_reports`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from pibench.backends import BACKENDS
from pibench.calibration.fit import Predicted, merge_notes
from pibench.counting.cost import VariantCost
from pibench.counting.network import DEFAULT_PROJECTIONS, NetworkProfile, parse_profile, project
from pibench.counting.notation import nonlinear_notation, nonlinear_notation_json
from pibench.measuring.measured import USABLE_RELATIVE_ERROR, AccuracyRecord, Measured
from pibench.models.config import ModelConfig
from pibench.models.variants import BASELINE
from pibench.results.backend_columns import BackendColumns, other_backends
from pibench.results.published import PublishedRow, cite, published_rows
from pibench.results.records import Record, VariantRecord
from pibench.suites.loader import Suite
from pibench.util.errors import PibenchError, did_you_mean

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
    projected_save_lat: dict[str, float | None] = field(default_factory=dict)  # against the baseline's, per profile
    usable: bool = True  # the MPC output was within the usable error (`pibench.measuring.party`)
    rounds: int = 0
    max_abs_error: float | None = None
    peak_rss_gb: float | None = None  # the larger party's peak resident memory, 1 GB = 1e9 B (None: predicted)
    ppl_measured: float | None = None  # validation perplexity per byte from a quality record (`pibench train`)
    pred_comm_gb: float | None = None  # the calibrated model's prediction (`--predict`)
    pred_lat_min: float | None = None
    # the fastest and slowest of the repeated passes, summed over the stack like the median (minutes)
    lat_min_fastest: float | None = None
    lat_min_slowest: float | None = None
    save_lat_low: float | None = None  # the baseline's fastest over this variant's slowest
    save_lat_high: float | None = None  # the baseline's slowest over this variant's fastest
    comm_by_kind: dict[str, int] = field(default_factory=dict)  # bytes per operation kind (both parties)
    # accuracy under MPC on real text (`measured.accuracy`, trained weights): perplexity per byte from the
    # plaintext and the MPC logits, top-1 agreement, mean and largest absolute logit error
    ppl_plain: float | None = None
    ppl_mpc: float | None = None
    agreement: float | None = None
    logit_err_mean: float | None = None
    logit_err_max: float | None = None
    record: str | None = None  # the record the row comes from, in a table of several (`merge_reports`)


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
    quality_by: str | None = None  # where measured perplexities come from
    accuracy_by: str | None = None  # what the accuracy columns measured, and which variants broke on real text
    others: list[BackendColumns] = field(default_factory=list)  # other backends' (`results.backend_columns`)
    repeats: int = 1  # timed passes per measured step (the spread columns mean something from 2)
    description: str = ""  # the suite's
    published_from: str = ""  # the papers and tables of the published columns (`pibench.results.published.cite`)
    measured_under: str = ""  # backend and settings, network: what a caption names
    # a table of several records of one suite and backend under different settings (`merge_reports`):
    # (row tag, record, what measured it) of each; the rows' labels carry their tag
    merged: list[tuple[str, str, str]] = field(default_factory=list)
    predicted: bool = False  # the rows are the calibrated model's predictions (`predicted_report`), not a run's
    prediction_notes: list[str] = field(default_factory=list)  # what they stand on beyond what was measured


@dataclass(frozen=True)
class MeasuredPpl:
    """Measured perplexity of trained architectures, for the PPL [meas.] column (made from quality
    records by `pibench.quality.training_record.measured_ppl`)."""

    of: Callable[[str, dict[str, Any]], float | None]  # (variant name, config) -> perplexity per byte, or None
    suites: list[str]  # the quality suites they were trained in


def _published_index() -> dict[ModelConfig, PublishedRow]:
    return {row.config(): row for row in reversed(published_rows())}  # first row wins


def measured_by(record: Record) -> str:
    """Which backend, settings and network produced a record's measured columns."""
    b, run = record.backend, record.run
    impl = BACKENDS.get(b.name) if b.name in BACKENDS else None
    exactly = "exactly" if impl is None or not impl.count_tolerance else "(counts vary a little between identical runs)"
    how = "every layer measured" if run.full else f"layers sampled, bytes and rounds extrapolated {exactly}"
    how += ", parties kept warm from a sweep's earlier cells" if run.warm_parties else ""
    backend = impl.describe(b.settings, b.version) if impl else b.protocol
    chosen = [c for v in record.variants for p in v.measured.parties for c in p.choices.values()]
    if chosen:
        tally = ", ".join(f"{k} {chosen.count(k)}" for k in sorted(set(chosen)))
        backend += f" (chosen per product shape: {tally})"
    repeats = record.repeats
    median = f", median of {repeats} passes per measured step" if repeats > 1 else ", one pass per measured step"
    source = record.suite.source if isinstance(record.suite.source, dict) else {}
    weights = (
        f"weights {_flat_weights(source['weights'])}"
        if source.get("weights")
        else f"synthetic weights (seed {record.run.seed})"
    )
    return (
        f"{backend}, network {run.network}, {how}, {weights}; Comm. = bytes sent by both parties (1 GB = 1e9 B); "
        f"Lat. = forward-pass wall time on {record.environment.cpu_count} cores{median}"
    )


def measured_under(record: Record) -> str:
    """The backend with its settings, the machine and the network: what a caption names."""
    b, env = record.backend, record.environment
    impl = BACKENDS.get(b.name) if b.name in BACKENDS else None
    backend = impl.describe(b.settings, b.version) if impl else b.protocol
    return f"{backend} on {env.cpu_count} cores of {env.cpu_model}, network {record.run.network}"


def _error_by(record: Record) -> str:
    bad = [v.label for v in record.variants if not v.measured.usable]
    scope = (
        "the whole stack"
        if record.run.full
        else "what ran: the input stage and one layer per layer kind applied in turn, not the whole stack"
    )
    flagged = f"; UNUSABLE output (error over 10% of the output's scale): {', '.join(bad)}" if bad else ""
    return f"MPC error against the plaintext interpreter covers {scope}{flagged}"


def _distinct_labels(rows: list[Row]) -> None:
    """Rows that share a label (records made before suites gave renamed entries their own) get their
    variant's name added, so no two rows of a table look alike."""
    labels = [r.arch for r in rows]
    for r in rows:
        if labels.count(r.arch) > 1:
            r.arch = f"{r.arch} ({r.variant})"


def _pick_baseline(record: Record, baseline: str | None) -> VariantRecord | None:
    """The baseline variant by name or registry name; an explicit one that is absent is an error."""
    base = record.variant(baseline or BASELINE)
    if base is None and baseline is not None:
        names = [v.name for v in record.variants]
        raise PibenchError(
            f"--baseline '{baseline}' is not a variant of the record{did_you_mean(baseline, names)}; "
            f"its variants: {', '.join(names)}"
        )
    return base


def rounds_are_round_trips(record: Record) -> bool:
    """Whether the record's backend counts round trips or messages (`Backend.rounds_are_round_trips`;
    a backend this pibench lacks: round trips)."""
    name = record.backend.name
    return BACKENDS.get(name).rounds_are_round_trips if name in BACKENDS else True


def rtt_per_round(record: Record) -> float:
    """The RTTs a projection charges per round of the record's backend (`Backend.rtt_per_round`; a
    backend this pibench lacks: 1)."""
    name = record.backend.name
    return BACKENDS.get(name).rtt_per_round if name in BACKENDS else 1.0


def projected_s(m: Measured, profile: NetworkProfile, rtt: float = 1.0) -> float:
    """`pibench.counting.network.project` for one variant of a loopback record, charging `rtt` RTTs per
    round trip (`rtt_per_round`: 1 for CrypTen, 0.55 per SPU message, measured)."""
    max_sent = max(p.sent for p in m.parties)
    return project(m.wall_s, m.comm_s, m.latency_rounds * rtt, max_sent, profile)


def _row(
    rtt: float,
    v: VariantRecord,
    base: VariantRecord | None,
    pub: PublishedRow | None,
    pub_base: PublishedRow | None,
    profiles: list[NetworkProfile],
    from_loopback: bool,
) -> Row:
    m, a = v.measured, v.analytic
    return Row(
        variant=v.name,
        arch=v.label + ("" if m.usable else " (unusable output)"),
        ppl=pub.ppl if pub else None,
        nonlinear=nonlinear_notation_json(a.nonlinear),
        flops_ffn=a.flops.ffn,
        flops_attn=a.flops.attn,
        comm_gb=m.bytes / 1e9,
        lat_min=m.wall_s / 60,
        save_comm=base.measured.bytes / m.bytes if base else None,
        save_lat=base.measured.wall_s / m.wall_s if base else None,
        pub_comm_gb=pub.comm_gb if pub else None,
        pub_lat_min=pub.lat_min if pub else None,
        pub_save_comm=pub_base.comm_gb / pub.comm_gb if pub and pub_base and pub_base.comm_gb and pub.comm_gb else None,
        pub_save_lat=pub_base.lat_min / pub.lat_min if pub and pub_base and pub_base.lat_min and pub.lat_min else None,
        pub_source=pub.source if pub else None,
        projected_lat_min={
            p.name: projected_s(m, p, rtt) / 60 if from_loopback else None for p in profiles if p.bandwidth_bps
        },
        usable=m.usable,
        rounds=m.rounds,
        max_abs_error=m.max_abs_error,
        peak_rss_gb=max(p.peak_rss_bytes for p in m.parties) / 1e9,
        comm_by_kind={kind: k.bytes for kind, k in m.by_kind.items()},
        **(_accuracy(m.accuracy) if m.accuracy else {}),
        **(_spread(m, base.measured if base else None) if m.repeats > 1 else {}),
    )


def _accuracy(a: AccuracyRecord) -> dict[str, Any]:
    """The accuracy fields of a row whose variant ran on real text."""
    return {
        "ppl_plain": a.ppl_plaintext,
        "ppl_mpc": a.ppl_mpc,
        "agreement": a.agreement,
        "logit_err_mean": a.mean_abs_logit_error,
        "logit_err_max": a.max_abs_logit_error,
    }


def accuracy_by(record: Record) -> str | None:
    """What a record's accuracy columns measured (None: no variant ran on real text), and the variants
    whose fixed-point arithmetic broke on it, with the operation where."""
    ran = [(v, v.measured.accuracy) for v in record.variants if v.measured.accuracy is not None]
    if not ran:
        return None
    first = ran[0][1]
    weights = record.suite.source.get("weights") if isinstance(record.suite.source, dict) else None
    said = (
        f"the trained weights ({_flat_weights(weights)}) on {first.windows} windows of {record.suite.dims['T']} "
        f"bytes of real text ({first.source}): PPL [plaintext], [{record.backend.label}] per byte from the "
        "plaintext and the MPC logits; Top-1 agr.: share of positions with the same most likely next byte; "
        "Logit err.: mean and largest |MPC - plaintext| logit"
    )
    broke = [f"{v.label} ({a.first_unusable_op or 'not located'})" for v, a in ran if not a.usable]
    if broke:
        said += (
            f"; unusable on real text (largest logit error over {USABLE_RELATIVE_ERROR:.0%} of the largest "
            f"logit), with the first operation past that bound: {', '.join(broke)}"
        )
    return said


def _flat_weights(source: Any) -> str:
    return ", ".join(f"{k} {v}" for k, v in source.items()) if isinstance(source, dict) else "from a file"


def _spread(m: Measured, base: Measured | None) -> dict[str, Any]:
    """The spread fields of a row whose steps were timed more than once."""
    return {
        "lat_min_fastest": m.wall_s_min / 60,
        "lat_min_slowest": m.wall_s_max / 60,
        "save_lat_low": base.wall_s_min / m.wall_s_max if base else None,
        "save_lat_high": base.wall_s_max / m.wall_s_min if base else None,
    }


def build_report(
    record: Record,
    name: str = "",
    baseline: str | None = None,
    networks: Sequence[str] | None = None,
    predict: bool = False,
    others: Sequence[Record] = (),
    backends: Sequence[str] = (),
    quality: MeasuredPpl | None = None,
) -> Report:
    """`networks`: profiles to project latency onto (default: the record's suite's, else lan and paper-wan);
    `baseline`: the variant savings are against (default sm_ln_g where the record has it); `backends`:
    other backends whose columns stand beside (measured from `others`, records of the same suite,
    else predicted)."""
    variants = record.variants
    profiles = [parse_profile(n) for n in networks or record.run.project or DEFAULT_PROJECTIONS]
    from_loopback = record.run.network == "loopback"
    base = _pick_baseline(record, baseline)
    index = _published_index()
    published = {v.name: index.get(ModelConfig(**v.config)) for v in variants}
    pub_base = published.get(base.name) if base else None
    rtt = rtt_per_round(record)
    rows = [_row(rtt, v, base, published[v.name], pub_base, profiles, from_loopback) for v in variants]
    _distinct_labels(rows)
    if quality:
        for row, v in zip(rows, variants, strict=True):
            row.ppl_measured = quality.of(v.name, v.config)
        trained = ", ".join(quality.suites)
        quality_by = (
            f"validation perplexity per byte of the same architectures trained small ({trained}; pibench train)"
        )
    else:
        quality_by = None
    base_row = next((r for r in rows if base and r.variant == base.name), None)
    for row in rows:
        row.projected_save_lat = {
            p: (b / x if b and x else None)
            for p, x in row.projected_lat_min.items()
            for b in [base_row.projected_lat_min.get(p) if base_row else None]
        }
    if predict:
        for row, v in zip(rows, variants, strict=True):
            pred = v.predicted
            row.pred_comm_gb = pred.gb if pred else None
            row.pred_lat_min = pred.minutes["loopback"] if pred else None
    sources = sorted({r.pub_source for r in rows if r.pub_source})
    linked = [p for p in profiles if p.bandwidth_bps]
    return Report(
        record=name,
        suite=record.suite.name,
        dims=record.suite.dims,
        label=record.backend.label,
        measured_by=measured_by(record),
        published_by=f"{cite(sources)}: {PUBLISHED_SETUP}" if sources else None,
        published_from=cite(sources),
        measured_under=measured_under(record),
        baseline=base.label if base else None,
        rows=rows,
        projections=[p.name for p in linked],
        projected_by=(
            "projected from this loopback run onto "
            + "; ".join(p.describe() for p in linked)
            + " by pibench's latency model (compute + max(exchange CPU time, wire time)"
            + (
                " + round trips x RTT, counted per exchange where the record has them (CrypTen: an all_reduce of 3 "
                "or more elements is 2, docs/networks.md), else rounds"
                if rounds_are_round_trips(record)
                else f" + messages x {rtt:g} RTT: both parties send each message at once, docs/networks.md"
            )
            + "; see pibench/counting/network.py), not measured"
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
        quality_by=quality_by,
        accuracy_by=accuracy_by(record),
        repeats=record.repeats,
        description=record.suite.description,
        others=other_backends(record, others, backends, base.name if base else None, measured_by),
    )


def predicted_report(
    suite: Suite,
    costs: Sequence[VariantCost],
    preds: Sequence[Predicted],
    predicted_by: str,
    baseline: str | None = None,
    name: str = "",
) -> Report:
    """The papers' table of a suite's predictions (`pibench cost --predict`), as a run's report is made
    of its record: per variant the calibrated model's GB, minutes and rounds (the label says "pred."),
    savings against the baseline, the minutes projected onto each network its predictions hold (the
    suite's `network.project`, or `--network`), the published rows beside, the bytes by kind (plots)."""
    label = f"{BACKENDS.get(suite.backend).label} pred."
    wanted = baseline or BASELINE
    base = next((i for i, e in enumerate(suite.entries) if wanted in (e.name, e.variant.name)), None)
    if base is None and baseline is not None:
        names = [e.name for e in suite.entries]
        raise PibenchError(
            f"--baseline '{baseline}' is not a variant of the suite{did_you_mean(baseline, names)}; "
            f"its variants: {', '.join(names)}"
        )
    index = _published_index()
    published = [index.get(e.config) for e in suite.entries]
    pub_base = published[base] if base is not None else None
    b = preds[base] if base is not None else None
    networks = [n for n in preds[0].minutes if n != "loopback"]
    rows = []
    for e, c, p, pub in zip(suite.entries, costs, preds, published, strict=True):
        projected = {n: p.minutes[n] for n in networks}
        rows.append(
            Row(
                variant=e.name,
                arch=e.label,
                ppl=pub.ppl if pub else None,
                nonlinear=nonlinear_notation(c),
                flops_ffn=c.flops_ffn,
                flops_attn=c.flops_attn,
                comm_gb=p.gb,
                lat_min=p.minutes["loopback"],
                save_comm=b.bytes / p.bytes if b and p.bytes else None,
                save_lat=b.wall_s / p.wall_s if b and p.wall_s else None,
                pub_comm_gb=pub.comm_gb if pub else None,
                pub_lat_min=pub.lat_min if pub else None,
                pub_save_comm=_ratio(pub_base.comm_gb, pub.comm_gb) if pub and pub_base else None,
                pub_save_lat=_ratio(pub_base.lat_min, pub.lat_min) if pub and pub_base else None,
                pub_source=pub.source if pub else None,
                projected_lat_min=dict(projected),
                projected_save_lat={n: _ratio(b.minutes[n], m) if b else None for n, m in projected.items()},
                rounds=p.rounds,
                comm_by_kind={kind: k.bytes for kind, k in p.by_kind.items()},
            )
        )
    sources = sorted({r.pub_source for r in rows if r.pub_source})
    profiles = [parse_profile(n) for n in networks]
    return Report(
        record=name,
        suite=suite.name,
        dims=suite.dims,
        label=label,
        measured_by=predicted_by,
        published_by=f"{cite(sources)}: {PUBLISHED_SETUP}" if sources else None,
        published_from=cite(sources),
        measured_under=predicted_by,
        baseline=suite.entries[base].label if base is not None else None,
        rows=rows,
        projections=networks,
        projected_by=(
            "the calibrated model's minutes on "
            + "; ".join(p.describe() for p in profiles)
            + " (compute + max(exchange CPU time, wire time) + round trips x RTT: docs/predictions.md), not measured"
        ),
        error_by="",
        description=suite.description,
        predicted=True,
        prediction_notes=merge_notes(note for p in preds for note in p.notes),
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def merge_reports(reports: Sequence[Report], tags: Sequence[str]) -> Report:
    """Reports of one suite under one backend but different settings as one table, so that settings (an
    approximation, a protocol option) compare side by side: every row of each, its label tagged with
    what its record's settings are where they differ (`tags`), its savings against its own record's
    baseline. Other backends' columns are left out (each record has its own)."""
    first = reports[0]
    rows = [
        dataclasses.replace(r, arch=f"{r.arch} [{tag}]", record=rep.record)
        for rep, tag in zip(reports, tags, strict=True)
        for r in rep.rows
    ]
    return dataclasses.replace(
        first,
        record=", ".join(rep.record for rep in reports),
        rows=rows,
        others=[],
        error_by="; ".join(dict.fromkeys(rep.error_by for rep in reports)),
        repeats=max(rep.repeats for rep in reports),
        merged=[(tag, rep.record, rep.measured_by) for rep, tag in zip(reports, tags, strict=True)],
    )


# --- what a table says about itself -------------------------------------------------------------


def title(rep: Report, with_record: bool = True) -> str:
    dims = ", ".join(f"{k}={v}" for k, v in rep.dims.items())
    return f"{rep.suite} ({dims})" + (f" — {rep.record}" if rep.record and with_record else "")


def footer(rep: Report, shown: Collection[str] | None = None) -> list[str]:
    """What produced each column; with `shown` (column groups), only the lines about those."""

    def has(*groups: str) -> bool:
        return shown is None or any(g in shown for g in groups)

    if rep.merged:
        lines = [f"[{rep.label}] rows [{tag}]: {record}: measured by pibench: {by}." for tag, record, by in rep.merged]
    elif rep.predicted:
        lines = [f"[{rep.label}]: predicted by pibench, not measured: {rep.measured_by}."]
        if rep.prediction_notes:
            lines.append(f"[{rep.label}] beyond what was measured: {'; '.join(rep.prediction_notes)}.")
    else:
        lines = [f"[{rep.label}]: measured by pibench: {rep.measured_by}."]
    if rep.error_by:
        lines.append(f"{rep.error_by}.")
    if has("others"):
        for o in rep.others:
            lines.append(
                f"[{o.label}]: " + ("" if o.label.endswith(" pred.") else "measured by pibench: ") + f"{o.about}."
            )
    if has("published", "published_abs", "cost"):
        lines.append(
            f"[SPU, pub.], [pub.]: published: {rep.published_by}."
            if rep.published_by
            else "[pub.]: no published row matches."
        )
    own = " of each row's own record" if rep.merged else ""
    lines.append(
        f"Savings against {rep.baseline}{own}." if rep.baseline else "Savings: no baseline variant in this record."
    )
    if rep.repeats > 1:
        advice = "." if has("spread") else "; --columns ...,spread shows every variant's."
        lines.append(spread_note(rep, has("spread")) + advice)
    if rep.projections and has("projected", "projected_lat"):
        lines.append(f"[PROFILE proj.]: {rep.label}, {rep.projected_by}.")
    if rep.quality_by and has("quality"):
        lines.append(f"PPL [meas.]: {rep.quality_by}.")
    if rep.accuracy_by and has("accuracy"):
        lines.append(f"Accuracy under MPC: {rep.accuracy_by}.")
    if rep.predicted_by and has("predicted"):
        lines.append(f"[{rep.label}, pred.]: {rep.predicted_by}.")
    return lines


def spread_note(rep: Report, shown: bool) -> str:
    """What the repeated passes' spread means where its columns are shown; else how wide it is at most,
    so that a reader can tell which latency differences this run resolves. One sentence, no full stop."""
    if shown:
        return (
            f"[fastest], [slowest]: {rep.label}'s fastest and slowest of each measured step's passes, summed over "
            "the stack like the median; Savings Lat. [low], [high]: the baseline's fastest over this variant's "
            "slowest, and its slowest over this variant's fastest"
        )
    width, arch = max(
        ((r.lat_min_slowest - r.lat_min_fastest) / r.lat_min, r.arch)
        for r in rep.rows
        if r.lat_min_slowest is not None and r.lat_min_fastest is not None
    )
    return f"Lat. spread (slowest minus fastest pass): at most {width:.0%} of the median ({arch})"
