"""Per-operation CrypTen microbenchmarks: a pair of long-lived parties that run one operation of
the interpreter on request and report its bytes, rounds and seconds.

    pair = OpPair(); pair.run("softmax", [12, 128, 128]) -> {"bytes": ..., "rounds": ..., "wall_s": ...}

Each party is `python -m pibench.mpc.opbench --rank R --rendezvous URL`, reading one JSON request
per line on stdin and answering one JSON line on stdout; both run every request together. Used by
the pytest-benchmark benchmarks in bench/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from pydantic import TypeAdapter

from pibench.mpc.meter import Meter
from pibench.mpc.settings import CrypTenSettings

# Requests name one of these; "mul", "linear" and "attn_matmul" also give the second operand's shape.
OPERATIONS = ("softmax", "layernorm", "gelu", "relu", "mul", "linear", "attn_matmul")


def _serve(rank: int, rendezvous: str, settings: CrypTenSettings) -> None:
    import torch

    from pibench.mpc.crypten_ops import CrypTenOps
    from pibench.mpc.party import WORLD_SIZE, start_crypten

    torch.set_num_threads(1)
    crypten = start_crypten(rank, rendezvous, settings, timeout_s=60)
    comm = crypten.communicator.get()
    meter = Meter(rank, WORLD_SIZE)
    meter.attach(comm)
    ops = CrypTenOps(meter, settings.gelu)
    gen = torch.Generator().manual_seed(0)

    def secret(shape: list[int]) -> Any:
        return crypten.cryptensor(torch.randn(*shape, generator=gen), src=0)

    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") == "exit":
            break
        op, shape, other = request["op"], request["shape"], request.get("other")
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}; one of {OPERATIONS}")
        x = secret(shape)
        y = secret(other) if other else None
        meter.reset()
        start = time.perf_counter()
        if op == "layernorm":
            ops.layernorm(x, secret(shape[-1:]), secret(shape[-1:]))
        elif op in ("linear", "attn_matmul"):
            ops.matmul(x, y, "attn.proj" if op == "linear" else "attn.scores")
        elif op == "mul":
            ops.mul(x, y)
        else:
            getattr(ops, op)(x)
        wall = time.perf_counter() - start
        total = meter.total()
        reply = {"bytes": total.sent, "rounds": total.rounds, "wall_s": wall, "comm_s": total.comm_s}
        print(json.dumps(reply), flush=True)
    crypten.uninit()


class OpPair:
    """Two party processes on 127.0.0.1 serving operation requests; close() ends them by PID."""

    def __init__(self, settings: CrypTenSettings | None = None) -> None:
        from pibench.runner import free_port

        rendezvous = f"tcp://127.0.0.1:{free_port()}"
        self.settings = settings or CrypTenSettings()
        cmd = [sys.executable, "-m", "pibench.mpc.opbench", "--rendezvous", rendezvous]
        cmd += ["--settings", json.dumps(self.settings.as_dict()), "--rank"]
        self.procs = [
            subprocess.Popen([*cmd, str(r)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for r in (0, 1)
        ]

    def run(self, op: str, shape: list[int], other: list[int] | None = None) -> dict[str, float]:
        """Run `op` once on both parties: bytes sent by both, rounds and seconds of the busier."""
        request = json.dumps({"op": op, "shape": shape, "other": other}) + "\n"
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(request)
            p.stdin.flush()
        replies = []
        for p in self.procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"operation party exited with code {p.wait(timeout=10)}")
            replies.append(json.loads(line))
        return {
            "bytes": replies[0]["bytes"] + replies[1]["bytes"],
            "rounds": max(r["rounds"] for r in replies),
            "wall_s": max(r["wall_s"] for r in replies),
            "comm_s": max(r["comm_s"] for r in replies),
        }

    def close(self) -> None:
        from pibench.runner import kill_tree

        for p in self.procs:
            try:
                if p.stdin:
                    p.stdin.write(json.dumps({"op": "exit"}) + "\n")
                    p.stdin.close()
                p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
            kill_tree(p.pid)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--rendezvous", required=True)
    ap.add_argument("--settings", default="{}", help="CrypTenSettings as JSON")
    args = ap.parse_args()
    _serve(args.rank, args.rendezvous, TypeAdapter(CrypTenSettings).validate_python(json.loads(args.settings)))
