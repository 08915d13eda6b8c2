"""Process and socket utilities shared by the runner, the parties and the op servers.

Nothing here imports another pibench module: it is the bottom of the process side.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
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


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now (another process may take it before it is used: prefer
    `listening_socket` and pass the socket on)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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
