"""What the userspace delay router adds on its own, and how close it holds a profile's RTT.

    sudo python bench/delay_router_check.py [--rtts 10 40 80] [--rounds 50]

Prints, for the veth pair (no router) and for the router at a 1 us delay (its own overhead), the median
TCP echo round trip and one TCP stream's throughput (tbf at 10 Gbit/s, far above either); then, for
each RTT, the median echo round trip through the router against the profile's, and the ratio. The
figures depend on the CPU and on what else runs: docs/networks.md says on which machine they were
measured. Needs root and /dev/net/tun.
"""

from __future__ import annotations

import argparse
import platform

from pibench.counting.network import parse_profile
from pibench.measuring.emulate import EmulatedLink, echo_rtt, throughput_bps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rtts", nargs="+", type=float, default=[10.0, 40.0, 80.0], help="RTTs to check (ms)")
    ap.add_argument("--rounds", type=int, default=50, help="timed echo round trips per case")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}")
    print(f"{'link':<34} {'mechanism':<13} {'echo RTT ms':>11} {'throughput MB/s':>15}")
    for name, profile in (("veth pair (no router), 0 ms", "10gbit,0ms"), ("router at 1 us", "10gbit,1us")):
        with EmulatedLink(parse_profile(profile)) as link:
            rtt, bps = echo_rtt(link, args.rounds), throughput_bps(link)
            print(f"{name:<34} {link.mechanism or 'none':<13} {rtt * 1e3:>11.3f} {bps / 8e6:>15.1f}")
    print(f"\n{'profile RTT ms':>14} {'mechanism':<13} {'echo RTT ms':>11} {'added ms':>9} {'ratio':>7}")
    for rtt_ms in args.rtts:
        with EmulatedLink(parse_profile(f"1gbit,{rtt_ms:g}ms")) as link:
            got = echo_rtt(link, args.rounds) * 1e3
            cells = f"{got:>11.3f} {got - rtt_ms:>9.3f} {got / rtt_ms:>7.3f}"
            print(f"{rtt_ms:>14g} {link.mechanism or 'none':<13} {cells}")


if __name__ == "__main__":
    main()
