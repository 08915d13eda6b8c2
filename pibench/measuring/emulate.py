"""A network link between the two parties on one machine: two network namespaces, bandwidth shaped
with `tc ... tbf`, round-trip time added by `tc ... netem` where the kernel has it, else by pibench's
userspace delay router.

With netem (or with no RTT to add) the namespaces are joined by a veth pair, netem holding each
direction's packets RTT/2. Kernels without netem (these project machines' among them) join them
through two TUN devices instead, served by `pibench.measuring.delay_router`, a process that holds
every packet RTT/2 per direction, in order; tbf shapes each TUN device's egress as it would the
veth's. `EmulatedLink.mechanism` says which, and so do `pibench run` and the record's network. The
namespaces (with their devices) and the router process (by its PID) are removed on every exit path;
namespaces left by a pibench process that no longer exists are removed on the next start, and a
router whose parent has gone exits within a second.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

import psutil

from pibench.counting.network import NetworkProfile
from pibench.util.errors import PibenchError

PREFIX = "pibench-"
ADDRESSES = ("10.77.0.1", "10.77.0.2")  # inside the namespaces only; never routed anywhere
PORT = 29500  # a fresh namespace has every port free
TUN_MTU = 16384  # fewer, larger packets through the userspace router (tbf's burst stays above it)
ROUTER_START_S = 10.0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _steps(steps: list[list[str]]) -> None:
    for step in steps:
        proc = _ip(*step, check=False)
        if proc.returncode:
            raise PibenchError(f"could not set up the emulated link: ip {' '.join(step)}: {proc.stderr.strip()}")


def _ready_line(proc: subprocess.Popen[str], timeout_s: float) -> str | None:
    """The first line `proc` prints within `timeout_s` (None: none by then, or it exited first)."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            return None
    return proc.stdout.readline().strip() or None


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
    # how the RTT is added: "netem", "delay router" (userspace, `pibench.measuring.delay_router`) or None
    mechanism: str | None = field(default=None, init=False)
    router: subprocess.Popen[str] | None = field(default=None, init=False)

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
        _steps(steps)
        if self.profile.rtt_s > 0:
            if all(self._netem(rank) for rank in (0, 1)):
                self.mechanism = "netem"
            else:  # no netem: the namespaces meet through the userspace router instead of the veth pair
                _steps([["-n", self.names[0], "link", "del", a]])  # both ends go
                self._route()
                self.mechanism = "delay router"
        self.delay = self.mechanism is not None
        assert self.profile.bandwidth_bps is not None  # an emulated profile has a bandwidth (`parse_profile`)
        rate = int(self.profile.bandwidth_bps)
        burst = max(2 * TUN_MTU, rate // 8 // 100)  # 10 ms worth of data, at least two of the largest packets
        for rank in (0, 1):
            parent = ["parent", "1:", "handle", "2:"] if self.mechanism == "netem" else ["root"]
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

    def _route(self) -> None:
        """Start the delay router (half the RTT per direction) and address its TUN devices point to point."""
        self.router = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pibench.measuring.delay_router",
                *self.names,
                repr(self.profile.rtt_s / 2),
                str(TUN_MTU),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = _ready_line(self.router, ROUTER_START_S)
        if ready != "ready":
            err = (
                self.router.stderr.read().strip().splitlines()[-1:]
                if self.router.poll() is not None and self.router.stderr
                else []
            )
            raise PibenchError(f"the delay router did not start ({(err or [ready or 'no answer'])[0][:200]})")
        self.ifaces = ("tun0", "tun1")
        steps = []
        for rank in (0, 1):
            ns, dev = self.names[rank], self.ifaces[rank]
            steps += [
                ["-n", ns, "addr", "add", ADDRESSES[rank], "peer", ADDRESSES[1 - rank], "dev", dev],
                ["-n", ns, "link", "set", dev, "mtu", str(TUN_MTU), "up"],
            ]
        _steps(steps)

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
        if self.router is not None:
            from pibench.util.procs import kill_tree

            if self.router.poll() is None:
                kill_tree(self.router.pid)
            self.router.wait(timeout=10)
            for stream in (self.router.stdout, self.router.stderr):
                if stream:
                    stream.close()
            self.router = None
        for name in self.names:
            _ip("netns", "del", name, check=False)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self, during: str) -> None:
        """Raise where the delay router has exited: the parties lost their link (they would next be
        reported as hung, which is not what happened)."""
        router = self.router
        if router is not None and router.poll() is not None:
            raise PibenchError(
                f"the emulated link's delay router (PID {router.pid}) exited with code {router.returncode} during "
                f"{during}, cutting the parties' link; the run was stopped and no record written"
            )

    def command_prefix(self, rank: int) -> list[str]:
        return ["ip", "netns", "exec", self.names[rank]]

    def env(self, rank: int) -> dict[str, str]:
        return {"GLOO_SOCKET_IFNAME": self.ifaces[rank]}

    @property
    def rendezvous(self) -> str:
        """Each rank's address in its namespace (backends whose parties all listen need both)."""
        return ",".join(f"tcp://{address}:{PORT}" for address in ADDRESSES)

    def describe(self) -> str:
        if self.mechanism == "netem":
            what = "bandwidth by tbf, RTT by netem"
        elif self.mechanism == "delay router":
            what = "bandwidth by tbf, RTT by pibench's userspace delay router: this kernel has no netem"
        else:
            what = "bandwidth by tbf; no RTT to add"
        return f"{self.profile.describe()}, emulated ({what}) between two network namespaces"


# --- probes of an emulated link (tests/test_network.py, bench/delay_router_check.py) -------------------

_ECHO_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5555)); s.listen(1); s.settimeout(60)
c, _ = s.accept(); c.settimeout(60); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    d = c.recv(1 << 20)
    if not d:
        break
    if sys.argv[2] == "echo":
        c.sendall(d)
"""
_PROBE = """
import socket, sys, time
for _ in range(100):  # the server may not listen yet: at most 10 s of tries
    try:
        c = socket.create_connection((sys.argv[1], 5555), timeout=10); break
    except OSError:
        time.sleep(0.1)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); c.settimeout(60)
n = int(sys.argv[3])
if sys.argv[2] == "echo":  # n timed round trips of 64 bytes (and one untimed first): their median
    rtts = []
    for _ in range(n + 1):
        t = time.perf_counter(); c.sendall(b"x" * 64); c.recv(4096); rtts.append(time.perf_counter() - t)
    print(sorted(rtts[1:])[n // 2])
else:  # n bytes one way, then a shutdown the server acknowledges by closing: seconds from first to last
    blob, t = b"y" * (1 << 20), time.perf_counter()
    for _ in range(n >> 20):
        c.sendall(blob)
    c.shutdown(socket.SHUT_WR); c.recv(1)
    print(time.perf_counter() - t)
"""


def _probe(link: EmulatedLink, mode: str, n: int) -> float:
    """Run the probe client in rank 0's namespace against a server in rank 1's; the float it prints."""
    from pibench.util.procs import kill_tree

    server = subprocess.Popen([*link.command_prefix(1), sys.executable, "-c", _ECHO_SERVER, ADDRESSES[1], mode])
    try:
        client = subprocess.run(
            [*link.command_prefix(0), sys.executable, "-c", _PROBE, ADDRESSES[1], mode, str(n)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if client.returncode:
            raise PibenchError(f"the link probe failed: {client.stderr.strip().splitlines()[-1:]}")
        return float(client.stdout)
    finally:
        kill_tree(server.pid)
        server.wait(timeout=10)


def echo_rtt(link: EmulatedLink, rounds: int = 20) -> float:
    """The median of `rounds` timed 64-byte TCP round trips across the link (s)."""
    return _probe(link, "echo", rounds)


def throughput_bps(link: EmulatedLink, nbytes: int = 64 << 20) -> float:
    """Bits per second of one TCP stream sending `nbytes` across the link (whole MiB)."""
    return (nbytes >> 20 << 20) * 8 / _probe(link, "sink", nbytes)
