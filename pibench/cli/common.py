"""Options and endings shared by the subcommands that run parties (`run`, `party`)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pibench.measuring.measured import Measured, RunInfo
from pibench.results.records import (
    RecordNotBuilt,
    RecordNotWritten,
    build_record,
    default_record_path,
    keep_elsewhere,
    write_record,
)
from pibench.suites.loader import Suite
from pibench.util.errors import PibenchError, did_you_mean

MAX_TIMEOUT_S = 86_400.0
# Parties tell each other they are alive every second; a timeout of a few seconds would read a busy
# second as a stopped peer (joining waits at least `pibench.measuring.peers.STARTUP_GRACE_S`).
MIN_TIMEOUT_S = 5.0
UNUSABLE_EXIT = 3  # the run completed, but a variant's MPC output is unusable (see --accept-unusable)


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, from MIN_TIMEOUT_S to a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text[:40]}' is not a number of seconds") from None
    if not math.isfinite(value) or not MIN_TIMEOUT_S <= value <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(
            f"must be from {MIN_TIMEOUT_S:g} to {MAX_TIMEOUT_S:g} seconds, not {text[:40]} (a party's heartbeat "
            "is every second; joining waits at least 15 s for start-up)"
        )
    return value


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", metavar="NAME", help="run under this backend instead of the suite's `backend:`")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), help="where the parties' tensors live (backends that have the setting)"
    )


def add_out_options(parser: argparse.ArgumentParser, default: str) -> None:
    """--out and --force, for commands that write a record."""
    parser.add_argument(
        "--out",
        help=f"record path, a regular file (default: {default}, never overwriting one); a symbolic link there is "
        "replaced by the record, its target left as it is",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing file at --out")


def repeats(text: str) -> int:
    """An argparse type: runs of each measured step, 1 to MAX_REPEATS."""
    from pibench.suites.loader import MAX_REPEATS

    if not text.isdigit() or not 1 <= int(text) <= MAX_REPEATS:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_REPEATS}, not '{text[:20]}'")
    return int(text)


def add_run_options(parser: argparse.ArgumentParser, timeout_s: float, timeout_help: str) -> None:
    add_backend_option(parser)
    parser.add_argument(
        "--repeats",
        type=repeats,
        metavar="N",
        help="run each measured step N times: times are medians, the spread is recorded "
        "(default: the suite's `repeats`, else the backend's: 3 for CrypTen, 1 for SPU)",
    )
    parser.add_argument("--full", action="store_true", help="measure every layer instead of one per layer kind")
    add_out_options(parser, "results/SUITE-TIME.json")
    parser.add_argument("--timeout", type=seconds, default=timeout_s, metavar="S", help=timeout_help)
    parser.add_argument(
        "--accept-unusable",
        action="store_true",
        help=f"exit 0 even when a variant's MPC output is unusable (else exit {UNUSABLE_EXIT} after the record)",
    )


def record_path(args: argparse.Namespace, suite_name: str) -> tuple[Path, bool]:
    """Where the record goes, and whether the name is ours to make unique (no --out)."""
    return (Path(args.out), False) if args.out else (default_record_path(suite_name), True)


def say_record(path: Path) -> None:
    """ "record: PATH" on stderr, after what stdout holds (the table first where both go to one place)."""
    sys.stdout.flush()
    print(f"record: {path}", file=sys.stderr)


def write_or_keep(path: Path, record: BaseModel, unique: bool) -> tuple[Path, str | None]:
    """Write `record` to `path`; where that fails, keep it elsewhere (`keep_elsewhere`) and return, with
    the path asked for, the one-line error that says where it went (to raise after the table)."""
    try:
        return write_record(path, record, exclusive=unique), None
    except RecordNotWritten as err:
        return path, f"{err}; the record is saved in {keep_elsewhere(path, record, 'unsaved')}"


def finish(suite: Suite, measured: list[Measured], run: RunInfo, args: argparse.Namespace) -> int:
    """Make and write the run's record, print its report, and say (exit UNUSABLE_EXIT) which outputs
    are unusable. A measurement whose record cannot be made or written is kept elsewhere
    (`keep_elsewhere`), the table is still printed where the record is valid, and the one-line error
    says where the measurement went."""
    path, unique = record_path(args, suite.name)
    try:
        record = build_record(suite, measured, run)
    except RecordNotBuilt as err:
        kept = keep_elsewhere(path, err.data, "invalid")
        raise PibenchError(f"{err}; what was measured is saved in {kept}") from None
    path, lost = write_or_keep(path, record, unique)
    from pibench.cli.report_cmd import emit_report

    emit_report([(str(path), record)], args)
    if lost:
        raise PibenchError(lost)
    say_record(path)
    bad = [v for v in record.variants if not v.measured.usable]
    if bad and not args.accept_unusable:
        names = ", ".join(
            f"{v.name} (max error {v.measured.max_abs_error:.3g})" if v.measured.max_abs_error is not None else v.name
            for v in bad
        )
        print(
            f"pibench: error: unusable MPC output: {names}; the record is flagged (--accept-unusable to accept)",
            file=sys.stderr,
        )
        return UNUSABLE_EXIT
    return 0


def refuse_late_failures(suite: Any, args: argparse.Namespace) -> None:
    """What would otherwise fail only after the parties ran, checked before they start."""
    from pibench.counting.network import parse_profile
    from pibench.measuring.runner import check_before_run
    from pibench.results.records import check_folder, check_writable
    from pibench.results.tables import parse_columns

    check_writable(record_path(args, suite.name)[0], force=args.force)
    if args.plot:
        check_folder(args.plot, "--plot")
    for name in args.network or []:
        parse_profile(name)
    parse_columns(args.columns)
    names = [e.name for e in suite.entries]
    if args.baseline and args.baseline not in {*names, *(e.variant.name for e in suite.entries)}:
        raise PibenchError(
            f"--baseline '{args.baseline[:40]}' is not a variant of suite '{suite.name}'"
            f"{did_you_mean(args.baseline, names)}; its variants: {', '.join(names)}"
        )
    check_before_run(suite, args.full)
