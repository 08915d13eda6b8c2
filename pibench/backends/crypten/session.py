"""One CrypTen party: joining the others over torch.distributed/gloo, sharing, running metered steps.

Where the parties listen: rank 0 serves torch.distributed's key-value store on a socket bound to
exactly the rendezvous address (torch's own store would listen on every interface), and gloo's
connections bind to the interface that reaches the rendezvous host (loopback for local runs). The
whole join is bounded by the timeout; every exchange after it too (gloo's timeout).
"""

from __future__ import annotations

import datetime as dt
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from pibench.backends.base import Counts, Emit, Rendezvous, Session, Step, StepCounts
from pibench.backends.crypten import products
from pibench.backends.crypten.compat import import_crypten
from pibench.backends.crypten.interpreter import CrypTenOps
from pibench.backends.crypten.masks import WeightMasks
from pibench.backends.crypten.meter import Meter, meter_dealer_side
from pibench.backends.crypten.settings import CrypTenSettings, weight_masks
from pibench.util.errors import PibenchError
from pibench.util.procs import Deadline, listening_socket, local_interface

WORLD_SIZE = 2  # the two computing parties; a TTP is one more process
ROLES = {0: "server", 1: "client", 2: "TTP"}


def exact_decode(ring: torch.Tensor, scale: int) -> torch.Tensor:
    """Fixed-point ring elements -> floats, exactly: floor(t / scale) + (t mod scale) / scale.

    CrypTen 0.4.1's `FixedPointEncoder.decode` (behind `get_plain_text`) divides negative values by
    scale - 1 instead of scale, so a value within k units in the last place above -k decodes one too
    low (-3.99997 -> -4.99997). The computation is unaffected; only what is revealed is off by exactly
    1, which made records show an MPC error of 1.0 for outputs that were right.
    """
    whole = torch.div(ring, scale, rounding_mode="floor")
    return whole.double() + (ring - whole * scale).double() / scale


def _configure(crypten: Any, settings: CrypTenSettings) -> None:
    cfg = crypten.cfg
    cfg.communicator.verbose = True
    cfg.encoder.precision_bits = settings.precision_bits
    cfg.mpc.provider = settings.provider
    for key, value in settings.as_dict()["functions"].items():
        setattr(cfg.functions, key, value)


def _store(rank: int, world: int, rendezvous: Rendezvous, timeout_s: float) -> Any:
    """torch.distributed's TCP store: rank 0 serves it on a socket bound to the rendezvous address
    only (`master_listen_fd`), the others connect to it."""
    timeout = dt.timedelta(seconds=timeout_s)
    if rank != 0:
        return dist.TCPStore(rendezvous.host, rendezvous.port, world, False, timeout)
    if rendezvous.listen_fd is not None:
        fd = rendezvous.listen_fd
    else:
        try:
            fd = listening_socket(rendezvous.host, rendezvous.port).detach()
        except OSError as err:
            raise PibenchError(f"party 0 cannot listen on {rendezvous.url}: {err.strerror}") from None
    return dist.TCPStore(
        rendezvous.host, rendezvous.port, world, True, timeout, wait_for_workers=False, master_listen_fd=fd
    )


@contextmanager
def _joined_through(store: Any, timeout_s: float) -> Iterator[None]:
    """While inside, CrypTen's `init_process_group(init_method=...)` uses `store` and `timeout_s`, and so
    do the groups it makes with `new_group` (which would otherwise wait 30 minutes, torch's default)."""
    original_init, original_group = dist.init_process_group, dist.new_group
    timeout = dt.timedelta(seconds=timeout_s)

    def with_store(*args: Any, **kwargs: Any) -> Any:
        kwargs.pop("init_method", None)
        return original_init(*args, **(kwargs | {"store": store, "timeout": timeout}))

    def bounded(*args: Any, **kwargs: Any) -> Any:
        kwargs["timeout"] = timeout
        return original_group(*args, **kwargs)

    dist.init_process_group, dist.new_group = with_store, bounded
    try:
        yield
    finally:
        dist.init_process_group, dist.new_group = original_init, original_group


def _prepare(rank: int, rendezvous: Rendezvous, settings: CrypTenSettings) -> Any:
    """CrypTen imported and configured; the environment its communicator reads set for `rank`."""
    crypten = import_crypten()
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), RENDEZVOUS=rendezvous.url, DISTRIBUTED_BACKEND="gloo")
    if "GLOO_SOCKET_IFNAME" not in os.environ:  # an emulated link names its interface itself
        iface = local_interface(rendezvous.host)
        if iface:
            os.environ["GLOO_SOCKET_IFNAME"] = iface
    _configure(crypten, settings)
    return crypten


def join(
    rank: int, rendezvous: Rendezvous, settings: CrypTenSettings, timeout_s: float, start: Callable[[Any], None]
) -> Any:
    """Join the others as `rank` within `timeout_s` in all (else a one-line error and exit 2);
    `start(crypten)` is what joins (crypten.init, or the dealer's server)."""
    crypten = _prepare(rank, rendezvous, settings)
    world = WORLD_SIZE + (settings.provider == "TTP")

    def late() -> str:
        return f"party {rank} ({ROLES[rank]}) could not join the others at {rendezvous.url} within {timeout_s:.0f} s"

    try:
        with Deadline(timeout_s + 5, late):
            store = _store(rank, world, rendezvous, timeout_s)
            with _joined_through(store, timeout_s):
                start(crypten)
    except (RuntimeError, ValueError) as err:
        raise PibenchError(f"{late()}: {str(err).strip().splitlines()[0] if str(err).strip() else err}") from None
    return crypten


def seed_generators(crypten: Any, rank: int, seed: int) -> None:
    """Seed CrypTen's random generators from the suite's seed instead of os.urandom, so that a run is
    reproducible: the same shares, triples and so the same output (and MPC error) every time. A
    benchmark on synthetic data protects no secret; a deployment must not do this. The pairwise
    seeds agree as CrypTen's own exchange makes them: party r's "next" is party r+1's "prev"."""
    base = (seed % 2**40) * 4096
    seeds = {
        "global": base + 1,
        "local": base + 16 + rank,
        "next": base + 64 + rank,
        "prev": base + 64 + (rank - 1) % 2,
    }
    for key, by_device in crypten.generators.items():
        for generator in by_device.values():
            generator.manual_seed(seeds[key])
    torch.manual_seed(base + 256 + rank)  # what CrypTen draws without a generator (argmax tie-breaks)


class CrypTenSession(Session):
    """A joined CrypTen party (rank 0 server, 1 client)."""

    def __init__(
        self,
        rank: int,
        rendezvous: Rendezvous,
        settings: CrypTenSettings,
        timeout_s: float,
        on_op: Callable[[], None] | None = None,
        seed: int = 0,
    ) -> None:
        torch.set_num_threads(1)  # two parties share the machine's cores; also avoids fork/thread hangs
        products.install(settings.local_products)
        self.rank, self.settings = rank, settings
        self.device = settings.device
        self.crypten = join(rank, rendezvous, settings, timeout_s, lambda c: c.init())
        seed_generators(self.crypten, rank, seed)
        self.comm = self.crypten.communicator.get()
        dealer = WORLD_SIZE if settings.provider == "TTP" else None
        self.meter = Meter(rank, WORLD_SIZE, dealer_rank=dealer, on_op=on_op)
        self.meter.attach(self.comm)
        fs = settings.functions
        masks = WeightMasks(rank) if weight_masks(settings.as_dict()) == "reuse" else None
        self.ops = CrypTenOps(self.meter, settings.gelu, settings.softmax, fs.max_method, settings.device, masks)
        self.keeping = False  # between `prepare` and `release`: steps reuse the opened masks

    def share(
        self,
        weights: Mapping[str, Any] | None,
        specs: Mapping[str, tuple[int, ...]],
        x: Any | None,
        x_shape: tuple[int, ...],
    ) -> tuple[dict[str, Any], Any]:
        def share(value: Any, shape: tuple[int, ...], src: int) -> Any:
            plain = value if value is not None else torch.zeros(shape)
            return self.crypten.cryptensor(plain.to(self.device), src=src, device=self.device)

        shared = {n: share(weights[n] if weights is not None else None, shape, 0) for n, shape in specs.items()}
        self.ops.use_weights(shared)
        return shared, share(x, x_shape, 1)

    def measure(self, step: Step, weights: Mapping[str, Any], x: Any) -> tuple[Any, StepCounts]:
        if self.ops.masks is not None and not self.keeping:  # each step opens the weights it uses
            self.ops.masks.forget()
        self.meter.reset()
        self.comm.reset_communication_stats()
        start = time.perf_counter()
        y = step(self.ops, weights, x)
        wall = time.perf_counter() - start
        counts = self.meter.snapshot(self.comm.get_communication_stats())
        counts.wall_s = wall
        return y, counts

    def prepare(self, weights: Mapping[str, Any]) -> StepCounts | None:
        if self.ops.masks is None:
            return None
        if not self.keeping:  # a first `prepare`: nothing a prefill's step left counts as opened
            self.ops.masks.forget()
        self.keeping = True  # what earlier `prepare` calls opened stays
        _, counts = self.measure(lambda ops, w, x: ops.open_masks(w), weights, None)
        return counts

    def release(self) -> None:
        self.keeping = False
        if self.ops.masks is not None:
            self.ops.masks.forget()

    @property
    def waiting_since(self) -> float | None:
        return self.meter.waiting_since

    @property
    def dealer_lifetime(self) -> Counts | None:
        return self.meter.dealer_lifetime if self.meter.dealer_rank is not None else None

    def reveal(self, y: Any, to: int | None = None) -> Any:
        self.meter.reset()
        plain = y.reveal(dst=to)  # with dst, the others' copy is a partial sum: discarded
        return exact_decode(plain.cpu(), y.encoder.scale) if to in (None, self.rank) else None

    @property
    def choices(self) -> dict[str, str]:
        return dict(products.CHOICES)

    def close(self) -> None:
        self.crypten.uninit()  # with a TTP, rank 0 also tells it to stop here


def serve_dealer(rank: int, rendezvous: Rendezvous, settings: CrypTenSettings, timeout_s: float, emit: Emit) -> None:
    """The TTP: deal triples to the parties until party 0 says "terminate", then report its traffic."""
    if settings.provider != "TTP":
        raise PibenchError("rank 2 (TTP) is only needed with crypten.provider: TTP")
    crypten = import_crypten()
    counts = meter_dealer_side(crypten.communicator.DistributedCommunicator, rank)
    # TTPServer joins by crypten.init() and then serves until told to stop; joining first keeps the
    # join under its deadline, and TTPServer's own init() then finds CrypTen initialised
    join(rank, rendezvous, settings, timeout_s, lambda c: c.init())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "CrypTen is already initialized")
        crypten.mpc.provider.ttp_provider.TTPServer()
    emit({"event": "dealer", "counts": counts.to_json()})
