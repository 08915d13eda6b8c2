"""Cross-check of `pibench run --full` against CrypTen used directly, with no pibench code.

    python bench/crypten_direct.py                 # runs pibench on bench/suites/crypten_direct.yaml first
    python bench/crypten_direct.py --record R.json # or compares with an existing --full record

The same operations as pibench's SM+LN+G, SM+LN+R and SM+ScFuFFN layers (GPT-2 size: L=12, H=12,
d=768, T=128; Q, K, V in one product, squares by `square()`, the record's softmax form) are written
here against CrypTen's own API, run by two processes over gloo on 127.0.0.1, and measured with
CrypTen's own counters (`communicator.verbose`: per party, sent and
received bytes together, one round per exchange). Prints bytes, rounds and forward-pass seconds
beside pibench's and their ratios (and how many times faster pibench's forward pass was: its local
products, `crypten.local_products`, can avoid torch's int64 matmul where that is slow), and the
seconds stock CrypTen spent in int64 matmul: the most any choice of local products can save on this
machine (stock seconds / (stock seconds - matmul seconds) bounds the speed-up); exits 1 if
bytes or rounds differ by more than 1%, or time by more than 10% where pibench multiplied with int64
as stock CrypTen does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
L, H, D, T = 12, 12, 768, 128
VARIANTS = ("sm_ln_g", "sm_ln_r", "sm_scfuffn")


def import_crypten():
    """CrypTen 0.4.1 on torch 2.x: stand in for the ONNX module its converter imports."""
    name = "torch.onnx._internal.registration"
    try:
        __import__(name)
    except ImportError:
        stub = types.ModuleType(name)
        stub.registry = None  # only read by crypten.nn.from_pytorch, not used here
        sys.modules[name] = stub
    import crypten

    return crypten


def softmax_max_only(x, crypten):
    """The row maximum by CrypTen's tree reduction alone, then CrypTen's own softmax steps."""
    from crypten.common.functions.maximum import _max_helper_all_tree_reductions

    m = _max_helper_all_tree_reductions(x, dim=x.dim() - 1, method="log_reduction").unsqueeze(-1)
    numerator = (x - m).exp()
    with crypten.cfg.temp_override({"functions.reciprocal_all_pos": True}):
        return numerator * numerator.sum(-1, keepdim=True).reciprocal()


def party(rank: int, rendezvous: str, variant: str, softmax: str) -> dict:
    import torch

    crypten = import_crypten()
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", RENDEZVOUS=rendezvous, DISTRIBUTED_BACKEND="gloo")
    torch.set_num_threads(1)
    crypten.cfg.communicator.verbose = True
    crypten.init()
    comm = crypten.communicator.get()
    gen = torch.Generator().manual_seed(0)

    def weight(*shape, scale=0.02):  # the server's (rank 0) secret
        value = torch.randn(*shape, generator=gen) * scale
        return crypten.cryptensor(value if rank == 0 else torch.zeros(*shape), src=0)

    softmax_only = variant == "sm_scfuffn"
    layers = []
    for _ in range(L):
        w = {"qkv": weight(D, 3 * D), "bqkv": weight(3 * D), "o": weight(D, D), "bo": weight(D)}
        if softmax_only:
            w.update(fused=weight(D, D), bfused=weight(D), alpha=weight(1, scale=1.0), beta=weight(1, scale=1.0))
        else:
            w.update(ffn_in=weight(D, 4 * D), bffn_in=weight(4 * D), ffn_out=weight(4 * D, D), bffn_out=weight(D))
            w.update({n: weight(D, scale=1.0) for n in ("g1", "c1", "g2", "c2")})
        layers.append(w)
    x_plain = torch.randn(T, D, generator=torch.Generator().manual_seed(1))
    x = crypten.cryptensor(x_plain if rank == 1 else torch.zeros(T, D), src=1)  # the client's input
    mask = torch.full((T, T), -40.0).triu(1)
    c = math.sqrt(2 / math.pi)

    def layernorm(h, g, b):
        centred = h - h.mean(-1, keepdim=True)
        var = centred.square().mean(-1, keepdim=True)
        return centred * (var + 1e-5).inv_sqrt() * g + b

    def heads(h):
        return h.reshape(T, H, D // H).transpose(0, 1)

    int64_s = 0.0  # seconds in stock CrypTen's local products: torch's int64 matmul (triples and Beaver)
    matmul = torch.matmul

    def timed_matmul(a, b, *args, **kwargs):
        nonlocal int64_s
        began = time.perf_counter()
        out = matmul(a, b, *args, **kwargs)
        if getattr(a, "dtype", None) == torch.int64:
            int64_s += time.perf_counter() - began
        return out

    torch.matmul = timed_matmul  # CrypTen looks it up at each call (`getattr(torch, "matmul")`)
    comm.reset_communication_stats()
    start = time.perf_counter()
    for w in layers:
        h = x if softmax_only else layernorm(x, w["g1"], w["c1"])
        q, k, v = (heads(p) for p in (h.matmul(w["qkv"]) + w["bqkv"]).split(D, dim=-1))
        scores = q.matmul(k.transpose(-2, -1)) * (1 / math.sqrt(D // H)) + mask
        probs = softmax_max_only(scores, crypten) if softmax == "max_only" else scores.softmax(-1)
        att = probs.matmul(v).transpose(0, 1).reshape(T, D)
        att = att.matmul(w["o"]) + w["bo"]
        x = x + (att * w["alpha"] if softmax_only else att)
        if softmax_only:
            x = x + (x.matmul(w["fused"]) + w["bfused"]) * w["beta"]
            continue
        h = layernorm(x, w["g2"], w["c2"]).matmul(w["ffn_in"]) + w["bffn_in"]
        if variant == "sm_ln_g":
            h = h * (((h + h * h.square() * 0.044715) * c).tanh() + 1) * 0.5  # tanh-GELU
        else:
            h = h.relu()
        x = x + (h.matmul(w["ffn_out"]) + w["bffn_out"])
    wall = time.perf_counter() - start
    stats = comm.get_communication_stats()
    x.get_plain_text()
    crypten.uninit()
    return {"rank": rank, "bytes": int(stats["bytes"]), "rounds": stats["rounds"], "wall_s": wall, "int64_s": int64_s}


def measure(variant: str, softmax: str) -> list[dict]:
    # a file rendezvous: nothing listens on a network port for the store
    folder = tempfile.mkdtemp(prefix="crypten-direct-")
    rendezvous = f"file://{folder}/store"
    cmd = [sys.executable, __file__, "--variant", variant, "--rendezvous", rendezvous, "--softmax", softmax, "--party"]
    procs = [subprocess.Popen([*cmd, str(r)], stdout=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        outs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(folder, ignore_errors=True)
    if any(p.returncode for p in procs):
        sys.exit(f"a party of the direct run of {variant} failed")
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", help="a `pibench run --full` record of bench/suites/crypten_direct.yaml")
    ap.add_argument("--party", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rendezvous", help=argparse.SUPPRESS)
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--softmax", choices=("max_only", "crypten"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.party is not None:
        print(json.dumps(party(args.party, args.rendezvous, args.variant, args.softmax)))
        return 0
    record_path = args.record
    if record_path is None:
        record_path = str(Path(tempfile.mkdtemp()) / "pibench_full.json")
        cmd = ["pibench", "run", str(HERE / "suites" / "crypten_direct.yaml"), "--full", "--out", record_path]
        subprocess.run(cmd, check=True)
    from pibench.results.records import read_record  # the record as pibench reads it (typed)

    record = read_record(record_path)
    if not record.run.full:
        sys.exit(f"{record_path} is not a --full record")
    ok = True
    print(f"{'variant':<11} {'metric':<22} {'pibench':>14} {'CrypTen direct':>15} {'ratio':>8}")
    softmax = record.backend.settings["softmax"]
    products = record.backend.settings["local_products"]
    for v in record.variants:
        direct = measure(v.name, softmax)
        for rank, d in enumerate(direct):
            mine = v.measured.parties[rank]
            pairs = [
                (f"party {rank} bytes", mine.sent + mine.received, d["bytes"], 0.01),
                (f"party {rank} rounds", mine.rounds, d["rounds"], 0.01),
            ]
            for metric, a, b, tol in pairs:
                ok &= abs(a / b - 1) <= tol
                print(f"{v.name:<11} {metric:<22} {a:>14} {b:>15} {a / b:>8.4f}")
        a, b = v.measured.wall_s, max(d["wall_s"] for d in direct)
        chosen = {c for p in v.measured.parties for c in p.choices.values()}
        stock = products == "int64" or (products == "auto" and chosen <= {"int64"})
        if stock:  # the same int64 products as CrypTen: the same time, within 10%
            ok &= abs(a / b - 1) <= 0.10
        print(
            f"{v.name:<11} {'forward seconds':<22} {a:>14.1f} {b:>15.1f} {a / b:>8.4f}  (pibench {b / a:.2f}x as fast)"
        )
        products_s = max(d["int64_s"] for d in direct)  # the busier party's (rank 0 also makes the triples)
        print(
            f"{v.name:<11} {'stock int64 matmul s':<22} {'':>14} {products_s:>15.1f} {products_s / b:>8.4f}"
            f"  (local products can make it at most {b / (b - products_s):.2f}x as fast here)"
        )
    print(f"CPU: {record['environment']['fingerprint']['cpu_model']}; pibench's local products: {products}")
    print(
        "within 1% (bytes, rounds) and, where pibench multiplied as CrypTen does, 10% (time)"
        if ok
        else "OUTSIDE the tolerances"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
