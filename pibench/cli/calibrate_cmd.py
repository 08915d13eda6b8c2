"""`pibench calibrate`: measure every CrypTen operation kind and fit the cost model behind `cost --predict`."""

from __future__ import annotations

import argparse
import json
import sys

from pibench.errors import PibenchError
from pibench.mpc.settings import CrypTenSettings
from pibench.results import write_record
from pibench.suite import load_suite

HELP = "microbenchmark CrypTen's operations and fit the model behind `pibench cost --predict`"
EPILOG = """\
Bytes and rounds are fitted exactly (they are deterministic); seconds are fitted to GPT-2-sized
samples on this machine. The file records the settings and the machine. With the defaults it
rebuilds the calibration shipped in pibench/data/calibration-crypten-default.json (about 5 minutes).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("crypten",), default="crypten")
    parser.add_argument("--out", default="calibration.json", help="calibration file to write")
    parser.add_argument("--suite", help="take the CrypTen settings from this suite (default: CrypTen's defaults)")
    parser.add_argument("--max-row-length", type=int, default=1024, help="longest softmax row (T) to tabulate")


def main(args: argparse.Namespace) -> int:
    if args.max_row_length < 1:
        raise PibenchError(f"--max-row-length must be at least 1, not {args.max_row_length}")
    settings = load_suite(args.suite).crypten if args.suite else CrypTenSettings()
    from pibench.calibration import calibrate

    data = calibrate(settings, args.max_row_length, progress=lambda m: print(m, file=sys.stderr, flush=True))
    path = write_record(args.out, data)
    print(json.dumps({"calibration": str(path), "settings": data["settings"]}, indent=1))
    return 0
