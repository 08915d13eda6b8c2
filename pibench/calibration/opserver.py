"""An op server: one party of a backend that runs single operations on request, for calibration and
the op benchmarks (`pibench.calibration.microbench.OpPair` starts and drives a pair of them).

    python -m pibench.calibration.opserver --backend crypten --rank R --rendezvous tcp://HOST:PORT

Reads one JSON request per line on stdin, {"op": CALL, "shapes": [[...], ...]} (`opkinds.CALLS`),
runs it on fresh random operands (the first shared by the client, the others by the server as its
weights, or by the client where the call's operands are all activations) and
answers one JSON line: this party's bytes sent, rounds, round trips, seconds and seconds in exchanges
(the call's own), and those of the pools' refills that fell in it (SPU's; zero elsewhere).
{"op": "exit"} or the end of stdin stops it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import TypeAdapter

from pibench.backends import BACKENDS
from pibench.backends.base import Rendezvous
from pibench.models.opkinds import CALLS, operand_shapes


def serve(backend_name: str, rank: int, rendezvous: Rendezvous, settings_json: str, timeout_s: float) -> None:
    import torch

    backend = BACKENDS.get(backend_name)
    settings: Any = TypeAdapter(backend.settings_type).validate_python(json.loads(settings_json))
    if rank not in (0, 1):
        backend.serve_dealer(rank, rendezvous, settings, timeout_s, lambda event: None)
        return
    session = backend.session(rank, rendezvous, settings, timeout_s)
    gen = torch.Generator().manual_seed(0)  # both parties draw the same operands; each shares its own
    try:
        for line in sys.stdin:
            request = json.loads(line)
            if request.get("op") == "exit":
                break
            call = CALLS[request["op"]]
            first, *rest = [torch.randn(*s, generator=gen) for s in operand_shapes(call.name, request["shapes"])]
            if call.weights:  # the others are the server's weights
                weights = {str(i): w for i, w in enumerate(rest)}
                specs = {k: tuple(w.shape) for k, w in weights.items()}
                w, x = session.share(
                    weights if rank == 0 else None, specs, first if rank == 1 else None, tuple(first.shape)
                )
            else:  # every operand is a secret of the client's
                w = {}
                for i, value in enumerate(rest):
                    _, w[str(i)] = session.share(None, {}, value if rank == 1 else None, tuple(value.shape))
                _, x = session.share(None, {}, first if rank == 1 else None, tuple(first.shape))

            def step(ops: Any, w: Any, x: Any, call: Any = call, n: int = len(rest)) -> Any:
                return call.run(ops, [x, *(w[str(i)] for i in range(n))])

            _, counts = session.measure(step, w, x)
            total, refills = counts.total(), counts.by_kind["refills"]
            reply = {  # the call's own figures; its pools' refills apart (SPU's, `spu.session.own_and_refills`)
                "bytes": total.sent - refills.sent,
                "rounds": total.rounds - refills.rounds,
                # a backend that does not tell them apart: rounds
                "round_trips": (total.round_trips or total.rounds) - (refills.round_trips or refills.rounds),
                "wall_s": counts.wall_s,
                "comm_s": total.comm_s,
                "refills": {"bytes": refills.sent, "rounds": refills.rounds, "round_trips": refills.rounds},
            }
            print(json.dumps(reply), flush=True)
    finally:
        session.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", required=True)
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--rendezvous", required=True)
    ap.add_argument("--listen-fd", type=int)
    ap.add_argument("--settings", default="{}", help="the backend's settings as JSON")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    serve(args.backend, args.rank, Rendezvous(args.rendezvous, args.listen_fd), args.settings, args.timeout)


if __name__ == "__main__":
    main()
