"""Per-operation accounting of a CrypTen party: bytes sent and received, rounds, seconds.

CrypTen's own counters (`communicator.verbose`) give one "bytes" figure per party (sent and received
together) and no split by operation. `Meter.attach` wraps the party's communicator so that every
exchange is also attributed to the operation kind running at the time, with sent and received apart;
its per-party sent + received equals CrypTen's bytes (tested). Bytes are those of the tensors
exchanged (8 per ring element, as CrypTen counts); a round is one blocking exchange (one
communicator call).
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# Operation kinds of the per-operation breakdown.
KINDS = ("softmax", "layernorm", "gelu", "relu", "linear", "attn_matmul", "other")

BYTES_PER_ELEMENT = 8


@dataclass
class Counts:
    sent: int = 0  # bytes
    received: int = 0  # bytes
    rounds: int = 0
    comm_s: float = 0.0  # seconds spent inside exchanges
    wall_s: float = 0.0  # seconds spent in operations of this kind (compute and exchange)

    def add(self, other: Counts, times: int = 1) -> None:
        self.sent += other.sent * times
        self.received += other.received * times
        self.rounds += other.rounds * times
        self.comm_s += other.comm_s * times
        self.wall_s += other.wall_s * times

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


def _numel(x: Any) -> int:
    if isinstance(x, list | tuple):
        return sum(_numel(t) for t in x)
    return x.nelement()


@dataclass
class Meter:
    """Counts by operation kind for one party; `kind(...)` sets what the exchanges belong to."""

    rank: int
    world_size: int
    by_kind: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))
    current: str = "other"
    on_op: Callable[[], None] | None = None  # called after every operation (progress heartbeats)
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
        self.by_kind = defaultdict(Counts)

    def total(self) -> Counts:
        out = Counts()
        for c in self.by_kind.values():
            out.add(c)
        return out

    def _traffic(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> tuple[int, int]:
        """(elements sent, elements received) of one communicator call, as CrypTen counts them."""
        others, me = self.world_size - 1, self.rank
        peer = args[1] if len(args) > 1 else kwargs.get("src", kwargs.get("dst"))
        if name in ("send", "isend"):
            return _numel(args[0]), 0
        if name in ("recv", "irecv"):
            return 0, _numel(args[0])
        if name == "all_reduce" or name == "all_gather":
            n = _numel(args[0]) * others
            return n, n
        if name == "broadcast":
            n = _numel(args[0])
            return (n * others, 0) if peer == me else (0, n)
        if name in ("gather", "reduce"):
            n = _numel(args[0])
            return (0, n * others) if peer == me else (n, 0)
        if name == "scatter":
            if peer == me:
                return sum(x.nelement() for i, x in enumerate(args[0]) if i != me), 0
            return 0, result.nelement()
        if name == "send_obj":
            return sys.getsizeof(args[0]) / BYTES_PER_ELEMENT, 0
        if name == "recv_obj":
            return 0, sys.getsizeof(result) / BYTES_PER_ELEMENT
        if name == "broadcast_obj":
            size = sys.getsizeof(args[0] if peer == me else result) / BYTES_PER_ELEMENT
            return (size * others, 0) if peer == me else (0, size)
        return 0, 0  # barrier: a round, no payload

    def _wrap(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def metered(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            self.waiting_since = time.monotonic()
            try:
                result = func(*args, **kwargs)
            finally:
                self.waiting_since = None
            counts = self.by_kind[self.current]
            counts.comm_s += time.perf_counter() - start
            sent, received = self._traffic(name, args, kwargs, result)
            counts.sent += int(sent * BYTES_PER_ELEMENT)
            counts.received += int(received * BYTES_PER_ELEMENT)
            counts.rounds += 1
            return result

        return metered

    def attach(self, communicator: Any) -> None:
        """Wrap the exchanges of a CrypTen communicator instance."""
        for name in (
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
        ):
            setattr(communicator, name, self._wrap(name, getattr(communicator, name)))
