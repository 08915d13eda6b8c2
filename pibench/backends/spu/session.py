"""One SPU party: SPU's brpc link, the model definition executed op by op, per-op link figures.

Execution: every `Ops` call is compiled (jax -> XLA -> SPU, cached by operation and shapes) and run
as one SPU executable; secret values stay as this party's SPU shares between calls. Public constants
(the causal mask, ...) are compiled in. Compiling is set-up: a step's seconds leave it out (a decode
step's shapes grow with the context, so each step compiles a few programs).

Where the figures come from: SPU 0.9.5's Python API has no link statistics; its runtime, with
`enable_pphlo_profile`, logs after every run the bytes and messages ("actions") this party sent and
received ("Link details: total send bytes S, recv bytes R, send actions A, recv actions B"). Each
party points SPU's logger at a pipe of its own and reads that line after each run, so every call's
traffic is attributed to its operation kind, on both parties (the refills of SPU's pools of oblivious
transfers apart, to the kind "refills": `REFILLS_APART_BELOW`). A round is counted as one message
this party waited for (its recv actions); SPU pipelines messages, so this bounds the round trips
from above. SPU does not time its exchanges: `comm_s` is 0 (projections then treat compute and
wire time as serial).

Where the parties listen: each on its own address (`Rendezvous.address(rank)`), bound there by brpc.
"""

from __future__ import annotations

import os
import queue
import re
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
import spu.api as spu_api
import spu.libspu as libspu
import torch
from spu.utils import frontend as spu_fe

from pibench.backends.base import Counts, Rendezvous, Session, Step, StepCounts
from pibench.backends.spu.jaxops import JaxOps
from pibench.backends.spu.settings import SPUSettings
from pibench.models.opkinds import KINDS, matmul_kind
from pibench.util.errors import PibenchError
from pibench.util.procs import Deadline

ROLES = {0: "server", 1: "client"}
LINK = re.compile(r"Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+), recv actions (\d+)")


# SPU draws oblivious transfers and Beaver triples from pools it refills in lumps (its ferret OT extension:
# about 0.53 MB in 2,562 one-way messages for some 10 million transfers; a batch of triples about 1.1 MB in
# 4 messages) inside whichever call empties them, so that a small call's traffic could be mostly a refill by
# chance. A measured call that moved less than this (both ways, at this party) runs again: a refill only adds
# bytes and messages, so the run with the fewest messages is the call's own traffic, and the first run's
# excess over it, its refills, is booked to the kind "refills". A program run for the first time in a session
# runs a third time, as triples are topped up by what each call lacks, so two runs in a row can both refill
# (decided on what both parties know alike, their history, never on one party's figures); later runs of it
# also weigh the least it moved before. Each run holds, on average, the refills of what it consumed, so the
# refills booked are what the step's own consumption costs. A larger call keeps its refills (one is at most
# a few percent of it).
REFILLS_APART_BELOW = 32_000_000


def _messages(figures: tuple[int, ...]) -> int:
    return figures[2] + figures[3]


def own_and_refills(
    first: tuple[int, ...], others: Sequence[tuple[int, ...]]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A call's own link figures (sent, received, send actions, recv actions) from its first run and the
    same program's other runs: those of the run with the fewest messages (the first where it ties: runs
    that sent and received as many messages refilled nothing, and their bytes differ only as homomorphic
    ciphertexts vary in size, some hundred bytes), no more than the first run's; and the first run's excess
    over them, its refills."""
    least = min([first, *others], key=_messages)  # the first of the fewest
    own = tuple(min(a, b) for a, b in zip(first, least, strict=True))
    return own, tuple(a - o for a, o in zip(first, own, strict=True))


class _ProfileLog:
    """SPU's log, read from a pipe: one (sent, received, send actions, recv actions) per run."""

    _instance: _ProfileLog | None = None

    def __init__(self) -> None:
        read, write = os.pipe()
        opts = libspu.logging.LogOptions()
        opts.enable_console_logger = False
        opts.system_log_path = f"/dev/fd/{write}"
        opts.max_log_file_size = 1 << 50
        libspu.logging.setup_logging(opts)
        self.links: queue.Queue[tuple[int, int, int, int]] = queue.Queue()
        self.tail: list[str] = []  # the last lines, for error messages
        threading.Thread(target=self._read, args=(read,), daemon=True).start()

    @classmethod
    def get(cls) -> _ProfileLog:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "r", errors="replace") as lines:
            for line in lines:
                self.tail = [*self.tail[-20:], line.strip()]
                match = LINK.search(line)
                if match:
                    self.links.put(tuple(int(g) for g in match.groups()))  # type: ignore[arg-type]

    def next_run(self, timeout_s: float) -> tuple[int, int, int, int]:
        try:
            return self.links.get(timeout=timeout_s)
        except queue.Empty:
            raise PibenchError("SPU logged no link figures for a run (profiling off?)") from None


@dataclass
class SpuValue:
    """This party's share of a secret (or the server's private) tensor."""

    share: Any  # libspu.Share
    shape: tuple[int, ...]


def _pack(share: Any) -> bytes:
    parts = [share.meta, *share.share_chunks]
    return struct.pack(f"<I{len(parts)}Q", len(parts), *(len(p) for p in parts)) + b"".join(parts)


def _unpack(data: bytes) -> Any:
    (n,) = struct.unpack_from("<I", data)
    sizes = struct.unpack_from(f"<{n}Q", data, 4)
    offset, parts = 4 + 8 * n, []
    for size in sizes:
        parts.append(data[offset : offset + size])
        offset += size
    share = libspu.Share()
    share.meta, share.share_chunks = parts[0], parts[1:]
    return share


def runtime_config(s: SPUSettings) -> Any:
    config = libspu.RuntimeConfig(
        protocol=getattr(libspu.ProtocolKind, s.protocol),
        field=getattr(libspu.FieldType, s.field),
        fxp_fraction_bits=s.fxp_fraction_bits,
    )
    modes = libspu.RuntimeConfig
    config.fxp_exp_mode = getattr(modes.ExpMode, f"EXP_{s.exp_mode.upper()}")
    config.fxp_exp_iters = s.exp_iters
    config.fxp_log_mode = getattr(modes.LogMode, f"LOG_{s.log_mode.upper()}")
    config.fxp_log_iters = s.log_iters
    config.fxp_div_goldschmidt_iters = s.div_goldschmidt_iters
    config.sigmoid_mode = getattr(modes.SigmoidMode, f"SIGMOID_{s.sigmoid_mode.upper()}")
    config.enable_lower_accuracy_rsqrt = s.enable_lower_accuracy_rsqrt
    config.enable_pphlo_profile = True  # the per-run link figures
    return config


class SpuOps(JaxOps):
    """`Ops` that run each call (`JaxOps`'s) as one SPU executable on this party's shares; the public
    constants are `JaxOps`'s, compiled into the calls that use them."""

    def __init__(self, session: SPUSession) -> None:
        super().__init__(session.settings.gelu)
        self.s = session

    def matmul(self, a: Any, b: Any, role: str) -> Any:
        return self.s.call(matmul_kind(role), "matmul", jnp.matmul, a, b)

    def add(self, a: Any, b: Any) -> Any:
        return self.s.call("other", "add", jnp.add, a, b)

    def mul(self, a: Any, b: Any) -> Any:
        return self.s.call("other", "mul", jnp.multiply, a, b)

    def scale(self, a: Any, c: float) -> Any:
        return self.s.call("other", f"scale{c!r}", lambda x: super(SpuOps, self).scale(x, c), a)

    def softmax(self, x: Any) -> Any:
        return self.s.call("softmax", "softmax", super().softmax, x)

    def layernorm(self, x: Any, gain: Any, bias: Any) -> Any:
        return self.s.call("layernorm", "layernorm", super().layernorm, x, gain, bias)

    def gelu(self, x: Any) -> Any:
        return self.s.call("gelu", f"gelu{self.tanh}", super().gelu, x)

    def relu(self, x: Any) -> Any:
        return self.s.call("relu", "relu", super().relu, x)

    def argmax(self, x: Any) -> Any:
        return self.s.call("argmax", "argmax", super().argmax, x)

    def split_heads(self, x: Any, heads: int) -> Any:
        return self.s.call("other", f"heads{heads}", lambda v: super(SpuOps, self).split_heads(v, heads), x)

    def split(self, x: Any, parts: int) -> list[Any]:
        return self.s.call("other", f"split{parts}", lambda v: tuple(super(SpuOps, self).split(v, parts)), x)

    def merge_heads(self, x: Any) -> Any:
        return self.s.call("other", "merge", super().merge_heads, x)

    def transpose(self, x: Any) -> Any:
        return self.s.call("other", "transpose", super().transpose, x)

    def concat(self, a: Any, b: Any) -> Any:
        return self.s.call("other", "concat", super().concat, a, b)

    def rows(self, x: Any, start: int, stop: int) -> Any:
        return self.s.call("other", f"rows{start}:{stop}", lambda v: super(SpuOps, self).rows(v, start, stop), x)


class SPUSession(Session):
    """A joined SPU party (rank 0 server, 1 client)."""

    def __init__(
        self,
        rank: int,
        rendezvous: Rendezvous,
        settings: SPUSettings,
        timeout_s: float,
        on_op: Callable[[], None] | None = None,
    ) -> None:
        self.rank, self.settings, self.timeout_s, self.on_op = rank, settings, timeout_s, on_op
        self.log = _ProfileLog.get()
        self.config = runtime_config(settings)
        self.copts = libspu.CompilerOptions()
        self.copts.enable_optimize_denominator_with_broadcast = settings.optimize_denominator_with_broadcast
        self.link = self._join(rendezvous, timeout_s)
        self.runtime = spu_api.Runtime(self.link, self.config)
        self.io = spu_api.Io(2, self.config)
        self.ops = SpuOps(self)
        self.executables: dict[tuple[Any, ...], tuple[Any, list[tuple[int, ...]], bool]] = {}
        self.counts: StepCounts | None = None
        self.compile_s = 0.0  # seconds compiling programs (new operations or shapes), kept out of steps' seconds
        self.rerun_s = 0.0  # seconds running calls again to tell their own traffic from refills, kept out too
        self.least: dict[int, tuple[int, ...]] = {}  # per program (its executable's id): the least it moved

    def _join(self, rendezvous: Rendezvous, timeout_s: float) -> Any:
        desc = libspu.link.Desc()
        for r in ROLES:
            host, port = rendezvous.address(r)
            desc.add_party(f"party{r}", f"{host}:{port}")
        desc.recv_timeout_ms = int(timeout_s * 1000)
        desc.connect_retry_interval_ms = 200
        desc.connect_retry_times = max(1, int(timeout_s * 5))
        where = ", ".join(f"{h}:{p}" for h, p in (rendezvous.address(r) for r in ROLES))

        def late() -> str:
            return (
                f"party {self.rank} ({ROLES[self.rank]}) could not join the other at {where} within {timeout_s:.0f} s"
            )

        try:
            with Deadline(timeout_s + 5, late):
                return libspu.link.create_brpc(desc, self.rank)
        except RuntimeError as err:
            raise PibenchError(f"{late()}: {str(err).strip().splitlines()[0][:200]}") from None

    # -- running one call -------------------------------------------------------------------------
    def _compiled(self, name: str, fn: Callable[..., Any], args: Sequence[Any]) -> tuple[Any, list[Any], bool]:
        secret = [a for a in args if isinstance(a, SpuValue)]
        consts = {i: a for i, a in enumerate(args) if not isinstance(a, SpuValue)}
        key = (name, tuple(a.shape for a in secret), tuple((i, c.shape, c.tobytes()) for i, c in consts.items()))
        if key not in self.executables:

            def f(*xs: Any) -> Any:
                it = iter(xs)
                return fn(*(jnp.asarray(consts[i]) if i in consts else next(it) for i in range(len(args))))

            started = time.perf_counter()
            dummies = [np.zeros(a.shape, np.float32) for a in secret]
            names = [f"x{i}" for i in range(len(secret))]
            vis = [libspu.Visibility.VIS_SECRET] * len(secret)
            executable, out = spu_fe.compile(
                spu_fe.Kind.JAX,
                f,
                dummies,
                {},
                names,
                vis,
                lambda outs: [f"y{i}" for i in range(len(outs))],
                copts=self.copts,
            )
            many = isinstance(out, tuple | list)
            shapes = [tuple(o.shape) for o in (out if many else [out])]
            self.executables[key] = (executable, shapes, many)
            self.compile_s += time.perf_counter() - started
        return self.executables[key]

    def _run(self, name: str, executable: Any) -> tuple[float, tuple[int, int, int, int]]:
        """Run `executable` on the variables set: its seconds and this party's link figures (sent,
        received, send actions, recv actions)."""
        start = time.perf_counter()
        done = threading.Event()
        threading.Thread(target=self._heartbeat, args=(done,), daemon=True).start()
        try:
            self.runtime.run(executable)
        except RuntimeError as err:
            raise RuntimeError(f"SPU {name}: {str(err).strip().splitlines()[0][:200]}") from None
        finally:
            done.set()
        wall = time.perf_counter() - start
        return wall, self.log.next_run(self.timeout_s)

    def call(self, kind: str, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn` on `args` (this party's shares, or public numpy constants) as one SPU executable;
        its traffic goes to operation kind `kind`, the pools' refills to "refills" (`own_and_refills`)."""
        executable, shapes, many = self._compiled(name, fn, args)
        secret = [a for a in args if isinstance(a, SpuValue)]
        for i, value in enumerate(secret):
            self.runtime.set_var(f"x{i}", value.share)
        wall, figures = self._run(name, executable)
        if self.counts is not None:
            sent, received, send_actions, _ = figures
            own: tuple[int, ...] = figures
            refills: tuple[int, ...] = (0, 0, 0, 0)
            if sent + received < REFILLS_APART_BELOW:  # the same sum on both parties: both run it again
                started = time.perf_counter()
                others = [self._run(name, executable)[1]]
                known = self.least.get(id(executable))
                if known is None:  # a program's first call: a third run (both parties alike: the same history)
                    others.append(self._run(name, executable)[1])
                self.rerun_s += time.perf_counter() - started
                own, refills = own_and_refills(figures, [*others, *([known] if known else [])])
                if known is None or _messages(own) < _messages(known):
                    self.least[id(executable)] = own
            self.counts.by_kind[kind].add(Counts(own[0], own[1], own[3], 0.0, wall))
            self.counts.by_kind["refills"].add(Counts(refills[0], refills[1], refills[3], 0.0, 0.0))
            self.counts.own["spu_send_actions"] = self.counts.own.get("spu_send_actions", 0) + send_actions
            self.counts.own["spu_programs"] = self.counts.own.get("spu_programs", 0) + 1
        outs = [SpuValue(self.runtime.get_var(f"y{i}"), shape) for i, shape in enumerate(shapes)]
        for name_ in [*(f"x{i}" for i in range(len(secret))), *(f"y{i}" for i in range(len(shapes)))]:
            self.runtime.del_var(name_)
        if self.on_op:
            self.on_op()
        return outs if many else outs[0]

    def _heartbeat(self, done: threading.Event) -> None:
        """A run can take a minute (a GPT-2 softmax): say it is alive while it computes. A lost peer
        still ends it: SPU's link gives up on a receive after the timeout."""
        while not done.wait(1.0):
            if self.on_op:
                self.on_op()

    # -- Session ------------------------------------------------------------------------------------
    def _send_shares(self, values: Sequence[np.ndarray], owner: int, private: bool) -> list[SpuValue]:
        """`owner` makes shares of its `values` (private: kept as its own input) and sends the other
        party its shares; both return their own, in order."""
        mine = []
        if self.rank == owner:
            for v in values:
                shares = self.io.make_shares(
                    np.asarray(v, np.float32), libspu.Visibility.VIS_SECRET, owner if private else -1
                )
                self.link.send(1 - owner, _pack(shares[1 - owner]))
                mine.append(SpuValue(shares[owner], tuple(v.shape)))
        else:
            for v in values:
                mine.append(SpuValue(_unpack(self.link.recv(owner)), tuple(v.shape)))
        return mine

    def share(
        self,
        weights: Mapping[str, Any] | None,
        specs: Mapping[str, tuple[int, ...]],
        x: Any | None,
        x_shape: tuple[int, ...],
    ) -> tuple[dict[str, Any], Any]:
        names = list(specs)
        plain = [np.asarray(weights[n]) if weights is not None else np.zeros(specs[n], np.float32) for n in names]
        shared = self._send_shares(plain, 0, self.settings.weights == "private")
        x_plain = np.asarray(x) if x is not None else np.zeros(x_shape, np.float32)
        (x_shared,) = self._send_shares([x_plain], 1, False)
        return dict(zip(names, shared, strict=True)), x_shared

    def measure(self, step: Step, weights: Mapping[str, Any], x: Any) -> tuple[Any, StepCounts]:
        self.counts = StepCounts()
        start, compiled, reran = time.perf_counter(), self.compile_s, self.rerun_s
        try:
            y = step(self.ops, weights, x)
        finally:
            counts, self.counts = self.counts, None
        # a step's seconds are running it: compiling its programs (a decode step's shapes grow with the
        # context, so each step compiles some) is set-up, counted apart, as are the calls run again
        counts.wall_s = time.perf_counter() - start - (self.compile_s - compiled) - (self.rerun_s - reran)
        total = counts.total()
        # SPU's own link figures of the step: bytes, and messages ("actions") sent and received
        counts.own |= {"spu_sent_bytes": total.sent, "spu_recv_bytes": total.received, "spu_recv_actions": total.rounds}
        counts.own.setdefault("spu_send_actions", 0)
        counts.own.setdefault("spu_programs", 0)
        assert set(counts.by_kind) == set(KINDS)
        return y, counts

    def _swap(self, data: bytes) -> bytes:
        """Send `data` to the other party and receive its (binary-safe: the link's all_gather returns text)."""
        other = 1 - self.rank
        if self.rank == 0:
            self.link.send(other, data)
            return self.link.recv(other)
        theirs = self.link.recv(other)
        self.link.send(other, data)
        return theirs

    def reveal(self, y: Any, to: int | None = None) -> Any:
        if to is None:
            theirs = _unpack(self._swap(_pack(y.share)))
        elif self.rank != to:  # one way: the others send their share, `to` alone reconstructs
            self.link.send(to, _pack(y.share))
            return None
        else:
            theirs = _unpack(self.link.recv(1 - to))
        shares = [y.share, theirs] if self.rank == 0 else [theirs, y.share]
        return torch.from_numpy(np.asarray(self.io.reconstruct(shares), np.float64).reshape(y.shape))

    def close(self) -> None:
        self.link.stop_link()
