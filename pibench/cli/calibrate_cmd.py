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
Bytes and rounds are fitted exactly (they are deterministic); seconds are fitted to GPT-2-sized
samples on this machine. The file records the settings and the machine (its fingerprint: CPU, cores,
threads, device, local products); predictions say when their time model comes from another machine.
With the defaults it rebuilds the calibration shipped in pibench/data/calibration-crypten-default.json
(about 6 minutes); --quick refits only the seconds of an existing one on this machine (2-3 minutes);
--extend FILE measures only what FILE lacks (the argmax, or a suite's vocabulary: a minute).
The argmax is tabulated at vocabulary sizes (2 to 50257, and the --suite's vocab).
"""
MAX_ROW_LENGTH = 8192


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=BACKENDS.names(), default=None, help=f"default: the suite's, else {DEFAULT_BACKEND}"
    )
    parser.add_argument("--out", default="calibration.json", help="calibration file to write (a regular file)")
    parser.add_argument("--force", action="store_true", help="replace an existing file at --out")
    parser.add_argument("--suite", help="take the backend and its settings from this suite (default: its defaults)")
    parser.add_argument("--max-row-length", type=int, default=1024, help="longest softmax row (T) to tabulate")
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
        help="keep FILE's models and measure here only what it lacks (a call it has no model for, the argmax "
        "at the suite's vocabulary); each added model says when and where it was measured",
    )


def main(args: argparse.Namespace) -> int:
    if not 1 <= args.max_row_length <= MAX_ROW_LENGTH:
        raise PibenchError(f"--max-row-length must be 1 to {MAX_ROW_LENGTH}, not {args.max_row_length}")
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
    from pibench.models.opkinds import ARGMAX_LENGTHS

    lengths = sorted(
        {*ARGMAX_LENGTHS, *([suite.entries[0].config.vocab] if suite and suite.scope == "end_to_end" else [])}
    )
    progress = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.extend:
        return _extend(args, backend, settings, lengths, progress)
    base = None
    if args.quick:
        from dataclasses import asdict

        from pibench.calibration.fit import load_calibration, shipped_calibration

        base = load_calibration(args.calibration) if args.calibration else shipped_calibration(backend)
        base.check_settings(backend, asdict(settings), "these settings")
    from pibench.calibration.microbench import calibrate

    data = calibrate(backend, settings, args.max_row_length, progress, base.file if base else None, lengths)
    path = write_record(args.out, data)
    print(json.dumps({"calibration": str(path), "backend": backend, "settings": data.settings}, indent=1))
    return 0


def _extend(args: argparse.Namespace, backend: str, settings: Any, lengths: list[int], progress: Any) -> int:
    from dataclasses import asdict

    from pibench.calibration.fit import load_calibration
    from pibench.calibration.microbench import extend

    base = load_calibration(args.extend)
    base.check_settings(backend, asdict(settings), "these settings")
    data, measured = extend(base.file, settings, lengths, progress)
    path = write_record(args.out, data.model_dump(mode="json", exclude_none=True))  # the file's fields as they were
    print(json.dumps({"calibration": str(path), "extended": args.extend, "measured": measured}, indent=1))
    return 0
