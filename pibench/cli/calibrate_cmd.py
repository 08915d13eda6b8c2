"""`pibench calibrate`: measure every operation kind of a backend and fit the model behind `cost --predict`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pibench.backends import BACKENDS, DEFAULT_BACKEND
from pibench.results.records import check_writable, write_record
from pibench.suites.loader import load_suite
from pibench.util.errors import PibenchError

HELP = "microbenchmark a backend's operations and fit the model behind `pibench cost --predict`"
EPILOG = """\
Each kind's bytes, rounds and round trips are fitted on its cost form's features (docs/predictions.md):
exactly where the backend's counts are deterministic (CrypTen: every sample reproduced, softmax and
argmax by their log-reduction form at row lengths 1 to 50257), else fitted or interpolated between
measured sizes from one row to GPT-2's, with the spread of repeated calls kept (SPU). Seconds are fitted
on this machine. The file records the settings and the machine (its fingerprint: CPU, cores, threads,
device, local products); predictions say when their time model comes from another machine. With the
defaults it rebuilds the calibration shipped in pibench/data/calibration-BACKEND-default.json;
--quick refits only the seconds of an existing one on this machine; --extend FILE measures only the
kinds FILE has no model for.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=BACKENDS.names(), default=None, help=f"default: the suite's, else {DEFAULT_BACKEND}"
    )
    parser.add_argument("--out", default="calibration.json", help="calibration file to write (a regular file)")
    parser.add_argument("--force", action="store_true", help="replace an existing file at --out")
    parser.add_argument("--suite", help="take the backend and its settings from this suite (default: its defaults)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="keep a calibration's bytes and rounds and refit only its seconds on this machine (a few minutes)",
    )
    parser.add_argument(
        "--calibration", metavar="FILE", help="with --quick: the calibration to start from (default: the shipped one)"
    )
    parser.add_argument(
        "--extend",
        metavar="FILE",
        help="keep FILE's models and measure here only the kinds it has no model for; each added model says "
        "when and where it was measured",
    )


def main(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite) if args.suite else None
    backend = args.backend or (suite.backend if suite else DEFAULT_BACKEND)
    if suite and suite.backend != backend:
        raise PibenchError(f"--backend {backend}: suite '{args.suite}' runs backend {suite.backend}")
    settings = suite.settings if suite else BACKENDS.get(backend).default_settings()
    check_writable(args.out, force=args.force)
    if args.calibration and not args.quick:
        raise PibenchError("--calibration goes with --quick")
    if args.extend and args.quick:
        raise PibenchError("--extend and --quick are two ways to start from a calibration; choose one")
    progress = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.extend:
        return _extend(args, backend, settings, progress)
    base = None
    if args.quick:
        from dataclasses import asdict

        from pibench.calibration.fit import load_calibration, shipped_calibration

        base = load_calibration(args.calibration) if args.calibration else shipped_calibration(backend)
        base.check_settings(backend, asdict(settings), "these settings")
    from pibench.calibration.microbench import calibrate

    data = calibrate(backend, settings, progress, base.file if base else None)
    path = write_record(args.out, data)
    print(json.dumps({"calibration": str(path), "backend": backend, "settings": data.settings}, indent=1))
    return 0


def _extend(args: argparse.Namespace, backend: str, settings: Any, progress: Any) -> int:
    from dataclasses import asdict

    from pibench.calibration.fit import load_calibration
    from pibench.calibration.microbench import extend

    base = load_calibration(args.extend)
    base.check_settings(backend, asdict(settings), "these settings")
    data, measured = extend(base.file, settings, progress)
    path = write_record(args.out, data.model_dump(mode="json", exclude_none=True))  # the file's fields as they were
    print(json.dumps({"calibration": str(path), "extended": args.extend, "measured": measured}, indent=1))
    return 0
