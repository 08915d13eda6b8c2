"""How many round trips each gloo exchange of two parties waits for: CrypTen's rounds, timed on a link.

    sudo python bench/gloo_round_trips.py [--rtt 40] [--calls 10]

Sets up an emulated link (`pibench run --emulate`'s: netem or the userspace delay router) of 1 Gbit/s
and the given RTT, starts one torch.distributed gloo process in each namespace, and prints the mean
time of `--calls` calls of each exchange CrypTen's communicator makes: all_reduce of 1 to 10^6 int64
elements, broadcast, all_gather, a send answered by a recv, a barrier. Dividing by the RTT gives the
round trips `pibench.backends.crypten.meter.round_trips` counts (docs/networks.md has the table).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

PORT = 29511


def party(rank: int, calls: int) -> None:
    import torch
    import torch.distributed as dist

    from pibench.measuring.emulate import ADDRESSES

    os.environ.update(MASTER_ADDR=ADDRESSES[0], MASTER_PORT=str(PORT))
    dist.init_process_group("gloo", rank=rank, world_size=2)

    def timed(name: str, call: object) -> None:
        assert callable(call)
        call()
        dist.barrier()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        if rank == 0:
            print(f"{name:<26} {(time.perf_counter() - start) / calls * 1e3:9.1f}", flush=True)

    for n in (1, 2, 3, 4, 100, 10_000, 1_000_000):
        x = torch.zeros(n, dtype=torch.long)
        timed(f"all_reduce {n:,}", lambda x=x: dist.all_reduce(x))
    for n in (1, 1000):
        x = torch.zeros(n, dtype=torch.long)
        gathered = [torch.zeros(n, dtype=torch.long) for _ in range(2)]
        timed(f"broadcast {n:,}", lambda x=x: dist.broadcast(x, 0))
        timed(f"all_gather {n:,}", lambda x=x, g=gathered: dist.all_gather(g, x))
    x = torch.zeros(10, dtype=torch.long)

    def ping_pong() -> None:
        if rank == 0:
            dist.send(x, 1)
            dist.recv(x, 1)
        else:
            dist.recv(x, 0)
            dist.send(x, 0)

    timed("send, then recv", ping_pong)
    timed("barrier", dist.barrier)
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rtt", type=float, default=40.0, help="milliseconds")
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--rank", type=int, help=argparse.SUPPRESS)  # a party, inside its namespace
    args = ap.parse_args()
    if args.rank is not None:
        party(args.rank, args.calls)
        return
    from pibench.counting.network import parse_profile
    from pibench.measuring.emulate import EmulatedLink
    from pibench.util.procs import kill_tree

    with EmulatedLink(parse_profile(f"1gbit,{args.rtt:g}ms")) as link:
        print(f"{link.describe()}\n{'exchange':<26} {'mean ms':>9}", flush=True)
        me = [sys.executable, os.path.abspath(__file__), "--calls", str(args.calls), "--rank"]
        env = os.environ | {"GLOO_SOCKET_IFNAME": link.ifaces[1]}
        other = subprocess.Popen([*link.command_prefix(1), *me, "1"], env=env, stderr=subprocess.DEVNULL)
        try:
            env = os.environ | {"GLOO_SOCKET_IFNAME": link.ifaces[0]}
            subprocess.run([*link.command_prefix(0), *me, "0"], env=env, stderr=subprocess.DEVNULL, timeout=600)
            other.wait(timeout=60)
        finally:
            kill_tree(other.pid)


if __name__ == "__main__":
    main()
