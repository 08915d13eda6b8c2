"""`pibench gate BASELINE CANDIDATE`: fail CI when a change makes a variant cost more."""

from __future__ import annotations

import argparse
import json
import textwrap

from tabulate import tabulate

from pibench.results.gate import METRICS, NOT_COMPARABLE, PASS, SPREAD_METRICS, compare, parse_fail_on
from pibench.results.records import read_record
from pibench.util.errors import PibenchError

HELP = "compare two run records: exit 0 all clear, 1 regression, 2 not comparable"


def _tolerance(name: str) -> str:
    m = METRICS[name]
    return f"{name}: {'+' if m.lower_is_better else '-'}{m.tolerance:.0%}"


EPILOG = textwrap.fill(
    "Counted metrics (bytes, rounds, per operation kind, nonlinear elements, FLOPs, comm_savings; a "
    "generation's in all, of its last decode step, token.*, and of its set-up) must not get worse at all. "
    "Time compares through the spread of the repeated passes: the candidate's fastest pass against the "
    f"baseline's slowest ({', '.join(_tolerance(m) for m in SPREAD_METRICS)}), and for time savings the "
    f"candidate's high end against the baseline's low end ({_tolerance('time_savings')}); the table shows the "
    f"figures compared. max_abs_error compares loosely ({_tolerance('max_abs_error')}); a generation's last "
    f"decode step, timed once, as {_tolerance('token.wall_s')}. Loosen or tighten with --fail-on METRIC:+X% "
    "(lower is better) or METRIC:-X% (higher is better); METRIC may be a pattern ('bytes.*'). Metrics: "
    + ", ".join(METRICS),
    100,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", help="the record to compare against")
    parser.add_argument("candidate", help="the new record")
    parser.add_argument("--fail-on", action="append", metavar="METRIC:±X%", help="tolerance of a metric (repeatable)")
    parser.add_argument("--counted-only", action="store_true", help="gate deterministic counts only, not time")
    parser.add_argument("--format", choices=("table", "json"), default="table")


def _number(value: float) -> str:
    """Counts as integers with thousands separators; other values to 4 significant digits."""
    return f"{int(value):,}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.4g}"


def main(args: argparse.Namespace) -> int:
    tolerances = parse_fail_on(args.fail_on or [])
    if args.counted_only and (timed := [m for m in tolerances if not METRICS[m].counted]):
        raise PibenchError(f"--counted-only gates counts only; --fail-on names {', '.join(timed)}, which is not one")
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
            [
                f.variant,
                f.metric,
                _number(f.baseline),
                _number(f.candidate),
                f"{f.change:+.2%}",
                f"{'+' if METRICS[f.metric].lower_is_better else '-'}{f.allowed:.0%}",
                f.basis,
            ]
            for f in outcome.regressions
        ]
        print(
            f"REGRESSION: {len(outcome.regressions)} of {outcome.compared} comparisons got worse"
            + (f"; missing from the candidate: {', '.join(outcome.missing)}" if outcome.missing else "")
        )
        if rows:
            print(
                tabulate(
                    rows,
                    headers=["variant", "metric", "baseline", "candidate", "change", "allowed", "compared"],
                    disable_numparse=True,
                )
            )
    for note in outcome.notes:
        print(f"({note})")
    if outcome.added:
        print(f"(in the candidate only, not compared: {', '.join(outcome.added)})")
    return outcome.status
