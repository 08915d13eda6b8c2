"""`pibench gate BASELINE CANDIDATE`: fail CI when a change makes a variant cost more."""

from __future__ import annotations

import argparse
import json

from tabulate import tabulate

from pibench.gate import METRICS, NOT_COMPARABLE, PASS, compare, parse_fail_on
from pibench.results import read_record

HELP = "compare two run records: exit 0 all clear, 1 regression, 2 not comparable"
EPILOG = """\
Counted metrics (bytes, rounds, per operation kind, nonlinear elements, FLOPs, comm_savings) must not
get worse at all; time (wall_s, comm_s: +50%, time_savings: -33%) and max_abs_error (+100%) loosely.
Loosen or tighten with --fail-on METRIC:+X% (lower is better) or METRIC:-X% (higher is better);
METRIC may be a pattern ('bytes.*'). Metrics: """ + ", ".join(METRICS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", help="the record to compare against")
    parser.add_argument("candidate", help="the new record")
    parser.add_argument("--fail-on", action="append", default=[], metavar="METRIC:±X%", help="tolerance of a metric")
    parser.add_argument("--counted-only", action="store_true", help="gate deterministic counts only, not time")
    parser.add_argument("--format", choices=("table", "json"), default="table")


def main(args: argparse.Namespace) -> int:
    tolerances = parse_fail_on(args.fail_on)
    outcome = compare(read_record(args.baseline), read_record(args.candidate), tolerances, args.counted_only)
    if args.format == "json":
        print(json.dumps(outcome.to_json(), indent=2))
        return outcome.status
    if outcome.status == NOT_COMPARABLE:
        print(f"not comparable: {'; '.join(outcome.reasons)}")
    elif outcome.status == PASS:
        print(f"all clear: {len(outcome.variants)} variants, {outcome.compared} comparisons, nothing got worse")
    else:
        rows = [
            [f.variant, f.metric, f"{f.baseline:.6g}", f"{f.candidate:.6g}", f"{f.change:+.2%}", f"{f.allowed:.0%}"]
            for f in outcome.regressions
        ]
        print(f"REGRESSION: {len(outcome.regressions)} of {outcome.compared} comparisons got worse")
        print(tabulate(rows, headers=["variant", "metric", "baseline", "candidate", "change", "allowed"]))
    if outcome.only_in_one:
        print(f"(in one record only, not compared: {', '.join(outcome.only_in_one)})")
    return outcome.status
