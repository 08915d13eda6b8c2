"""Per-operation accounting of a CrypTen party: bytes sent and received, rounds, seconds.

CrypTen's own counters (`communicator.verbose`) give one "bytes" figure per party (sent and received
together) and no split by operation. `Meter.attach` wraps the party's communicator so that every
exchange is also attributed to the operation kind running at the time (`pibench.models.opkinds.KINDS`),
with sent and received apart. Bytes are those of the tensors exchanged (8 per ring element, as
CrypTen counts); a round is one blocking exchange (one communicator call).

Exchanges with a trusted third party (the TTP provider's dealer, rank 2) are offline material, not
online traffic: they go to `dealer`, counted as they cross the wire (4 + pickled length of an object
message; 8 bytes per element of a tensor). `crypten_view` repeats CrypTen's own way of counting
every exchange, online or not, so that the meter can be checked against CrypTen's counters.
"""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pibench.backends.base import Counts, StepCounts
from pibench.models.opkinds import KINDS

BYTES_PER_ELEMENT = 8
EXCHANGES = (
    "send",
    "recv",
    "isend",
    "irecv",
    "scatter",
    "reduce",
    "all_reduce",
    "gather",
    "all_gather",
    "broadcast",
    "send_obj",
    "recv_obj",
    "broadcast_obj",
    "barrier",
)


def _numel(x: Any) -> int:
    if isinstance(x, list | tuple):
        return sum(_numel(t) for t in x)
    return x.nelement()


def _object_bytes(obj: Any) -> int:
    """What CrypTen's send_obj puts on the wire: an int32 length, then the pickle."""
    return 4 + len(pickle.dumps(obj))


def crypten_elements(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any, rank: int, world_size: int
) -> tuple[float, float]:
    """(elements sent, elements received) of one communicator call, as CrypTen's counters count them
    (objects: `sys.getsizeof` / 8)."""
    others = world_size - 1
    peer = args[1] if len(args) > 1 else kwargs.get("src", kwargs.get("dst"))
    if name in ("send", "isend"):
        return _numel(args[0]), 0
    if name in ("recv", "irecv"):
        return 0, _numel(args[0])
    if name in ("all_reduce", "all_gather"):
        n = _numel(args[0]) * others
        return n, n
    if name == "broadcast":
        n = _numel(args[0])
        return (n * others, 0) if peer == rank else (0, n)
    if name in ("gather", "reduce"):
        n = _numel(args[0])
        return (0, n * others) if peer == rank else (n, 0)
    if name == "scatter":
        if peer == rank:
            return sum(x.nelement() for i, x in enumerate(args[0]) if i != rank), 0
        return 0, result.nelement()
    if name == "send_obj":
        return sys.getsizeof(args[0]) / BYTES_PER_ELEMENT, 0
    if name == "recv_obj":
        return 0, sys.getsizeof(result) / BYTES_PER_ELEMENT
    if name == "broadcast_obj":
        size = sys.getsizeof(args[0] if peer == rank else result) / BYTES_PER_ELEMENT
        return (size * others, 0) if peer == rank else (0, size)
    return 0, 0  # barrier: a round, no payload


def round_trips(name: str, args: tuple[Any, ...]) -> int:
    """Network round trips one communicator call of two parties waits for, as timed across an emulated
    link (bench/projection_check.py, docs/networks.md): gloo's ring all_reduce splits a tensor of 3
    or more elements into a reduce-scatter and an all-gather step, each a round trip (2); a smaller
    one, a broadcast, an all_gather, a send answered by a recv and a barrier take 1."""
    if name == "all_reduce" and args and _numel(args[0]) >= 3:
        return 2
    return 1


def _peer(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The other rank of a point-to-point exchange, or the source of a broadcast (None for the rest):
    recv_obj(src, group); send_obj(obj, dst, group); broadcast(tensor, src, group)."""
    if name == "recv_obj":
        return args[0] if args else kwargs.get("src")
    if name in ("send_obj", "broadcast"):
        return args[1] if len(args) > 1 else kwargs.get("dst", kwargs.get("src"))
    return None


def dealer_bytes(name: str, args: tuple[Any, ...], result: Any, rank: int) -> tuple[int, int]:
    """(bytes sent, bytes received) of an exchange with the dealer, as they cross the wire. The
    dealer's protocol (CrypTen's TTPServer): party 0 sends a request object, receives the result's
    size as an object, then receives the result tensor by a broadcast in a two-member group."""
    if name == "send_obj":
        return _object_bytes(args[0]), 0
    if name == "recv_obj":
        return 0, _object_bytes(result)
    if name == "broadcast":
        n = _numel(args[0]) * BYTES_PER_ELEMENT
        return (n, 0) if args[1] == rank else (0, n)
    raise RuntimeError(f"unexpected exchange with the dealer: {name}")


@dataclass
class Meter:
    """Counts by operation kind for one party; `kind(...)` sets what the exchanges belong to."""

    rank: int
    world_size: int
    dealer_rank: int | None = None  # the TTP's rank, when there is one
    on_op: Callable[[], None] | None = None  # called after every operation (progress heartbeats)
    by_kind: dict[str, Counts] = field(default_factory=lambda: {k: Counts() for k in KINDS})
    dealer: Counts = field(default_factory=Counts)
    dealer_lifetime: Counts = field(default_factory=Counts)  # never reset: for the conservation check
    crypten_view: dict[str, float] = field(default_factory=lambda: {"bytes": 0.0, "rounds": 0})
    current: str = "other"
    waiting_since: float | None = None  # monotonic time the exchange under way began, if any

    @contextmanager
    def kind(self, kind: str) -> Iterator[None]:
        outer, self.current = self.current, kind
        start = time.perf_counter()
        try:
            yield
        finally:
            self.by_kind[kind].wall_s += time.perf_counter() - start
            self.current = outer
            if self.on_op:
                self.on_op()

    def reset(self) -> None:
        self.by_kind = {k: Counts() for k in KINDS}
        self.dealer = Counts()
        self.crypten_view = {"bytes": 0.0, "rounds": 0}

    def snapshot(self, crypten_counters: dict[str, Any]) -> StepCounts:
        """What was counted since `reset`, beside CrypTen's own counters of the same span."""
        own = {
            "crypten_bytes": int(crypten_counters["bytes"]),
            "crypten_rounds": int(crypten_counters["rounds"]),
            "metered_bytes": int(self.crypten_view["bytes"]),
            "metered_rounds": int(self.crypten_view["rounds"]),
        }
        return StepCounts(dict(self.by_kind), self.dealer, own)

    def _record(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any, seconds: float) -> None:
        sent, received = crypten_elements(name, args, kwargs, result, self.rank, self.world_size)
        self.crypten_view["bytes"] += (sent + received) * BYTES_PER_ELEMENT
        self.crypten_view["rounds"] += 1
        if self.dealer_rank is not None and _peer(name, args, kwargs) == self.dealer_rank:
            sent, received = dealer_bytes(name, args, result, self.rank)
            targets = [self.dealer, self.dealer_lifetime]
        else:
            sent, received = sent * BYTES_PER_ELEMENT, received * BYTES_PER_ELEMENT
            targets = [self.by_kind[self.current]]
        trips = round_trips(name, args)
        for counts in targets:
            counts.add(Counts(int(sent), int(received), 1, seconds, round_trips=trips))

    def _wrap(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def metered(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            self.waiting_since = time.monotonic()
            try:
                result = func(*args, **kwargs)
            finally:
                self.waiting_since = None
            self._record(name, args, kwargs, result, time.perf_counter() - start)
            return result

        return metered

    def attach(self, communicator: Any) -> None:
        """Wrap the exchanges of a CrypTen communicator instance."""
        for name in EXCHANGES:
            setattr(communicator, name, self._wrap(name, getattr(communicator, name)))


def meter_dealer_side(communicator_class: Any, dealer_rank: int) -> Counts:
    """Count a dealer process's own traffic (all of it is with party 0): wraps the class's exchanges,
    since CrypTen's TTPServer makes its communicator itself. Returns the live counts."""
    counts = Counts()

    def wrap(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def metered(self: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = func(self, *args, **kwargs)
            sent, received = dealer_bytes(name, args, result, dealer_rank)
            counts.sent += sent
            counts.received += received
            counts.rounds += 1
            counts.comm_s += time.perf_counter() - start
            return result

        return metered

    for name in ("send_obj", "recv_obj", "broadcast"):
        setattr(communicator_class, name, wrap(name, getattr(communicator_class, name)))
    return counts
