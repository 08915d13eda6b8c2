"""What SPU's op-by-op execution costs against one compiled program per pass, for a generation.

    python bench/spu_programs.py                      # SM + LN + G, L=1, d=256, T=32, vocab 1024
    python bench/spu_programs.py --d 768 --heads 12   # GPT-2's width (several minutes on 2 cores)

pibench's SPU session compiles and runs every `Ops` call as its own SPU program (`SpuOps`), so that
each call's traffic is attributed to its operation kind. A deployment would compile a whole pass as
one program. Both run here on the same shares, end to end (`pibench.models.definition.step`: the
embedding lookup of one-hot rows, the layers, the logits and the argmax), through the same JAX
operations (`JaxOps`): the prefill over T prompt positions, then decode steps with a KV cache whose
keys and values are the program's inputs and outputs. Printed per pass and mode: bytes both parties
sent, SPU's recv actions (messages waited for) and send actions of the busier party, SPU programs
run, and seconds. The two modes alternate (op, program, op, program), each on a cache of its own.
Figures go in the docs, with the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTY = """
import json, sys, time
import numpy as np, torch
from pibench.backends.base import Rendezvous
from pibench.backends.spu.jaxops import JaxOps
from pibench.backends.spu.session import SPUSession
from pibench.backends.spu.settings import SPUSettings
from pibench.models.definition import KVCache, param_specs, step
from pibench.models.plaintext import TorchModel
from pibench.models.variants import resolve

rank, args = int(sys.argv[1]), json.loads(sys.argv[3])
session = SPUSession(rank, Rendezvous(sys.argv[2]), SPUSettings(), 300.0)
dims = {"L": args["layers"], "H": args["heads"], "d": args["d"], "T": args["T"]}
cfg = resolve(args["variant"], dims).replace(new_tokens=args["tokens"], scope="end_to_end", vocab=args["vocab"])
with torch.no_grad():
    w = {n: v.detach() for n, v in TorchModel(cfg, seed=1).effective_weights().items()}
ids = torch.randint(0, cfg.vocab, (cfg.T,), generator=torch.Generator().manual_seed(2))
prompt = torch.nn.functional.one_hot(ids, cfg.vocab).float()
specs = {n: s.shape for n, s in param_specs(cfg).items()}
secret, tokens = session.share(w if rank == 0 else None, specs, prompt if rank == 1 else None, (cfg.T, cfg.vocab))
names, layers = list(secret), range(cfg.L)


def program(ops, weights, x, cache):
    # the whole pass as one SPU program: weights, input and the cache's tensors in; output and cache out
    held = [i for i in layers if i in cache.keys]
    inputs = [weights[n] for n in names] + [x] + [cache.keys[i] for i in held] + [cache.values[i] for i in held]

    def whole(*a):
        w_ = dict(zip(names, a[: len(names)]))
        k = dict(zip(held, a[len(names) + 1 : len(names) + 1 + len(held)]))
        v = dict(zip(held, a[len(names) + 1 + len(held) :]))
        mine = KVCache(k, v, dict(cache.lengths), cache.positions)
        chosen, _ = step(JaxOps(), w_, a[len(names)], cfg, mine)
        return (chosen, *(mine.keys[i] for i in layers), *(mine.values[i] for i in layers))

    past = cache.positions
    out = session.call("other", f"pass@{past}", whole, *inputs)
    for i in layers:
        cache.keys[i], cache.values[i] = out[1 + i], out[1 + cfg.L + i]
        cache.lengths[i] = cache.past(i) + x.shape[0]
    cache.positions = past + x.shape[0]
    return out[0]


def op_by_op(ops, weights, x, cache):
    return step(ops, weights, x, cfg, cache)[0]


def generate(run, label):
    cache, x, passes = KVCache(), tokens, []
    for _ in range(cfg.new_tokens):
        y, counts = session.measure(lambda ops, w_, h: run(ops, w_, h, cache), secret, x)
        total = counts.total()
        passes.append(
            {
                "mode": label,
                "context": cache.positions,  # positions seen, after the pass
                "sent": total.sent,
                "received": total.received,
                "recv_actions": total.rounds,
                "send_actions": counts.own["spu_send_actions"],
                "programs": counts.own["spu_programs"],
                "wall_s": counts.wall_s,
            }
        )
        x = y
    return passes, int(session.reveal(x).argmax())


generate(op_by_op, "warm-up")  # SPU sets up its OT and HE keys on the first operations
out = []
for _ in range(args["repeats"]):
    for run, label in ((op_by_op, "op by op"), (program, "one program")):
        passes, last = generate(run, label)
        out.append({"passes": passes, "token": last})
print(json.dumps({"rank": rank, "out": out}))
session.close()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="sm_ln_g")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--T", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=3, help="the prefill and tokens-1 decode steps")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", metavar="FILE", help="also write both parties' passes to FILE")
    args = parser.parse_args()

    from pibench.util.procs import free_port
    from tests.conftest import run_together

    url = f"tcp://127.0.0.1:{free_port()},tcp://127.0.0.1:{free_port()}"
    given = json.dumps(vars(args))
    parties = run_together([[sys.executable, "-c", PARTY, str(r), url, given] for r in (0, 1)], args.timeout)
    if [rc for rc, _, _ in parties] != [0, 0]:
        print("\n".join(err[-3000:] for _, _, err in parties), file=sys.stderr)
        return 1
    runs = [json.loads(out.strip().splitlines()[-1])["out"] for _, out, _ in parties]
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "parties": runs}, indent=1))
    from tabulate import tabulate

    rows = []
    for r0, r1 in zip(*runs, strict=True):
        for n, (p0, p1) in enumerate(zip(r0["passes"], r1["passes"], strict=True)):
            rows.append(
                [
                    p0["mode"],
                    "prefill" if n == 0 else f"decode {n}",
                    p0["context"],
                    f"{(p0['sent'] + p1['sent']) / 1e6:.3f}",
                    max(p0["recv_actions"], p1["recv_actions"]),
                    max(p0["send_actions"], p1["send_actions"]),
                    p0["programs"],
                    f"{max(p0['wall_s'], p1['wall_s']):.2f}",
                    r1["token"] if n == len(r0["passes"]) - 1 else "",
                ]
            )
    print(f"{args.variant}, L={args.layers}, H={args.heads}, d={args.d}, T={args.T}, vocab {args.vocab}, SPU CHEETAH")
    headers = ["mode", "pass", "t", "MB (both)", "recv actions", "send actions", "programs", "s", "token"]
    print(tabulate(rows, headers=headers, disable_numparse=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
