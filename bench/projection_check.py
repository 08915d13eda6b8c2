"""Check the latency projection (pibench/counting/network.py) against emulated links.

    sudo python bench/projection_check.py [--bandwidths 100mbit 250mbit] [--suite bench/suites/link.yaml]

Runs the suite once on loopback and once per bandwidth with `pibench run --emulate BW,0ms` (two
network namespaces, tbf-shaped veth), then prints, per variant, the emulated forward-pass seconds
beside the projection of the loopback run onto the same link, and their ratio. RTT is 0 here because
these machines' kernel has no netem, so only bandwidth is emulated; the RTT term of the model is
checked by the arithmetic tests. Exits 1 if any projection is off by more than 15%.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from pibench.counting.network import parse_profile
from pibench.results.records import Record, read_record
from pibench.results.report import projected_s

HERE = Path(__file__).resolve().parent


def run(suite: str, out: Path, *extra: str) -> Record:
    cmd = ["pibench", "run", suite, "--out", str(out), "--no-progress", "--full", *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return read_record(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default=str(HERE / "suites" / "link.yaml"))
    ap.add_argument("--bandwidths", nargs="+", default=["100mbit", "250mbit"])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pibench-proj-"))
    loop = run(args.suite, tmp / "loopback.json")
    ok = True
    heads = ("MB sent/party", "loopback s", "emulated s", "projected s", "ratio")
    print(f"{'variant':<12} {'link':<10} " + " ".join(f"{h:>13}" for h in heads))
    for bw in args.bandwidths:
        profile = parse_profile(f"{bw},0ms")
        emu = run(args.suite, tmp / f"{bw}.json", "--emulate", profile.name)
        for lv, ev in zip(loop.variants, emu.variants, strict=True):
            predicted = projected_s(lv.measured, profile)
            measured = ev.measured.wall_s
            ratio = predicted / measured
            ok &= abs(ratio - 1) <= 0.15
            sent = max(p.sent for p in lv.measured.parties) / 1e6
            cells = (f"{sent:.1f}", f"{lv.measured.wall_s:.2f}", f"{measured:.2f}", f"{predicted:.2f}")
            print(f"{lv.name:<12} {bw:<10} " + " ".join(f"{c:>13}" for c in (*cells, f"{ratio:.3f}")))
    print("projection within 15% of every emulated run" if ok else "projection OFF by more than 15%")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
