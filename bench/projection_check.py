"""Check the latency projection (pibench/counting/network.py) against emulated links, RTT included.

    sudo python bench/projection_check.py [--backends crypten spu] [--rtts 0.5 10 40 80]
        [--bandwidths 100mbit 1gbit] [--suites bench/suites/rtt_prefill.yaml bench/suites/rtt_gen.yaml]

For each backend and suite: one loopback run, then one `pibench run --emulate BW,RTT` per bandwidth and
RTT (two network namespaces; tbf shapes the bandwidth, netem or else pibench's userspace delay router
adds the RTT: docs/networks.md). Per variant it prints the emulated seconds (the forward pass; with
generation, the prefill and every decode step summed) beside the projection of the loopback run onto
the same link and their ratio. For a backend whose rounds are round trips (CrypTen) the projection adds
round trips x RTT; for one whose rounds are messages that both parties send at once (SPU's receive
actions) it adds messages x 0.55 RTT (`Backend.rtt_per_round`, fitted to this check: at least RTT/2), and
the table shows what a full RTT per message would give beside it, and the RTTs each round trip or
message waited in the emulated run ((emulated - projection without the RTT term) / (rounds x RTT)).
Every run is `--full` with one timed pass per step (the suites set `repeats: 1`), so every emulated
second is a measured one. Exits 1 if a projection is off by more than 15%.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from pibench.counting.network import NetworkProfile, parse_profile
from pibench.results.generation import token_projected_s
from pibench.results.records import Record, VariantRecord, read_record
from pibench.results.report import projected_s, rtt_per_round

HERE = Path(__file__).resolve().parent
SUITES = [str(HERE / "suites" / "rtt_prefill.yaml"), str(HERE / "suites" / "rtt_gen.yaml")]
BOUND = 0.15


def run(suite: str, backend: str, out: Path, *extra: str) -> Record:
    cmd = ["pibench", "run", suite, "--backend", backend, "--out", str(out), "--no-progress", "--full", *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=3600)
    return read_record(out)


def seconds(v: VariantRecord) -> float:
    """What a variant's run took: the forward pass, or the prefill and every decode step."""
    gen = v.measured.generation
    return sum(s.wall_s for s in gen.steps) if gen else v.measured.wall_s


def projected(v: VariantRecord, profile: NetworkProfile, rtt: float) -> float:
    gen = v.measured.generation
    if gen:
        return sum(token_projected_s(s, profile, rtt) for s in gen.steps)
    return projected_s(v.measured, profile, rtt)


def latency_rounds(v: VariantRecord) -> int:
    """The round trips (or messages) of a variant's run: the forward pass, or every pass of a generation."""
    gen = v.measured.generation
    return sum(s.latency_rounds for s in gen.steps) if gen else v.measured.latency_rounds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=["crypten", "spu"])
    ap.add_argument("--suites", nargs="+", default=SUITES)
    ap.add_argument("--bandwidths", nargs="+", default=["100mbit", "1gbit"])
    ap.add_argument("--rtts", nargs="+", default=["0.5", "10", "40", "80"], help="milliseconds")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pibench-proj-"))
    ok = True
    print(f"machine: {platform.processor() or platform.machine()}; bound {BOUND:.0%}", flush=True)
    heads = (
        "rounds",
        "round trips",
        "MB/party",
        "loopback s",
        "emulated s",
        "projected s",
        "ratio",
        "with RTT s",
        "ratio",
        "RTT waited",
    )
    print(f"{'backend':<8} {'suite':<12} {'variant':<11} {'link':<14} " + " ".join(f"{h:>11}" for h in heads))
    for backend in args.backends:
        for suite in args.suites:
            loop = run(suite, backend, tmp / f"{backend}-{Path(suite).stem}-loopback.json")
            rtt_term = rtt_per_round(loop)
            for bw in args.bandwidths:
                for rtt in args.rtts:
                    profile = parse_profile(f"{bw},{rtt}ms")
                    out = tmp / f"{backend}-{Path(suite).stem}-{bw}-{rtt}.json"
                    emu = run(suite, backend, out, "--emulate", profile.name)
                    for lv, ev in zip(loop.variants, emu.variants, strict=True):
                        measured, predicted = seconds(ev), projected(lv, profile, rtt_term)
                        ok &= abs(predicted / measured - 1) <= BOUND
                        upper = "" if rtt_term == 1 else projected(lv, profile, 1.0)
                        sent = max(p.sent for p in lv.measured.parties) / 1e6
                        cells = [
                            f"{lv.measured.rounds:,}",
                            f"{lv.measured.latency_rounds:,}",
                            f"{sent:.1f}",
                            f"{seconds(lv):.2f}",
                            f"{measured:.2f}",
                            f"{predicted:.2f}",
                            f"{predicted / measured:.3f}",
                            f"{upper:.2f}" if upper else "-",
                            f"{upper / measured:.3f}" if upper else "-",
                            f"{(measured - projected(lv, profile, 0.0)) / (latency_rounds(lv) * profile.rtt_s):.2f}",
                        ]
                        row = f"{backend:<8} {loop.suite.name:<12} {lv.name:<11} {profile.name:<14} "
                        print(row + " ".join(f"{c:>11}" for c in cells), flush=True)
    print(f"projection within {BOUND:.0%} of every emulated run" if ok else f"projection OFF by more than {BOUND:.0%}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
