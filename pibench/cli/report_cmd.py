"""`pibench report RECORD [RECORD ...]`: savings tables in the papers' layout, measured beside published."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pibench.records import check_folder, read_record
from pibench.report import FORMATS, build_report, plot, render
from pibench.variants import BASELINE

HELP = "print savings tables of run records in the papers' layout (and plot them)"
EPILOG = """\
Measured columns are labelled with their backend ([CrypTen]) and say under the table which settings
and network produced them and what the MPC error covers; published columns (SecretFlow SPU, from
the papers) are labelled [pub.] and appear where a variant's configuration matches a published row.
An unknown --baseline is an error. LaTeX output is a tabular that needs amssymb.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("records", nargs="+", metavar="RECORD", help="run records (results/*.json)")
    add_report_options(parser)


def add_report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument("--baseline", help=f"variant to compute savings against (default: {BASELINE})")
    parser.add_argument("--plot", metavar="DIR", help="write the plots (PNG and SVG) to DIR")
    parser.add_argument(
        "--network",
        action="append",
        metavar="PROFILE",
        help="project latency onto PROFILE (repeatable; default: the suite's network.project, else lan, paper-wan)",
    )
    parser.add_argument("--predict", action="store_true", help="add the calibrated model's predicted columns")


def emit_report(records: list[tuple[str, dict]], args: argparse.Namespace) -> None:
    """Print the report of `records` ((name, record) pairs) and write plots, as the options say."""
    reports = [build_report(rec, name, args.baseline, args.network, args.predict) for name, rec in records]
    print(render(reports, args.format))
    if args.plot:
        for (name, rec), rep in zip(records, reports, strict=True):
            for path in plot(rec, rep, args.plot, Path(name).stem):
                print(f"plot: {path}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    records = [(path, read_record(path)) for path in args.records]
    if args.plot:
        check_folder(args.plot, "--plot")
    emit_report(records, args)
    return 0
