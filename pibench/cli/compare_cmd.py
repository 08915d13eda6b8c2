"""`pibench compare A B`: two records of one suite side by side per variant, with the change in %."""

from __future__ import annotations

import argparse

from pibench.results.records import Record, read_record, record_differences
from pibench.results.report import build_report
from pibench.results.tables import compare_frame, render_compare
from pibench.util.errors import PibenchError
from pibench.util.machine import TIME_SETTINGS

HELP = "set two run records side by side per variant (two commits, backends or machines), with the change in %"
EPILOG = """\
Rows: every variant both records have, with GB, minutes, savings (each record against its own
baseline), rounds, MPC error and peak memory. Under the table: what produced each record (backend and
settings, CPU, commit) and which variants only one has. Records of different suites of the same
dimensions are compared, said under the table; of other dimensions, refused. A variant whose
configuration differs between the two is named.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="a run record (the reference)")
    parser.add_argument("b", metavar="B", help="a run record of the same suite")
    parser.add_argument("--baseline", help="variant the savings are against (default: sm_ln_g)")
    parser.add_argument("--format", choices=("table", "markdown", "csv", "json"), default="table", help="output format")


def _about(tag: str, path: str, record: Record) -> str:
    env, settings = record.environment, record.backend.settings
    commit = env.git.commit[:10] if env.git else "no git commit"
    speed = ", ".join(f"{k} {settings[k]}" for k in TIME_SETTINGS if k in settings)
    return (
        f"{tag}: {path}: {record.backend.label} ({speed or 'CPU'}) on {env.cpu_count} cores of "
        f"{env.cpu_model}, {commit}, network {record.run.network}, "
        f"{'every layer' if record.run.full else 'layers sampled'}, created {record.created}."
    )


def _suite(record: Record) -> str:
    return f"{record.suite.name} ({', '.join(f'{k}={v}' for k, v in record.suite.dims.items())})"


def main(args: argparse.Namespace) -> int:
    a, b = read_record(args.a), read_record(args.b)
    if a.suite.dims != b.suite.dims:
        raise PibenchError(
            f"'{args.a}' is of suite {_suite(a)}, '{args.b}' of {_suite(b)}: compare records of one size"
        )
    ra, rb = build_report(a, args.a, args.baseline), build_report(b, args.b, args.baseline)
    about = [_about("A", args.a, a), _about("B", args.b, b), *record_differences(a, b)]
    if a.suite.name != b.suite.name:
        about.insert(2, f"Suites differ: A is {a.suite.name}, B is {b.suite.name}, of the same dimensions.")
    va, vb = ({v.name: v for v in r.variants} for r in (a, b))
    differ = [n for n in va if n in vb and va[n].config != vb[n].config]
    if differ:
        about.append(f"Configurations differ between A and B for: {', '.join(differ)}.")
    for tag, mine, theirs in (("A", va, vb), ("B", vb, va)):
        only = [n for n in mine if n not in theirs]
        if only:
            about.append(f"Only in {tag}: {', '.join(only)}.")
    print(render_compare(compare_frame(ra, rb), args.format, about))
    return 0
