"""`pibench party`: one party of a 2PC run, for running the parties on two hosts.

    host A:  pibench party --rank 0 --rendezvous tcp://A:29500 suites/smoke.yaml   (server, writes the record)
    host B:  pibench party --rank 1 --rendezvous tcp://A:29500 suites/smoke.yaml   (client)
With `crypten.provider: TTP`, a third process runs `--rank 2`. Rank 0 listens on the rendezvous
port; give both the same suite file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from typing import Any

from pibench.cli.report_cmd import add_report_options, emit_report
from pibench.errors import PibenchError
from pibench.suite import load_suite

HELP = "run one party of a 2PC run (for two hosts); `pibench run` starts both on localhost"
EPILOG = __doc__.split("\n", 2)[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rank", type=int, choices=(0, 1, 2), required=True, help="0 server, 1 client, 2 TTP")
    parser.add_argument("--rendezvous", required=True, metavar="tcp://HOST:PORT", help="address of rank 0")
    parser.add_argument("suite", help="suite YAML file (the same on every host)")
    parser.add_argument("--full", action="store_true", help="measure every layer instead of a sample")
    parser.add_argument("--out", help="record path, rank 0 (default: results/SUITE-TIME.json)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S", help="longest wait for another party")
    parser.add_argument("--events", action="store_true", help=argparse.SUPPRESS)  # JSON lines for `pibench run`
    add_report_options(parser)


def main(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"tcp://[^\s:/]+:\d{1,5}", args.rendezvous):
        raise PibenchError(f"--rendezvous '{args.rendezvous}' is not of the form tcp://HOST:PORT")
    suite = load_suite(args.suite)
    if not getattr(args, "debug", False):  # torch.distributed's C++ logs would bury our one-line errors
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    from pibench.mpc.party import ROLES, PartyOptions, run_party, run_ttp

    opts = PartyOptions(args.rank, args.rendezvous, suite, full=args.full, timeout_s=args.timeout)
    if args.rank == 2:
        run_ttp(opts)
        return 0
    state = {"variant": "(start-up)", "start": time.monotonic()}
    lock = threading.Lock()  # a watchdog thread emits too

    def emit(event: dict[str, Any]) -> None:
        if event.get("event") == "variant":
            state["variant"] = event["variant"]
        if args.events:
            with lock:
                print(json.dumps(event), flush=True)
        elif event.get("event") in ("variant", "step"):
            what = event.get("step", "started")
            print(f"[{time.monotonic() - state['start']:7.1f} s] {event['variant']}: {what}", file=sys.stderr)

    try:
        measured = run_party(opts, emit)
    except RuntimeError as err:  # torch.distributed: the other party vanished or timed out
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PibenchError(
            f"party {args.rank} ({ROLES[args.rank]}) lost the other party during variant '{state['variant']}': {first}"
        ) from None
    if args.events or args.rank != 0:
        return 0
    from pibench.results import default_record_path, write_record
    from pibench.runner import build_record

    record = build_record(
        suite,
        measured,
        mode="party",
        full=args.full,
        rendezvous=args.rendezvous,
        network="as given by --rendezvous",
        timeout_s=args.timeout,
        elapsed_s=time.monotonic() - state["start"],
    )
    path = write_record(args.out or default_record_path(suite.name), record)
    emit_report([(str(path), record)], args)
    print(f"record: {path}", file=sys.stderr)
    return 0
