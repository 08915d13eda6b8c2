"""`pibench run SUITE`: the main job. Every variant under the suite's backend, all parties on this machine."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

from pibench.backends import BACKENDS
from pibench.cli.common import add_run_options, finish, refuse_late_failures
from pibench.cli.report_cmd import add_report_options
from pibench.suites.loader import load_suite

HELP = "measure a suite's variants under 2PC (its backend; parties on localhost)"
EPILOG = """\
By default one layer per layer kind is measured and bytes and rounds are extrapolated exactly
(layers of a kind cost the same); --full measures every layer. The record goes to
results/SUITE-TIME.json. Exit codes: 0 done, 2 bad input or a failed run (no record), 3 done but a
variant's MPC output is unusable (the record is written and flagged; --accept-unusable for 0).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="suite YAML file, e.g. suites/gpt2_t128.yaml")
    add_run_options(parser, 45.0, "stop when the parties make no progress for S seconds")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--emulate",
        metavar="PROFILE",
        help="run the parties in two network namespaces over a shaped link (lan, wan, paper-wan, BW,RTT; "
        "needs root; default: the suite's network.emulate, else loopback)",
    )
    add_report_options(parser)


def main(args: argparse.Namespace) -> int:
    from pibench.counting.network import parse_profile
    from pibench.measuring.emulate import EmulatedLink
    from pibench.measuring.runner import run_local

    suite = load_suite(args.suite, backend=args.backend, device=args.device, repeats=args.repeats)
    profile = parse_profile(args.emulate) if args.emulate else suite.emulate
    refuse_late_failures(suite, args)
    # what is about to run; the suite's name and dimensions head the table that ends the run
    backend = BACKENDS.get(suite.backend)
    passes = backend.passes(suite.repeats)
    print(
        f"measuring {len(suite.entries)} variant{'s' if len(suite.entries) > 1 else ''} of {suite.name} under "
        f"{backend.label} ({'every layer' if args.full else 'one layer per layer kind'}, "
        f"{passes} timed pass{'es' if passes > 1 else ''} per step)",
        file=sys.stderr,
        flush=True,
    )
    # a terminated run still tears down its parties and namespaces (the finally clauses run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.ExitStack() as stack:
        link = stack.enter_context(EmulatedLink(profile)) if profile else None
        if link:
            print(f"network: {link.describe()}", file=sys.stderr, flush=True)
        measured, run = run_local(
            suite,
            full=args.full,
            timeout_s=args.timeout,
            progress=not args.no_progress,
            link=link,
            accept_unusable=args.accept_unusable,
            include=args.include,
        )
    return finish(suite, measured, run, args)
