"""Process and socket utilities shared by the runner, the parties and the op servers.

Nothing here imports another pibench module: it is the bottom of the process side.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import random
import signal
import socket
import sys
import threading
from collections.abc import Callable

import psutil

PR_SET_PDEATHSIG = 1


def kill_tree(pid: int, grace_s: float = 3.0) -> None:
    """End process `pid` and its descendants: terminate, then kill what is left after `grace_s`."""
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)


def die_with_parent() -> None:
    """For `Popen(preexec_fn=...)`: the child is killed when the process that started it dies, even by
    SIGKILL (Linux's PR_SET_PDEATHSIG; elsewhere a no-op, and the parties' own timeouts end them)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def listening_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A TCP socket bound to exactly (host, port) and listening; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections and bind(0) (Linux's default elsewhere)."""
    try:
        low, high = (int(v) for v in open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[:2])
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` now, drawn at random below the kernel's ephemeral range:
    other processes' outgoing connections take ports from that range and bind(0) hands out ones just
    freed, so two runs starting together (a parallel test suite, a sweep's cells) were once given one
    port. Another process may still take one before it is used: where a socket can be passed on,
    prefer `listening_socket`."""
    start = ephemeral_ports()[0]
    low = 20000 if start > 21000 else 1024
    draw = random.SystemRandom()
    held: list[socket.socket] = []
    try:
        for _ in range(50 * count):  # bounded: ports taken, or in TIME_WAIT, are skipped
            if len(held) == count:
                break
            s = socket.socket()
            try:
                s.bind((host, draw.randrange(low, max(low + 1, start))))
                held.append(s)
            except OSError:
                s.close()
        while len(held) < count:  # none free below the range: the kernel's choice
            held.append(socket.socket())
            held[-1].bind((host, 0))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One port free on `host` now (`free_ports`)."""
    return free_ports(1, host)[0]


def local_interface(host: str) -> str | None:
    """The name of this machine's network interface whose address reaches `host` (for binding
    sockets there and nowhere else); None when it cannot be told."""
    try:
        address = ipaddress.ip_address(socket.getaddrinfo(host, None)[0][4][0])
    except (OSError, ValueError, IndexError):
        return None
    if address.is_loopback:
        mine = address
    else:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:  # connect() on UDP sends nothing
            try:
                probe.connect((str(address), 9))
                mine = ipaddress.ip_address(probe.getsockname()[0])
            except OSError:
                return None
    for name, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            try:
                if ipaddress.ip_address(a.address.split("%")[0]) == mine:
                    return name
            except ValueError:
                continue
    return "lo" if mine.is_loopback else None


class Deadline:
    """Context manager: if the block has not finished within `seconds`, print `message` as a
    pibench error and end this process with exit code 2 (a blocking C++ call cannot be
    interrupted otherwise)."""

    def __init__(self, seconds: float, message: Callable[[], str]) -> None:
        self.timer = threading.Timer(seconds, self._expire)
        self.timer.daemon = True
        self.message = message

    def _expire(self) -> None:
        print(f"pibench: error: {self.message()}", file=sys.stderr, flush=True)
        os._exit(2)

    def __enter__(self) -> Deadline:
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()
