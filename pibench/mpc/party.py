"""One party of a CrypTen 2PC run of a suite: rank 0 is the server (weights), rank 1 the client
(input embeddings); with the TTP provider, rank 2 is the trusted third party dealing triples.

Both parties walk the suite in order. For each variant they secret-share weights and input, run the
input stage and a sample of layers (one per layer signature, see `pibench.model.layer_sample`; all
layers with `full`), meter every exchange by operation kind, and extrapolate bytes and rounds exactly
(layers of one signature cost the same) and time proportionally. Timing starts after one unmeasured
warm-up pass of the first layer, so it is that of steady state.
Progress goes to `emit` as events.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import torch
import torch.distributed as dist

from pibench.errors import PibenchError
from pibench.interp.plaintext import TorchModel, TorchOps
from pibench.model import input_stage, layer, layer_sample, layer_weight_names, param_specs
from pibench.mpc.compat import import_crypten
from pibench.mpc.crypten_ops import CrypTenOps
from pibench.mpc.meter import KINDS, Counts, Meter
from pibench.mpc.settings import CrypTenSettings
from pibench.suite import Suite, SuiteEntry

WORLD_SIZE = 2
ROLES = {0: "server", 1: "client", 2: "TTP"}
Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class PartyOptions:
    rank: int
    rendezvous: str  # tcp://HOST:PORT of rank 0
    suite: Suite
    full: bool = False  # measure every layer instead of one per signature
    timeout_s: float = 45.0  # longest wait for the other party in any exchange


def _configure(crypten: Any, settings: CrypTenSettings) -> None:
    cfg = crypten.cfg
    cfg.communicator.verbose = True
    cfg.encoder.precision_bits = settings.precision_bits
    cfg.mpc.provider = settings.provider
    for key, value in settings.as_dict()["functions"].items():
        setattr(cfg.functions, key, value)


def _prepare(rank: int, rendezvous: str, settings: CrypTenSettings) -> Any:
    """CrypTen imported and configured, and the environment its communicator reads set for `rank`."""
    crypten = import_crypten()
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), RENDEZVOUS=rendezvous, DISTRIBUTED_BACKEND="gloo")
    _configure(crypten, settings)
    return crypten


def start_crypten(rank: int, rendezvous: str, settings: CrypTenSettings, timeout_s: float) -> Any:
    """Join the parties (and the TTP) over torch.distributed/gloo, with `timeout_s` on every wait."""
    crypten = _prepare(rank, rendezvous, settings)
    original = dist.init_process_group

    def with_timeout(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", dt.timedelta(seconds=timeout_s))
        return original(*args, **kwargs)

    dist.init_process_group = with_timeout
    try:
        crypten.init()
    except (RuntimeError, ValueError) as err:
        raise PibenchError(
            f"party {rank} ({ROLES[rank]}) could not join the others at {rendezvous} "
            f"within {timeout_s:.0f} s: {str(err).splitlines()[0]}"
        ) from None
    finally:
        dist.init_process_group = original
    return crypten


def run_ttp(opts: PartyOptions) -> None:
    """Serve triples until party 0 says "terminate"."""
    if opts.suite.crypten.provider != "TTP":
        raise PibenchError("rank 2 (TTP) is only needed with crypten.provider: TTP")
    crypten = _prepare(2, opts.rendezvous, opts.suite.crypten)
    crypten.mpc.provider.ttp_provider.TTPServer()


class _PeakRSS:
    """Samples this process's resident memory every 20 ms; `.peak` in bytes."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.02)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def synthetic_weights(entry: SuiteEntry, seed: int) -> dict[str, torch.Tensor]:
    """The server's weights: a random model of the variant (folded reparametrisations)."""
    with torch.no_grad():
        return {k: v.detach() for k, v in TorchModel(entry.config, seed=seed).eval().effective_weights().items()}


def synthetic_input(entry: SuiteEntry, seed: int) -> torch.Tensor:
    """The client's input embeddings (T, d), unit-variance as GPT-2's embedded tokens roughly are."""
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(entry.config.T, entry.config.d, generator=gen)


def _measure(crypten: Any, meter: Meter, opts: PartyOptions, entry: SuiteEntry, emit: Emit) -> dict[str, Any]:
    """This party's counts for one variant, extrapolated to the whole stack."""
    cfg, rank, seed = entry.config, opts.rank, opts.suite.seed
    sample = {i: 1 for i in range(cfg.L)} if opts.full else layer_sample(cfg)
    layers = sorted(sample)
    names = layer_weight_names(cfg, layers)
    specs = param_specs(cfg)
    ops = CrypTenOps(meter, opts.suite.crypten.gelu)
    total = Counts()
    by_kind = {k: Counts() for k in KINDS}
    own = {"bytes": 0, "rounds": 0}  # CrypTen's own counters, for cross-checking the meter
    comm = crypten.communicator.get()
    with _PeakRSS() as rss:
        plain_w = synthetic_weights(entry, seed) if rank == 0 else None
        # Shapes are public; values come from their owner (src), the other party passes zeros.
        weights = {
            n: crypten.cryptensor(plain_w[n] if rank == 0 else torch.zeros(specs[n].shape), src=0) for n in names
        }
        x_plain = synthetic_input(entry, seed) if rank == 1 else torch.zeros(cfg.T, cfg.d)
        x = crypten.cryptensor(x_plain, src=1)
        # The first passes in a process pay for fresh allocations (~10% of a GPT-2 variant's time):
        # one unmeasured pass of the first layer makes the timing that of steady state.
        layer(ops, weights, x, cfg, layers[0])
        emit({"event": "warm-up", "variant": entry.name})
        steps: list[tuple[str, int, int | None]] = [("input stage", 1, None)]
        steps += [(f"layer {i}", sample[i], i) for i in layers]
        step_log = []
        for label, times, index in steps:
            # A step that stands for several layers is timed twice and the faster pass kept: its
            # time is multiplied, so one-off noise would be too. Both passes must move the same bytes.
            best = None
            for _ in range(2 if times > 1 else 1):
                meter.reset()
                comm.reset_communication_stats()
                start = time.perf_counter()
                y = input_stage(ops, weights, x, cfg) if index is None else layer(ops, weights, x, cfg, index)
                wall = time.perf_counter() - start
                stats, kinds, step = comm.get_communication_stats(), dict(meter.by_kind), meter.total()
                step.wall_s = wall
                if best and (step.sent, step.rounds) != (best[2].sent, best[2].rounds):
                    raise RuntimeError(f"{entry.name} {label}: two passes moved different bytes or rounds")
                if best is None or wall < best[2].wall_s:
                    best = (stats, kinds, step)
            x = y
            stats, kinds, step = best
            own["bytes"] += int(stats["bytes"]) * times
            own["rounds"] += stats["rounds"] * times
            for kind, counts in kinds.items():
                by_kind[kind].add(counts, times)
            total.add(step, times)
            step_log.append({"step": label, "stands_for": times, **step.to_json()})
            emit({"event": "step", "variant": entry.name, "step": label, "stands_for": times})
        meter.reset()
        out = x.get_plain_text()
    error = None
    if rank == 0:  # the reference needs the client's input: synthetic, so recomputed from its seed
        x_ref = synthetic_input(entry, seed)
        ref_ops = TorchOps(opts.suite.crypten.gelu)
        with torch.no_grad():
            ref = input_stage(ref_ops, plain_w, x_ref, cfg)
            for i in layers:
                ref = layer(ref_ops, plain_w, ref, cfg, i)
        error = (out - ref).abs().max().item()
    return {
        "rank": rank,
        "role": ROLES[rank],
        **total.to_json(),
        "by_kind": {k: c.to_json() for k, c in by_kind.items()},
        "crypten_counters": own,
        "peak_rss_bytes": rss.peak,
        "max_abs_error": error,
        "layers_measured": {str(i): sample[i] for i in layers},
        "steps": step_log,
    }


def _merged(counts: list[dict[str, Any]]) -> dict[str, Any]:
    """Both parties' counts as one: bytes = sent by both (each byte once, both directions); rounds
    and seconds = the larger party's (they run in lockstep)."""
    return {
        "bytes": sum(c["sent"] for c in counts),
        **{key: max(c[key] for c in counts) for key in ("rounds", "wall_s", "comm_s")},
    }


def merge_parties(parties: list[dict[str, Any]], full: bool) -> dict[str, Any]:
    """One variant's measurement from both parties' results."""
    parties = sorted(parties, key=lambda p: p["rank"])
    return {
        "sampled": not full,
        "layers_measured": parties[0]["layers_measured"],
        **_merged(parties),
        "max_abs_error": parties[0]["max_abs_error"],
        "by_kind": {kind: _merged([p["by_kind"][kind] for p in parties]) for kind in KINDS},
        "parties": [{k: v for k, v in p.items() if k not in ("layers_measured", "max_abs_error")} for p in parties],
    }


def _ticker(emit: Emit, every_s: float = 2.0) -> Callable[[], None]:
    """A heartbeat for long steps: a "tick" event at most every `every_s` seconds of progress."""
    last = time.monotonic()

    def tick() -> None:
        nonlocal last
        if time.monotonic() - last >= every_s:
            last = time.monotonic()
            emit({"event": "tick"})

    return tick


def _watch_waits(meter: Meter, emit: Emit, stop: threading.Event, after_s: float = 2.0) -> None:
    """While this party is blocked in an exchange for over `after_s`, say so every second: a monitor
    can then tell the party that hangs (silent) from the one waiting for it."""
    while not stop.wait(1.0):
        since = meter.waiting_since
        if since is not None and time.monotonic() - since > after_s:
            emit({"event": "waiting", "for_s": round(time.monotonic() - since, 1)})


def run_party(opts: PartyOptions, emit: Emit) -> list[dict[str, Any]]:
    """Run every variant of the suite as party `opts.rank`; returns the merged measurements."""
    torch.set_num_threads(1)  # two parties share the machine's cores; also avoids fork/thread hangs
    crypten = start_crypten(opts.rank, opts.rendezvous, opts.suite.crypten, opts.timeout_s)
    comm = crypten.communicator.get()
    emit({"event": "ready", "rank": opts.rank})
    meter = Meter(opts.rank, WORLD_SIZE, on_op=_ticker(emit))
    meter.attach(comm)
    measured = []
    stop = threading.Event()
    threading.Thread(target=_watch_waits, args=(meter, emit, stop), daemon=True).start()
    try:
        for entry in opts.suite.entries:
            emit({"event": "variant", "variant": entry.name})
            mine = _measure(crypten, meter, opts, entry, emit)
            both: list[Any] = [None] * WORLD_SIZE
            dist.all_gather_object(both, mine, group=comm.main_group)  # outside the meter
            merged = merge_parties(both, opts.full)
            measured.append(merged)
            emit({"event": "result", "variant": entry.name, "measured": merged})
    finally:
        stop.set()
        crypten.uninit()  # with a TTP, rank 0 also tells it to stop here
    return measured
