"""Round-trip time in user space, for kernels without netem: a forwarder between two TUN devices.

Each party's network namespace gets a TUN device (`tun0` holding 10.77.0.1, `tun1` 10.77.0.2, point to
point); this process holds both devices' file descriptors and copies every IP packet read from one
into the other after holding it `delay_s` (half the profile's RTT), in order (a constant delay keeps a
FIFO a FIFO). Bandwidth stays with the kernel: tbf on each TUN device's egress, as on the veth pair.
No router namespace is needed: the forwarder is the link.

    python -m pibench.measuring.delay_router NS0 NS1 DELAY_S MTU

prints "ready" once both devices exist (the caller then gives them addresses) and forwards until it is
sent SIGTERM or its parent process exits (checked every `PARENT_CHECK_S`). A packet costs about one
read, one sleep and one write in Python (tens of microseconds; `bench/delay_router_check.py`
measures the overhead and the throughput ceiling at zero delay).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import struct
import sys
import threading
import time
from collections import deque

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
CLONE_NEWNET = 0x40000000
PARENT_CHECK_S = 1.0
MAX_QUEUED = 100_000  # packets held per direction at most (a bound, never reached by 2PC traffic)


def open_tun(namespace: str, name: str) -> int:
    """A TUN device `name` (IP packets, no header) created in network namespace `namespace` (this
    thread enters it for the call and returns to its own); its file descriptor."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        return fd
    finally:
        libc.setns(own, CLONE_NEWNET)
        os.close(own)
        os.close(target)


class Direction:
    """One way of the link: packets read from `src` are written to `dst` `delay_s` later, in order."""

    def __init__(self, src: int, dst: int, delay_s: float, mtu: int) -> None:
        self.src, self.dst, self.delay_s, self.mtu = src, dst, delay_s, mtu
        self.queue: deque[tuple[float, bytes]] = deque()
        self.ready = threading.Condition()

    def read(self) -> None:
        while True:
            packet = os.read(self.src, self.mtu + 64)
            with self.ready:
                if len(self.queue) < MAX_QUEUED:  # else dropped, as a full router queue drops
                    self.queue.append((time.monotonic() + self.delay_s, packet))
                    self.ready.notify()

    def write(self) -> None:
        while True:
            with self.ready:
                while not self.queue:
                    self.ready.wait()
                due, packet = self.queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with self.ready:
                self.queue.popleft()
            try:
                os.write(self.dst, packet)
            except OSError:  # the other device is not up (yet: IPv6 announces itself at link-up): dropped
                continue


def _watch_parent(parent: int) -> None:
    """Exit when the process that started this one has gone (bounded: one check a second)."""
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:
            os._exit(0)


def main(argv: list[str]) -> int:
    ns0, ns1, delay, mtu = argv[0], argv[1], float(argv[2]), int(argv[3])
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    fds = [open_tun(ns, f"tun{rank}") for rank, ns in enumerate((ns0, ns1))]
    ways = [Direction(fds[0], fds[1], delay, mtu), Direction(fds[1], fds[0], delay, mtu)]
    for way in ways:
        for job in (way.read, way.write):
            threading.Thread(target=job, daemon=True).start()
    print("ready", flush=True)
    _watch_parent(parent)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
