"""`pibench party`: one party of a 2PC run, for running the parties on two hosts.

    host A:  pibench party --rank 0 --rendezvous tcp://A:29500 suites/smoke.yaml   (server, writes the record)
    host B:  pibench party --rank 1 --rendezvous tcp://A:29500 suites/smoke.yaml   (client)
With `crypten.provider: TTP`, a third process runs `--rank 2`. Rank 0 listens on the rendezvous
address and nowhere else; give every host the same suite (the parties compare a digest of it and
stop if they differ).
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

from pibench.cli.common import add_run_options, finish, refuse_late_failures
from pibench.cli.report_cmd import add_report_options
from pibench.measuring.measured import RunInfo
from pibench.measuring.peers import SECRET_ENV, check_listen_host, load_secret
from pibench.suites.loader import Suite, load_suite
from pibench.util.errors import PibenchError

HELP = "run one party of a 2PC run (for two hosts); `pibench run` starts all parties on localhost"
EPILOG = __doc__.split("\n", 2)[2]
MAX_STDIN = 1 << 20  # what `pibench run` sends a party: the suite's text and its settings
ADDRESS = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]{1,253}):(\d{1,5})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rank", type=int, required=True, help="0 server, 1 client, 2 TTP (CrypTen's TTP provider)")
    parser.add_argument(
        "--rendezvous",
        required=True,
        metavar="tcp://HOST:PORT",
        help="rank 0's address (it listens there for pibench's authenticated channel); more addresses, "
        "comma-separated, give ranks 1, 2, ... the address their end of the backend's transport listens on "
        "(spu: each party's link; default: a free port on the address that reaches rank 0)",
    )
    parser.add_argument("suite", help="suite YAML file (the same on every host)")
    add_run_options(parser, 60.0, "longest silence of another party before this one gives up")
    parser.add_argument(
        "--secret-file",
        metavar="FILE",
        help=f"the run's shared secret, the same file on every host (else ${SECRET_ENV}; never on the command line)",
    )
    parser.add_argument(
        "--listen-on-all-interfaces",
        action="store_true",
        help="let a rendezvous host of 0.0.0.0 or :: listen on every interface (refused otherwise)",
    )
    parser.add_argument("--events", action="store_true", help=argparse.SUPPRESS)  # JSON lines for `pibench run`
    parser.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # rank 0's socket from `pibench run`
    # a warm worker of a sweep's local executor: one run per line of stdin (`pibench.measuring.workers`)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    add_report_options(parser)


def _suite(args: argparse.Namespace) -> Suite:
    """The suite file, or (`-`, from `pibench run`) the validated text the runner sends on stdin."""
    if args.suite != "-":
        return load_suite(args.suite, backend=args.backend, device=args.device, repeats=args.repeats)
    return _sent_suite(args, sys.stdin.readline(MAX_STDIN))


def _sent_suite(args: argparse.Namespace, line: str) -> Suite:
    """The suite `pibench run` sends a party (one JSON line: the validated text, its digest, the run's
    secret and the user's variant files), checked against its digest; the secret goes to `args`."""
    try:
        given = json.loads(line)
        path, text, digest = given["path"], given["text"], given["digest"]
        backend, device, repeats = given["backend"], given["device"], given["repeats"]
        args.secret = str(given["secret"]).encode()
        include = [str(p) for p in given.get("include", [])]
    except (ValueError, TypeError, KeyError):
        raise PibenchError("suite '-': stdin holds no suite as `pibench run` sends it; give a suite file") from None
    from pibench.models.plugins import include as load_include

    load_include(include)  # the user's variants, as `pibench run` loaded them
    suite = load_suite(path, text=text, backend=backend, device=device, repeats=repeats)
    if suite.digest != digest:
        raise PibenchError("the suite sent by pibench run does not match its digest")
    return suite


def _emitter(args: argparse.Namespace, state: dict[str, Any]) -> Any:
    lock = threading.Lock()  # a watchdog thread emits too

    def emit(event: dict[str, Any]) -> None:
        if event.get("event") == "variant":
            state["variant"] = event["variant"]
        if args.events:
            with lock:
                print(json.dumps(event), flush=True)
        elif event.get("event") in ("variant", "step"):
            what = event.get("step", "started")
            if event.get("passes", 1) > 1:
                what += f" (pass {event['pass']} of {event['passes']})"
            print(f"[{time.monotonic() - state['start']:7.1f} s] {event['variant']}: {what}", file=sys.stderr)

    return emit


def _checked(args: argparse.Namespace, suite: Suite | None = None) -> tuple[Suite, Any, dict[int, str]]:
    """The suite (read as the arguments say, unless given), its backend and the backend's ranks, with every
    argument checked."""
    from pibench.backends import BACKENDS

    matches = [ADDRESS.fullmatch(a) for a in args.rendezvous.split(",")]
    if len(matches) > 8 or not all(m and 0 < int(m.group(2)) < 65536 for m in matches):
        raise PibenchError(
            f"--rendezvous '{args.rendezvous[:80]}' is not of the form tcp://HOST:PORT "
            "(or one per rank, comma-separated)"
        )
    suite = suite or _suite(args)
    backend = BACKENDS.get(suite.backend)
    roles = backend.ranks(suite.settings)
    if args.rank not in roles:
        raise PibenchError(
            f"--rank {args.rank}: backend {backend.name} with these settings has ranks "
            f"{', '.join(f'{r} ({role})' for r, role in roles.items())}"
        )
    listens = [m.group(1).strip("[]") for r, m in enumerate(matches) if r == args.rank and m]
    for host in listens:  # this rank's own address: refused at once rather than after start-up
        check_listen_host(host, args.listen_on_all_interfaces)
    if args.suite != "-":
        args.secret = load_secret(args.secret_file)
    elif args.secret_file:
        raise PibenchError("--secret-file: a run started by `pibench run` gets its secret from pibench run")
    if args.rank == 0 and not args.events:
        refuse_late_failures(suite, args)
    return suite, backend, roles


def _run_info(args: argparse.Namespace, suite: Suite, roles: dict[int, str], elapsed_s: float) -> RunInfo:
    """The record's `run` section of a party-mode run."""
    return RunInfo(
        mode="party",
        full=args.full,
        seed=suite.seed,
        project=[p.name for p in suite.project],
        rendezvous=args.rendezvous,
        network="as given by --rendezvous",
        emulated=None,
        timeout_s=args.timeout,
        elapsed_s=round(elapsed_s, 3),
        ranks={str(r): role for r, role in roles.items()},
        dealer=None,
        accepted_unusable=args.accept_unusable,
        warm_parties=False,
    )


def _serve(args: argparse.Namespace) -> int:
    """A warm party (`pibench.measuring.workers`): each line of stdin is one run, as `pibench run` sends a
    party its suite, with where to meet: rank 0 listens on a fresh port of the given host and says where
    ("listening"), the others join the rendezvous given. A run ends with a "done" event, and the worker
    waits for the next; the end of stdin ends it. Any error ends the worker as it ends a party."""
    from pibench.util.procs import listening_socket

    if args.suite != "-" or not args.events:
        raise PibenchError("--serve is for pibench's own runner: suite '-' and --events")
    while True:
        line = sys.stdin.readline(MAX_STDIN)
        if not line.strip():
            return 0
        given = json.loads(line)
        args.full, args.timeout = bool(given["full"]), float(given["timeout"])  # this run's
        if args.rank == 0:  # a socket of its own, handed to the run (which closes it) as `pibench run` hands one
            listener = listening_socket(str(given["listen"]), 0)
            args.rendezvous = f"tcp://{given['listen']}:{listener.getsockname()[1]}"
            args.listen_fd = listener.detach()
            print(json.dumps({"event": "listening", "rendezvous": args.rendezvous}), flush=True)
        else:
            args.rendezvous, args.listen_fd = str(given["rendezvous"]), None
        _run(args, *_checked(args, _sent_suite(args, line)))
        print(json.dumps({"event": "done"}), flush=True)


def main(args: argparse.Namespace) -> int:
    if args.serve:
        return _serve(args)
    return _run(args, *_checked(args))


def _run(args: argparse.Namespace, suite: Suite, backend: Any, roles: dict[int, str]) -> int:
    """One run as party `args.rank`: join the others, run every variant, and (rank 0 of a run of its own)
    write the record."""
    from pibench.backends.base import Rendezvous

    if not getattr(args, "debug", False):  # torch.distributed's C++ logs would bury our one-line errors
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    state: dict[str, Any] = {"variant": "(start-up)", "start": time.monotonic()}
    emit = _emitter(args, state)
    rendezvous = Rendezvous(args.rendezvous, args.listen_fd)
    from pibench.measuring.party import PartyOptions, describe_run, join_run, run_party

    opts = PartyOptions(
        args.rank,
        rendezvous,
        suite,
        secret=args.secret,
        full=args.full,
        timeout_s=args.timeout,
        allow_wildcard=args.listen_on_all_interfaces,
    )
    if args.rank >= 2:  # a dealer joins the channel too, so that its silence is noticed and named
        backend.load()
        peers, transport = join_run(backend, opts, describe_run(suite, args.full, backend.passes(suite.repeats)))
        peers.doing = "dealing triples"
        try:
            backend.serve_dealer(args.rank, transport, suite.settings, args.timeout, emit)
        finally:
            peers.close()
        return 0
    try:
        measured = run_party(backend, opts, emit)
    except RuntimeError as err:  # torch.distributed: the other party vanished or timed out
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PibenchError(
            f"party {args.rank} ({roles[args.rank]}) lost the other party during variant '{state['variant']}': {first}"
        ) from None
    if args.events or args.rank != 0:
        return 0
    return finish(suite, measured, _run_info(args, suite, roles, time.monotonic() - float(state["start"])), args)
