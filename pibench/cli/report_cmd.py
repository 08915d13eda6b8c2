"""`pibench report RECORD [RECORD ...]`: savings tables in the papers' layout, measured beside published."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pibench.plots import plot
from pibench.quality.record import KIND as QUALITY_KIND
from pibench.quality.record import validate_quality_record
from pibench.quality.report import plot_quality, quality_table
from pibench.records import check_folder, read_json, validate_record
from pibench.report import build_report
from pibench.tables import FORMATS, GROUPS, parse_columns, render
from pibench.variants import BASELINE

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
    parser.add_argument("records", nargs="+", metavar="RECORD", help="run records (results/*.json)")
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


def _tables(records: list[tuple[str, dict]]) -> list[tuple[str, dict, list[dict]]]:
    """Records of one suite under different backends make one table (the first given leads); the
    rest one table each."""
    tables, used = [], set()
    for i, (name, rec) in enumerate(records):
        if i in used:
            continue
        mates, seen = [], {rec["backend"]["name"]}
        for j, (_, other) in enumerate(records):
            same = other["suite"]["name"] == rec["suite"]["name"] and other["suite"]["dims"] == rec["suite"]["dims"]
            if j not in used and j != i and same and other["backend"]["name"] not in seen:
                mates.append(j)
                seen.add(other["backend"]["name"])
        used |= {i, *mates}
        tables.append((name, rec, [records[j][1] for j in mates]))
    return tables


def emit_report(
    records: list[tuple[str, dict]], args: argparse.Namespace, quality: Sequence[tuple[str, dict]] = ()
) -> None:
    """Print the report of `records` ((name, record) pairs), joined with `quality` records (measured
    perplexity), and write plots, as the options say."""
    tables = _tables(records)
    reports = []
    trained = [q for _, q in quality]
    for name, rec, others in tables:
        backends = args.backends.split(",") if args.backends else [o["backend"]["name"] for o in others]
        reports.append(build_report(rec, name, args.baseline, args.network, args.predict, others, backends, trained))
    if reports:
        print(render(reports, args.format, parse_columns(args.columns)))
    if not reports or args.format == "table":
        for _, q in quality:
            print(("\n" if reports else "") + quality_table(q))
    if args.plot:
        for (name, rec, _), rep in zip(tables, reports, strict=True):
            for path in plot(rec, rep, args.plot, Path(name).stem):
                print(f"plot: {path}", file=sys.stderr)
        for name, q in quality:
            for path in plot_quality(q, args.plot, Path(name).stem, reports[0] if reports else None):
                print(f"plot: {path}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    runs, quality = [], []
    for path in args.records:
        data = read_json(path)
        if isinstance(data, dict) and data.get("kind") == QUALITY_KIND:
            quality.append((path, validate_quality_record(data, f"record '{path}'")))
        else:
            runs.append((path, validate_record(data, f"record '{path}'")))
    if args.plot:
        check_folder(args.plot, "--plot")
    emit_report(runs, args, quality)
    return 0
