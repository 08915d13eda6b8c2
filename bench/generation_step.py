"""What one generated token costs under CrypTen at GPT-2 size, end to end, by part, with reused and
with fresh weight masks: the interpreters of `pibench.models.definition`, ahead of `pibench run`.

    python bench/generation_step.py            # two CrypTen parties on 127.0.0.1, about a minute

One GPT-2 layer (SM + LN + G, d=768, H=12) runs the prefill over T=128 positions, then two decode
steps (contexts 129 and 130); around it, the head of the end-to-end scope: the embedding lookup of a
one-hot row (vocab 50257), the final LayerNorm, the tied LM head and the argmax. Printed per part:
bytes (CrypTen's counter: sent and received, one party), rounds and seconds of the second decode step,
and the prefill's, for `weight_masks: reuse` and `fresh`. Figures go in the notes, with the machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = """
import time
from pibench.backends.crypten.interpreter import CrypTenOps
from pibench.backends.crypten.masks import WeightMasks
from pibench.backends.crypten.meter import Meter
from pibench.backends.crypten import products
from pibench.models.definition import KVCache, embed, head, layer
from pibench.models.plaintext import TorchModel
from pibench.models.variants import resolve
products.install("auto")
crypten.cfg.communicator.verbose = True
comm = crypten.communicator.get()
cfg = resolve("sm_ln_g", {"L": 1, "H": 12, "d": 768, "T": 128}).replace(new_tokens=3, scope="end_to_end")
with torch.no_grad():
    w = {n: v.detach() for n, v in TorchModel(cfg, seed=1).effective_weights().items()}
secret = {n: crypten.cryptensor(v, src=0) for n, v in w.items()}
gen = torch.Generator().manual_seed(2)
prompt = torch.nn.functional.one_hot(torch.randint(0, cfg.vocab, (cfg.T,), generator=gen), cfg.vocab).float()
out = {}

def part(name, fn):
    comm.reset_communication_stats()
    start = time.perf_counter()
    y = fn()
    stats = comm.get_communication_stats()
    parts[name] = [stats["bytes"], stats["rounds"], time.perf_counter() - start]
    return y

for mode in ("reuse", "fresh"):
    ops = CrypTenOps(Meter(rank, 2), max_method="log_reduction", masks=WeightMasks(rank) if mode == "reuse" else None)
    ops.use_weights(secret)
    cache, steps = KVCache(), []
    tokens = crypten.cryptensor(prompt, src=1)
    for n in range(3):  # the prefill, then two decode steps; the chosen one-hot row is fed back
        parts = {}
        past = cache.positions
        x = part("embedding", lambda: embed(ops, secret, tokens, past))
        h = part("layer", lambda: layer(ops, secret, x, cfg, 0, cache))
        cache.positions = past + tokens.shape[0]
        tokens, _ = part("head", lambda: head(ops, secret, h, cfg))
        steps.append(parts)
    out[mode] = {"prefill": steps[0], "decode": steps[2], "opened": ops.masks.opened if ops.masks else 0}
print(json.dumps({"rank": rank, "out": out}))
crypten.uninit()
"""


def main() -> int:
    from tests.conftest import run_crypten_pair

    parties = run_crypten_pair(BODY, timeout=900)
    if [rc for rc, _, _ in parties] != [0, 0]:
        print("\n".join(err[-3000:] for _, _, err in parties), file=sys.stderr)
        return 1
    out = json.loads(parties[0][1].strip().splitlines()[-1])["out"]
    print(f"{'masks':6} {'step':8} {'part':10} {'MB (one party)':>15} {'rounds':>7} {'seconds':>8}")
    for mode, steps in out.items():
        for step in ("prefill", "decode"):
            for name, (byts, rounds, secs) in steps[step].items():
                print(f"{mode:6} {step:8} {name:10} {byts / 1e6:15.3f} {rounds:7d} {secs:8.2f}")
        print(f"{mode}: weight elements opened once: {steps['opened']:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
