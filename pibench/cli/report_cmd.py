"""`pibench report RECORD [RECORD ...]`: savings tables in the papers' layout, measured beside published."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pibench.models.variants import BASELINE
from pibench.results.tables import FORMATS, GROUPS
from pibench.util.errors import PibenchError

if TYPE_CHECKING:  # the rest is imported where a report is made: `pibench party` builds this parser too
    from pibench.quality.training_record import QualityRecord
    from pibench.results.records import Record
    from pibench.results.report import MeasuredPpl, Report

HELP = "print savings tables of run records in the papers' layout (and plot them)"
EPILOG = """\
Measured columns are labelled with their backend ([CrypTen]) and say under the table which settings
and network produced them and what the MPC error covers; published columns (SecretFlow SPU, from
the papers) are labelled [pub.] and appear where a variant's configuration matches a published row.
An unknown --baseline is an error.

Formats: table (a terminal: the default column groups that fit $COLUMNS, else 120 characters; the
rest are named under the table), markdown, latex (booktabs; needs booktabs and amssymb), csv and
json (one tidy table, one row per record and variant, numbers only, units in the column names).
Column groups (--columns, comma-separated, or all):
""" + "\n".join(f"  {name:<14} {what}" for name, what in GROUPS.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "records", nargs="+", metavar="RECORD", help="run records (results/*.json), or a sweep's folder (pibench sweep)"
    )
    add_report_options(parser)


def add_report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")
    parser.add_argument(
        "--columns",
        metavar="GROUP[,GROUP]",
        help="column groups to show, or all (default for a table: those that fit; groups: `pibench report --help`)",
    )
    parser.add_argument("--baseline", help=f"variant to compute savings against (default: {BASELINE})")
    parser.add_argument("--plot", metavar="DIR", help="write the plots (PNG and SVG) to DIR")
    parser.add_argument(
        "--network",
        action="append",
        metavar="PROFILE",
        help="project latency onto PROFILE (repeatable; default: the suite's network.project, else lan, paper-wan)",
    )
    parser.add_argument("--predict", action="store_true", help="add the calibrated model's predicted columns")
    parser.add_argument(
        "--backends",
        metavar="NAME[,NAME]",
        help="backends whose columns stand side by side: measured from a given record of the same suite, "
        "else predicted from the backend's calibration (default: the backends of the records given)",
    )


@dataclass
class _Table:
    """One table of a report: its leading record, records of other backends of the same suite (their
    columns stand beside), and records of the same suite and backend under other settings (their rows
    join the table, `merge_reports`)."""

    name: str
    record: Record
    others: list[Record] = field(default_factory=list)
    alike: list[tuple[str, Record]] = field(default_factory=list)


def _same_suite(a: Record, b: Record) -> bool:
    return a.same_suite(b)


def _tables(records: list[tuple[str, Record]]) -> list[_Table]:
    """Records of one suite make one table (the first given leads): under one backend with different
    settings, a row per (record, variant); under different backends, columns side by side. The rest
    one table each."""
    tables: list[_Table] = []
    used: set[int] = set()
    for i, (name, rec) in enumerate(records):
        if i in used:
            continue
        used.add(i)
        mates = [j for j, (_, r) in enumerate(records) if j not in used and _same_suite(rec, r)]
        backend, settings = rec.backend.name, rec.backend.settings
        alike = [
            j for j in mates if records[j][1].backend.name == backend and records[j][1].backend.settings != settings
        ]
        if alike:  # rows of several records; other backends' columns would not say whose rows they stand by
            tables.append(_Table(name, rec, alike=[records[j] for j in alike]))
            used |= set(alike)
            continue
        others: dict[str, int] = {}
        for j in mates:
            others.setdefault(records[j][1].backend.name, j)
        others.pop(backend, None)
        tables.append(_Table(name, rec, others=[records[j][1] for j in others.values()]))
        used |= set(others.values())
    return tables


def _setting_tags(records: Sequence[Record]) -> list[str]:
    """Per record, its values of the backend settings that differ between `records` ("gelu erf")."""
    from pibench.results.records import flat_settings as _flat

    flat = [_flat(r.backend.settings) for r in records]
    keys = sorted(k for k in set().union(*flat) if len({repr(f.get(k)) for f in flat}) > 1)
    return [", ".join(f"{k} {f.get(k, '-')}" for k in keys) for f in flat]


def _report(table: _Table, args: argparse.Namespace, trained: MeasuredPpl | None) -> Report:
    from pibench.results.report import build_report, merge_reports

    backends = args.backends.split(",") if args.backends else [o.backend.name for o in table.others]
    lead = build_report(
        table.record, table.name, args.baseline, args.network, args.predict, table.others, backends, trained
    )
    if not table.alike:
        return lead
    rest = [build_report(r, n, args.baseline, args.network, args.predict, (), (), trained) for n, r in table.alike]
    return merge_reports([lead, *rest], _setting_tags([table.record, *(r for _, r in table.alike)]))


def emit_report(
    records: list[tuple[str, Record]], args: argparse.Namespace, quality: Sequence[tuple[str, QualityRecord]] = ()
) -> None:
    """Print the report of `records` ((name, record) pairs), joined with `quality` records (measured
    perplexity), and write plots, as the options say."""
    from pibench.quality.summary import plot_quality, render_quality
    from pibench.quality.training_record import measured_ppl
    from pibench.results.generation import generation_table
    from pibench.results.plots import plot, plot_accuracy, plot_generation
    from pibench.results.tables import parse_columns, render

    trained = measured_ppl([q for _, q in quality]) if quality else None
    groups = parse_columns(args.columns)
    named = [g.strip() for g in (args.columns or "").split(",")]
    if "predicted" in named and not args.predict:
        raise PibenchError("--columns predicted: the predicted columns come with --predict; add it")
    tables = _tables(records)
    reports = [_report(t, args, trained) for t in tables]
    if reports:
        required = [g for g, asked in (("predicted", args.predict), ("others", args.backends)) if asked]
        print(render(reports, args.format, groups, required=required))
    if args.format not in ("csv", "json"):
        for _, record in records:
            generated = generation_table(record)
            if generated:
                print("\n" + generated)
    if quality and (not reports or args.format not in ("csv", "json")):  # csv, json: one frame, PPL joined
        print(("\n" if reports else "") + render_quality(quality, args.format))
    if args.plot:
        for table, rep in zip(tables, reports, strict=True):
            for path in plot(rep, args.plot, Path(table.name).stem):
                print(f"plot: {path}", file=sys.stderr)
        for name, record in records:
            for path in plot_generation(record, args.plot, Path(name).stem):
                print(f"plot: {path}", file=sys.stderr)
        if records:  # one figure for every record that ran on real text (each backend's markers)
            for path in plot_accuracy(records, args.plot, Path(records[0][0]).stem):
                print(f"plot: {path}", file=sys.stderr)
        for name, q in quality:
            for path in plot_quality(q, args.plot, Path(name).stem, reports[0] if reports else None):
                print(f"plot: {path}", file=sys.stderr)


def _sweep_report(args: argparse.Namespace) -> int:
    """`pibench report SWEEP_DIR`: one table over a sweep's cells (`pibench.sweeps.frame`)."""
    from pibench.results.records import check_folder
    from pibench.sweeps.frame import DEFAULT_NETWORK, plot_sweep, render_sweep, sweep_frame

    if len(args.records) > 1:
        raise PibenchError(f"'{args.records[0]}' is a sweep's folder: report it alone")
    given = [f"--{k}" for k in ("columns", "backends") if getattr(args, k)] + (["--predict"] if args.predict else [])
    if given:
        raise PibenchError(
            f"{', '.join(given)}: not for a sweep's report (its columns are fixed: pibench report --help)"
        )
    if args.plot:
        check_folder(args.plot, "--plot")
    networks = args.network or [DEFAULT_NETWORK]
    df, manifest, notes = sweep_frame(args.records[0], args.baseline, networks)
    print(render_sweep(df, manifest, notes, args.format))
    if args.plot and not df.empty:
        for path in plot_sweep(df, manifest, args.plot, networks[0]):
            print(f"plot: {path}", file=sys.stderr)
    return 0


def main(args: argparse.Namespace) -> int:
    from pibench.quality.training_record import KIND as QUALITY_KIND
    from pibench.quality.training_record import validate_quality_record
    from pibench.results.records import check_folder, read_json, validate_record
    from pibench.util.files import RUN, expect

    if any(Path(p).is_dir() for p in args.records):
        return _sweep_report(args)
    runs, quality = [], []
    for path in args.records:
        data = read_json(path)
        expect(data, path, RUN, QUALITY_KIND)
        if isinstance(data, dict) and data.get("kind") == QUALITY_KIND:
            quality.append((path, validate_quality_record(data, f"record '{path}'")))
        else:
            runs.append((path, validate_record(data, f"record '{path}'")))
    if not runs:  # what only run records have
        given = [f"--{k}" for k in ("columns", "baseline", "network", "backends") if getattr(args, k)]
        given += ["--predict"] if args.predict else []
        if given:
            verb = "these options apply" if len(given) > 1 else "applies"
            kind = "is a quality record" if len(quality) == 1 else "are quality records"
            raise PibenchError(f"{', '.join(given)}: {verb} to run records; {', '.join(p for p, _ in quality)} {kind}")
    if args.plot:
        check_folder(args.plot, "--plot")
    emit_report(runs, args, quality)
    return 0
