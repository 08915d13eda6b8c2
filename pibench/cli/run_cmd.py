"""`pibench run SUITE`: the main job. Every variant under CrypTen 2PC, two parties on this machine."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

from pibench.cli.cost_cmd import suite_header
from pibench.cli.report_cmd import add_report_options, emit_report
from pibench.results import default_record_path, write_record
from pibench.suite import load_suite

HELP = "measure a suite's variants under CrypTen 2PC (two parties on localhost)"
EPILOG = """\
By default one layer per kind is measured and bytes and rounds are extrapolated exactly (layers of a
kind cost the same); --full measures every layer. The record goes to results/SUITE-TIME.json.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="suite YAML file, e.g. suites/gpt2_t128.yaml")
    parser.add_argument("--full", action="store_true", help="measure every layer instead of a sample")
    parser.add_argument("--out", help="record path (default: results/SUITE-TIME.json)")
    parser.add_argument(
        "--timeout", type=float, default=45.0, metavar="S", help="stop when the parties make no progress for S s"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--emulate",
        metavar="PROFILE",
        help="run the parties in two network namespaces over a shaped link (lan, wan, paper-wan, BW,RTT; "
        "needs root; default: the suite's network.emulate, else loopback)",
    )
    add_report_options(parser)


def main(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite)
    out = args.out or default_record_path(suite.name)
    from pibench.emulate import EmulatedLink
    from pibench.network import parse_profile
    from pibench.runner import run_local  # torch and friends only when running

    print(suite_header(suite), file=sys.stderr, flush=True)
    # a terminated run still tears down its parties and namespaces (the finally clauses run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.ExitStack() as stack:
        profile = parse_profile(args.emulate) if args.emulate else suite.emulate
        link = stack.enter_context(EmulatedLink(profile)) if profile else None
        if link:
            print(f"network: {link.describe()}", file=sys.stderr, flush=True)
        record = run_local(suite, full=args.full, timeout_s=args.timeout, progress=not args.no_progress, link=link)
    path = write_record(out, record)
    emit_report([(str(path), record)], args)
    print(f"record: {path}", file=sys.stderr)
    return 0
