"""The interface every 2PC backend implements, and the counts it reports.

A backend is one registered object (`pibench.backends.BACKENDS`) that says:

- its settings: a frozen, strict schema (`settings_type`), the suite's section of the backend's name;
- its processes: which ranks a run starts and what each is (`ranks`), and what it refuses up front
  (`check`);
- how one party joins the others and runs operations (`session`): a `Session` shares weights and
  input, runs a step of the model definition on its `Ops` interpreter and says what the step cost
  by operation kind (`pibench.models.opkinds.KINDS`);
- how it is described under a table and in a record (`describe`, `protocol`).

Everything else (walking a suite, layer sampling, timing, accuracy, process control, records,
reports, the gate, calibration) is written once against this interface. Importing a backend's
registered object must not import its heavy dependencies: `session` imports them.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from pibench.models.config import ModelConfig
from pibench.models.opkinds import KINDS, MATMULS, Call, CostForm, Sample
from pibench.util.procs import listening_socket


@dataclass
class Counts:
    """What one party's exchanges cost: bytes sent and received, rounds (blocking exchanges),
    seconds inside exchanges and seconds of the operations they belong to, and the network round trips
    the rounds wait for (0: the backend does not tell them apart from rounds; CrypTen's all_reduce of
    3 or more elements waits for 2 under gloo's ring, every other exchange for 1: docs/networks.md)."""

    sent: int = 0
    received: int = 0
    rounds: int = 0
    comm_s: float = 0.0
    wall_s: float = 0.0
    round_trips: int = 0

    def add(self, other: Counts, times: int = 1) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name) * times)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


SPREAD = ("wall_s_min", "wall_s_max", "comm_s_min", "comm_s_max")


@dataclass
class StepCounts:
    """One measured step of one party: counts per operation kind (every kind of `KINDS`), traffic
    with a dealer (a trusted third party's offline material, kept apart from the online traffic),
    and the backend's own counters for cross-checking."""

    by_kind: dict[str, Counts] = field(default_factory=lambda: {k: Counts() for k in KINDS})
    dealer: Counts = field(default_factory=Counts)
    own: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0  # seconds of the whole step (the median pass, where a step was repeated)
    # the fastest and slowest passes' seconds, of the step and of its time inside exchanges
    spread: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SPREAD, 0.0))

    def total(self) -> Counts:
        out = Counts()
        for c in self.by_kind.values():
            out.add(c)
        return out

    def add(self, other: StepCounts, times: int = 1) -> None:
        for kind, counts in other.by_kind.items():
            self.by_kind[kind].add(counts, times)
        self.dealer.add(other.dealer, times)
        self.wall_s += other.wall_s * times
        for key in SPREAD:
            self.spread[key] += other.spread[key] * times
        for key, n in other.own.items():
            self.own[key] = self.own.get(key, 0) + n * times


@dataclass(frozen=True)
class Rendezvous:
    """Where the parties meet: `url` is rank 0's address, tcp://HOST:PORT, or one address per rank
    separated by commas (for backends whose every party listens; a rank without its own address
    listens on rank 0's host at rank 0's port + its rank). `listen_fd`: (local runs) a socket
    already listening at rank 0's address that rank 0 serves on, so that nothing listens beyond it."""

    url: str
    listen_fd: int | None = None

    def address(self, rank: int) -> tuple[str, int]:
        return self.listed(rank) or (self.host, self.port + rank)

    def listed(self, rank: int) -> tuple[str, int] | None:
        """The address given for `rank` itself, if the url lists one."""
        given = [a.removeprefix("tcp://").rsplit(":", 1) for a in self.url.split(",")]
        return (given[rank][0].strip("[]"), int(given[rank][1])) if rank < len(given) else None

    @property
    def host(self) -> str:
        return self.listed(0)[0]  # type: ignore[index]

    @property
    def port(self) -> int:
        return self.listed(0)[1]  # type: ignore[index]


def url_of(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


Step = Callable[[Any, Mapping[str, Any], Any], Any]  # (ops, weights, x) -> y: part of the model definition


class Session(ABC):
    """One party's connection to the others under a backend, for one run."""

    rank: int

    @abstractmethod
    def share(
        self,
        weights: Mapping[str, Any] | None,
        specs: Mapping[str, tuple[int, ...]],
        x: Any | None,
        x_shape: tuple[int, ...],
    ) -> tuple[Mapping[str, Any], Any]:
        """Secret-share the server's weights (rank 0 passes them, others None) and the client's input
        (rank 1 passes it); shapes are public. Returns this party's handles of both."""

    @abstractmethod
    def measure(self, step: Step, weights: Mapping[str, Any], x: Any) -> tuple[Any, StepCounts]:
        """Run `step` on this backend's `Ops`; its output and what it cost this party (wall_s set)."""

    def prepare(self, weights: Mapping[str, Any]) -> StepCounts | None:
        """Open once what later steps may reuse (CrypTen's reused weight masks) and keep it through every
        later `measure` until `release`; what that cost (None: this backend keeps nothing). A
        generation's decode steps run between the two; a prefill's steps each pay their own."""
        return None

    def release(self) -> None:  # noqa: B027 - nothing kept by default
        """Stop keeping what `prepare` opened."""

    @abstractmethod
    def reveal(self, y: Any, to: int | None = None) -> Any:
        """The plaintext of a shared tensor (a torch tensor), as every party sees it, or as party `to`
        alone does (the others learn nothing and get None)."""

    @abstractmethod
    def close(self) -> None:
        """Leave the others (the dealer, if any, is told to stop)."""

    @property
    def waiting_since(self) -> float | None:
        """Monotonic time the exchange under way began (None: not blocked on another party), so that
        a monitor can tell a party that hangs from one waiting for it."""
        return None

    @property
    def choices(self) -> dict[str, str]:
        """What the backend chose for itself along the way (e.g. how it computed each shape of local
        product), for the record."""
        return {}

    @property
    def dealer_lifetime(self) -> Counts | None:
        """All traffic with a dealer since joining (None: no dealer), for the conservation check."""
        return None


Emit = Callable[[dict[str, Any]], None]


class Backend(ABC):
    """A 2PC protocol pibench runs the model definition under."""

    name: ClassVar[str]  # registry name, the suite's section, records' backend.name
    label: ClassVar[str]  # how tables tag its columns: "[CrypTen]"
    package: ClassVar[str]  # the distribution whose version records carry
    protocol: ClassVar[str]  # one line for records
    settings_type: ClassVar[type]  # a frozen pydantic dataclass: the suite's section
    # How far counts of identical runs may differ, by gate metric (patterns as `--fail-on`): empty
    # for a backend whose bytes and rounds are deterministic (then two passes of a step must agree
    # and the gate compares counts exactly).
    count_tolerance: ClassVar[dict[str, float]] = {}
    # Timing: an unmeasured warm-up pass before each variant ("variant") or only before a session's
    # first ("session": for a backend whose one-time setup dominates and whose layers take minutes),
    # and how many times each step runs when neither the suite nor the command line says (its time
    # is the median pass, with the fastest and slowest recorded).
    warm_up: ClassVar[str] = "variant"
    repeats: ClassVar[int] = 3
    # A round is one blocking exchange (CrypTen's communicator calls), counted in round trips where the
    # backend can (`Counts.round_trips`); where rounds are messages (SPU's receive actions) they are not.
    rounds_are_round_trips: ClassVar[bool] = True
    # RTTs a latency projection charges per round trip (per message, where rounds are messages), as timed
    # across emulated links (bench/projection_check.py): 1 for CrypTen; 0.55 for SPU, whose parties send
    # to each other at once, so each message waits a one-way delay or a little more (docs/networks.md)
    rtt_per_round: ClassVar[float] = 1.0

    @classmethod
    def passes(cls, requested: int | None) -> int:
        """How many times each step is timed: the suite's or command line's `repeats`, else the default."""
        return requested or cls.repeats

    def default_settings(self) -> Any:
        return self.settings_type()

    def weight_masks(self, settings: Mapping[str, Any]) -> str:
        """What a product with a weight opens under `settings` (`pibench.models.symbolic.SymbolicOps`):
        "fresh" (the weight's masked value every time) unless the backend reuses it ("reuse")."""
        return "fresh"

    def load(self) -> None:  # noqa: B027 - nothing heavy by default
        """Import the backend's heavy dependencies now (a party does this before it joins the others, so
        that seconds of imports never stall its heartbeats once it has joined)."""

    def announce(self, rank: int, host: str, given: tuple[str, int] | None) -> tuple[str | None, socket.socket | None]:
        """Where this rank's end of the backend's own transport listens, told to the others over pibench's
        authenticated channel (`pibench.measuring.peers`) once it is up: by default rank 0 alone listens (the key-value
        store the others join through), on a port free now on `host`, bound to that address only.
        `given`: an address the rendezvous lists for this rank (ranks above 0). Returns the address (or
        None) and the listening socket the session takes over."""
        if rank != 0:
            return None, None
        sock = listening_socket(host, 0)
        return url_of(host, sock.getsockname()[1]), sock

    def transport(self, announced: list[str | None], listener: socket.socket | None) -> Rendezvous:
        """The rendezvous of the backend's transport from every rank's announcement (by rank)."""
        first = announced[0]
        assert first is not None
        return Rendezvous(first, listener.detach() if listener else None)

    def local_rendezvous(self, ranks: int) -> tuple[str, socket.socket | None]:
        """Where `ranks` parties on this machine meet: by default rank 0 serves on a loopback socket
        bound here and handed over (no port can be taken in between). Returns the rendezvous and that
        socket (the caller passes its fd to rank 0, then closes its own copy)."""
        listener = listening_socket("127.0.0.1", 0)
        return f"tcp://127.0.0.1:{listener.getsockname()[1]}", listener

    @abstractmethod
    def ranks(self, settings: Any) -> dict[int, str]:
        """The processes of a run, rank -> role ({0: "server", 1: "client"}, maybe a dealer)."""

    def check(self, settings: Any, *, emulated: bool) -> None:  # noqa: B027 - nothing to refuse by default
        """Refuse, with a `PibenchError`, what these settings cannot run (before any process starts)."""

    def reference_gelu(self, settings: Any) -> str:
        """The GELU form ("tanh" or "erf") the backend computes, so that the plaintext reference the
        MPC error is measured against computes the same function."""
        return "tanh"

    @abstractmethod
    def describe(self, settings: Mapping[str, Any], version: str | None) -> str:
        """One line naming the protocol (`named`) and the settings that change costs, for table footers."""

    def named(self, version: str | None) -> str:
        """The backend with the version of its package that measured ("SPU 0.9.5"), or saying that no
        version was recorded (never "SPU None")."""
        return f"{self.label} {version}" if version else f"{self.label} (version not recorded)"

    @abstractmethod
    def session(
        self,
        rank: int,
        rendezvous: Rendezvous,
        settings: Any,
        timeout_s: float,
        on_op: Callable[[], None] | None = None,
        seed: int = 0,
    ) -> Session:
        """Join the others as `rank` within `timeout_s` (imports the backend's heavy dependencies);
        `on_op` is called after every operation (a heartbeat for progress); `seed` (the suite's) makes
        the backend's randomness reproducible where it allows that."""

    def serve_dealer(self, rank: int, rendezvous: Rendezvous, settings: Any, timeout_s: float, emit: Emit) -> None:
        """Run a dealer rank (one that `ranks` lists beyond 0 and 1) until party 0 stops it."""
        raise NotImplementedError(f"backend {self.name} has no rank {rank}")

    def party_memory(self, cfg: ModelConfig, weights: int) -> int:
        """Bytes one party needs for a variant holding `weights` weight elements: by default 8-byte
        shares with the copies comparisons and Beaver products make (32 per element of the largest
        activation) and the server's plaintext and shares (3 per weight element)."""
        largest = max(cfg.H * cfg.T * cfg.T, cfg.T * cfg.d_ff)
        return 8 * (32 * largest + 3 * weights)

    def time_samples(self, call: Call) -> tuple[Sample, ...]:
        """Operand shapes the calibration times `call` on: the GPT-2-sized defaults of
        `pibench.models.opkinds`, or smaller ones for a backend whose products take too long there."""
        return call.time_samples

    def count_samples(self, call: Call) -> tuple[Sample, ...]:
        """Operand shapes the calibration measures `call`'s bytes and rounds on (`count_model`): by default
        the small shapes of `pibench.models.opkinds`, enough for an exact fit."""
        return call.samples

    def cost_form(self, call: Call) -> CostForm:
        """How `call`'s traffic follows from its signature under this backend (`CostForm`): the kind's own,
        unless the backend's algorithm gives one (CrypTen's log-reduction softmax)."""
        return call.form

    def count_model(self, call: Call) -> str:
        """Which model a calibration fits `call`'s bytes and rounds with (`pibench.calibration.fit`):
        "exact" where counts are deterministic; else "fitted" for products, whose traffic grows with their
        operands' sizes, and "interpolated" for the rest, whose traffic comes in lumps."""
        if not self.count_tolerance:
            return "exact"
        return "fitted" if call.name in MATMULS else "interpolated"

    @property
    def shipped_calibration(self) -> Path | None:
        """The calibration that ships for this backend's default settings, if any."""
        return None
