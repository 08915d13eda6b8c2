"""A network link between the two parties on one machine: two network namespaces joined by a veth
pair, bandwidth shaped with `tc ... tbf` and delay added with `tc ... netem` where the kernel has it.

Kernels without netem (these project machines' among them) get bandwidth only; `EmulatedLink.delay`
then says False, `pibench run` says so, and the record's network says "bandwidth only". The
namespaces (and with them the veth pair) are removed on every exit path; namespaces left by a
pibench process that no longer exists are removed on the next start.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

import psutil

from pibench.counting.network import NetworkProfile
from pibench.util.errors import PibenchError

PREFIX = "pibench-"
ADDRESSES = ("10.77.0.1", "10.77.0.2")  # inside the namespaces only; never routed anywhere
PORT = 29500  # a fresh namespace has every port free


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def stale_namespaces() -> list[str]:
    """pibench namespaces whose creating process has exited."""
    listing = _ip("netns", "list", check=False).stdout
    out = []
    for name in re.findall(rf"^({PREFIX}(\d+)-[01])\b", listing, flags=re.M):
        if not psutil.pid_exists(int(name[1])):
            out.append(name[0])
    return out


@dataclass
class EmulatedLink:
    """Context manager: two namespaces `names[rank]`, rank r at ADDRESSES[r] on interface `ifaces[r]`."""

    profile: NetworkProfile
    names: tuple[str, str] = field(init=False)
    ifaces: tuple[str, str] = field(init=False)
    delay: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        pid = os.getpid()
        self.names = (f"{PREFIX}{pid}-0", f"{PREFIX}{pid}-1")
        self.ifaces = (f"pb{pid}a"[-15:], f"pb{pid}b"[-15:])

    def __enter__(self) -> EmulatedLink:
        if self.profile.bandwidth_bps is None:
            raise PibenchError("--emulate needs a link profile (lan, wan, paper-wan or BANDWIDTH,RTT), not loopback")
        if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
            raise PibenchError(
                "--emulate needs root and the `ip` and `tc` commands (network namespaces, traffic control); "
                "without them, project a loopback run instead: pibench report RECORD --network PROFILE"
            )
        for name in stale_namespaces():
            _ip("netns", "del", name, check=False)
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def _create(self) -> None:
        a, b = self.ifaces
        steps = [
            *(["netns", "add", n] for n in self.names),
            ["link", "add", a, "type", "veth", "peer", "name", b],
            ["link", "set", a, "netns", self.names[0]],
            ["link", "set", b, "netns", self.names[1]],
        ]
        for rank in (0, 1):
            ns, dev = self.names[rank], self.ifaces[rank]
            steps += [
                ["-n", ns, "addr", "add", f"{ADDRESSES[rank]}/30", "dev", dev],
                ["-n", ns, "link", "set", "lo", "up"],
                ["-n", ns, "link", "set", dev, "up"],
            ]
        for step in steps:
            proc = _ip(*step, check=False)
            if proc.returncode:
                raise PibenchError(f"could not set up the emulated link: ip {' '.join(step)}: {proc.stderr.strip()}")
        assert self.profile.bandwidth_bps is not None  # an emulated profile has a bandwidth (`parse_profile`)
        rate = int(self.profile.bandwidth_bps)
        burst = max(32 * 1024, rate // 8 // 100)  # 10 ms worth of data, at least 32 KiB
        self.delay = self.profile.rtt_s > 0 and all(self._netem(rank) for rank in (0, 1))
        for rank in (0, 1):
            parent = ["parent", "1:", "handle", "2:"] if self.delay else ["root"]
            self._tc(
                rank,
                "qdisc",
                "add",
                "dev",
                self.ifaces[rank],
                *parent,
                "tbf",
                "rate",
                f"{rate}bit",
                "burst",
                str(burst),
                "latency",
                "200ms",
            )

    def _tc(self, rank: int, *args: str, check: bool = True) -> bool:
        proc = subprocess.run(
            ["ip", "netns", "exec", self.names[rank], "tc", *args], capture_output=True, text=True, timeout=30
        )
        if proc.returncode and check:
            raise PibenchError(f"could not shape the emulated link: tc {' '.join(args)}: {proc.stderr.strip()}")
        return proc.returncode == 0

    def _netem(self, rank: int) -> bool:
        """Half the RTT of delay on each direction's egress; False where the kernel has no netem."""
        delay_ms = f"{self.profile.rtt_s * 1e3 / 2:g}ms"
        dev = self.ifaces[rank]
        return self._tc(
            rank, "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem", "delay", delay_ms, check=False
        )

    def close(self) -> None:
        for name in self.names:
            _ip("netns", "del", name, check=False)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def command_prefix(self, rank: int) -> list[str]:
        return ["ip", "netns", "exec", self.names[rank]]

    def env(self, rank: int) -> dict[str, str]:
        return {"GLOO_SOCKET_IFNAME": self.ifaces[rank]}

    @property
    def rendezvous(self) -> str:
        """Each rank's address in its namespace (backends whose parties all listen need both)."""
        return ",".join(f"tcp://{address}:{PORT}" for address in ADDRESSES)

    def describe(self) -> str:
        what = "bandwidth and delay" if self.delay else "bandwidth only: this kernel has no netem, RTT not emulated"
        return f"{self.profile.describe()}, emulated ({what}) between two network namespaces"
