"""The empirical runner: every variant of a suite under its backend, all parties on this machine.

`run_local` starts the backend's ranks (`Backend.ranks`) as separate programs (`pibench party ...
--events`), follows their progress, and stops them all by PID when one dies or stops making progress
for `timeout_s`. Only a complete run produces a record.

What the parties see: the suite text the runner validated, on their stdin (never the file again, so
an edit during start-up cannot split config from measurement). Where they listen: rank 0 serves on
a socket the runner bound to 127.0.0.1 and hands over (local runs), or on the emulated link's own
address inside its namespace. Each party is killed by the kernel if the runner dies (SIGKILL
included), and keeps its stderr in the runner's memory, so a run leaves no process and no file.
"""

from __future__ import annotations

import collections
import json
import math
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from pibench.backends import BACKENDS
from pibench.measuring.emulate import EmulatedLink
from pibench.measuring.measured import DealerCheck, Measured, RunInfo
from pibench.measuring.peers import STARTUP_GRACE_S, new_secret
from pibench.measuring.plan import reported_steps, sample_of
from pibench.measuring.workers import Workers, json_events
from pibench.models.config import ModelConfig
from pibench.models.definition import layer_weight_specs
from pibench.suites.loader import Suite
from pibench.util.errors import PibenchError, validated
from pibench.util.procs import die_with_parent, kill_tree, listening_socket
from pibench.util.progress import Progress


def party_memory(backend: str, cfg: ModelConfig, full: bool) -> int:
    """Bytes one party of a run of `cfg` needs (`Backend.party_memory` of the layers it runs)."""
    layers = list(sample_of(cfg, full))
    weights = sum(math.prod(s.shape) for s in layer_weight_specs(cfg, layers).values())
    return int(BACKENDS.get(backend).party_memory(cfg, weights))


def check_before_run(suite: Suite, full: bool) -> None:
    """What would otherwise fail only once parties run: every variant's weights there, with their
    shapes, their file's description fitting the run (its GELU the backend's), and memory for its two
    parties here (`check_memory`)."""
    if suite.weights is not None:
        from pibench.models.checkpoints import check_weights

        gelu = BACKENDS.get(suite.backend).reference_gelu(suite.settings)
        for entry in suite.entries:
            given = suite.weights_of(entry.name)
            if given is not None:
                check_weights(*given, [entry.config], language_model=suite.accuracy is not None, gelu=gelu)
    check_memory(suite, full)


def check_memory(suite: Suite, full: bool) -> None:
    """Refuse, before any party starts, a suite whose parties cannot fit in this machine's memory
    (the backend's estimate per party, `Backend.party_memory`)."""
    total = psutil.virtual_memory().total
    for e in suite.entries:
        cfg = e.config
        if full and cfg.L > 10_000:
            raise PibenchError(f"variant '{e.name}': --full would run {cfg.L} layers; sample them (no --full)")
        need = 2 * party_memory(suite.backend, cfg, full)  # two parties on this machine
        if need > total:
            raise PibenchError(
                f"variant '{e.name}' (L={cfg.L}, H={cfg.H}, d={cfg.d}, T={cfg.T}) needs about {need / 2**30:.3g} GiB "
                f"for its two parties under {suite.backend}; this machine has {total / 2**30:.3g} GiB"
            )


@dataclass
class _Party:
    rank: int
    role: str
    proc: subprocess.Popen[str]
    stderr: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=50))
    last_event: float = field(default_factory=time.monotonic)  # progress: any event but "waiting"
    last_waiting: float = 0.0  # the party said it is blocked on another party
    ready: bool = False  # it has joined the others
    finished: threading.Event | None = None  # a warm party's: its run is over (`pibench.measuring.workers`)

    def over(self) -> bool:
        """Whether the party is done with this run: exited, or (warm) finished it."""
        return self.proc.poll() is not None or (self.finished is not None and self.finished.is_set())

    def stopped(self) -> bool:
        """Whether the process is frozen (SIGSTOP, a debugger): it cannot say so itself."""
        try:
            return psutil.Process(self.proc.pid).status() == psutil.STATUS_STOPPED
        except psutil.Error:
            return False

    @property
    def name(self) -> str:
        return f"party {self.rank} ({self.role})"

    def last_error(self) -> str:
        """The last line the party wrote to stderr (a Python error's message), if any."""
        lines = [ln.strip() for ln in self.stderr if ln.strip()]
        errors = [ln for ln in lines if not ln.startswith(("Traceback", "File ", "^", "~"))]
        return errors[-1].removeprefix("pibench: error: ")[:300] if errors else ""


def _read_events(party: _Party, events: queue.Queue[tuple[int, dict[str, Any]]]) -> None:
    assert party.proc.stdout is not None
    for event in json_events(party.proc.stdout):
        events.put((party.rank, event))


def _read_stderr(party: _Party) -> None:
    assert party.proc.stderr is not None
    for line in party.proc.stderr:
        party.stderr.append(line)


class _Parties:
    """The running party processes of one run."""

    def __init__(
        self,
        suite: Suite,
        full: bool,
        timeout_s: float,
        link: EmulatedLink | None,
        include: Sequence[str] = (),
        ranks: Sequence[int] | None = None,
        workers: Workers | None = None,
    ) -> None:
        self.suite, self.full, self.timeout_s, self.link = suite, full, timeout_s, link
        self.include = list(include)  # files of the user's own variants, which the parties load too
        self.ranks = ranks  # the ranks this host starts (None: every rank of the backend)
        self.workers = workers  # warm parties to run on (a sweep's), else parties started for this run
        self.warm = False  # every party had served an earlier run
        self.events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.parties: dict[int, _Party] = {}
        self.threads: list[threading.Thread] = []

    def start(self, rendezvous: str | None = None, listener: socket.socket | None = None, secret: str = "") -> str:
        """Start this host's ranks; returns the rendezvous address. Given none, rank 0 serves on the
        emulated link's address, else on a socket bound here to 127.0.0.1; given one (parties on several
        hosts), rank 0 serves on `listener` where it runs here, and every rank uses `secret`."""
        backend = BACKENDS.get(self.suite.backend)
        roles = {r: role for r, role in backend.ranks(self.suite.settings).items() if r in (self.ranks or [r])}
        if self.workers is not None:
            return self._start_warm(roles)
        if rendezvous is None and self.link:
            rendezvous, listener = self.link.rendezvous, None
        elif rendezvous is None:  # rank 0 serves pibench's channel on this socket, handed over: nothing can take it
            listener = listening_socket("127.0.0.1", 0)
            rendezvous = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        payload = json.dumps(self._payload(secret))
        try:
            for rank, role in roles.items():
                fd = listener.fileno() if listener and rank == 0 else None
                self._start(rank, role, rendezvous, fd, payload)
        finally:
            if listener:
                listener.close()  # rank 0 holds it now
        return rendezvous

    def _payload(self, secret: str = "") -> dict[str, Any]:
        """What each party is handed on its stdin: the suite as validated, the run's secret, the user's files."""
        suite = self.suite
        return {
            "path": suite.path,
            "text": suite.text,
            "digest": suite.digest,
            "backend": suite.backend,
            "device": getattr(suite.settings, "device", None),
            "repeats": suite.repeats,
            "secret": secret or new_secret().decode(),  # this run's, on the parties' stdin only
            "include": self.include,
        }

    def _start_warm(self, roles: dict[int, str]) -> str:
        """Hand the run to the warm workers (`Workers`): rank 0 first, which listens on a fresh port of
        127.0.0.1 and says where; then the others, told to join there."""
        assert self.workers is not None
        run = self._payload() | {"full": self.full, "timeout": self.timeout_s + 15}
        rendezvous = ""
        kept = self.workers.workers
        self.warm = all(r in kept and kept[r].proc.poll() is None and kept[r].served > 0 for r in roles)
        for rank, role in roles.items():
            worker = self.workers.get(rank)
            worker.sink = self.events
            worker.send(run | ({"listen": "127.0.0.1"} if rank == 0 else {"rendezvous": rendezvous}))
            self.parties[rank] = _Party(rank, role, worker.proc, worker.stderr, finished=worker.finished)
            if rank == 0:
                rendezvous = self.workers.rendezvous(max(self.timeout_s, STARTUP_GRACE_S) + 10)
        return rendezvous

    def _start(self, rank: int, role: str, rendezvous: str, fd: int | None, payload: str) -> None:
        cmd = [sys.executable, "-m", "pibench", "party", "--rank", str(rank), "--rendezvous", rendezvous, "-"]
        # the parties' own exchange timeout is longer, so that this monitor names the hung party
        cmd += ["--events", "--timeout", str(self.timeout_s + 15), *(["--full"] if self.full else [])]
        cmd += ["--listen-fd", str(fd)] if fd is not None else []
        link = self.link
        proc = subprocess.Popen(
            [*(link.command_prefix(rank) if link else []), *cmd],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ | (link.env(rank) if link else {}),
            pass_fds=(fd,) if fd is not None else (),
            preexec_fn=die_with_parent,
        )
        party = _Party(rank, role, proc)
        self.parties[rank] = party
        for target, args in ((_read_events, (party, self.events)), (_read_stderr, (party,))):
            thread = threading.Thread(target=target, args=args, daemon=True)
            thread.start()
            self.threads.append(thread)
        assert proc.stdin is not None
        try:
            proc.stdin.write(payload + "\n")
            proc.stdin.close()
        except OSError:
            pass  # it died at once; the monitor reports its exit

    def check(self, current: str) -> None:
        """Raise when the emulated link's router died, a party failed, or all computing parties stopped
        making progress."""
        if self.link is not None:
            self.link.check(f"variant '{current}'")
        # a party killed by a signal first: the others' errors then only say that it left
        for p in sorted(self.parties.values(), key=lambda p: (p.proc.poll() or 0) >= 0):
            code = p.proc.poll()
            if code not in (None, 0):
                time.sleep(0.2)  # let its last stderr line arrive
                detail = p.last_error()
                raise PibenchError(
                    f"{p.name} exited with code {code} during variant '{current}'"
                    + (f": {detail}" if detail else "")
                    + "; the run was stopped and no record written"
                )
        now = time.monotonic()
        stopped = [p for p in self.parties.values() if now - p.last_event > self.timeout_s and p.stopped()]
        if stopped:  # frozen (SIGSTOP): named even while the other's backend still ticks (SPU does)
            raise PibenchError(
                f"{' and '.join(p.name for p in stopped)} made no progress for {self.timeout_s:.0f} s "
                f"during variant '{current}' (its process is frozen); the run was stopped and no record written"
            )
        live = [p for p in self.parties.values() if p.rank < 2 and not p.over()]
        if live and all(now - p.last_event > self._patience(p) for p in live):
            hung = [p for p in live if now - p.last_waiting > 5] or live  # a blocked party says so
            raise PibenchError(
                f"{' and '.join(p.name for p in hung)} made no progress for {self.timeout_s:.0f} s "
                f"during variant '{current}' (hung?); the run was stopped and no record written"
            )

    def _patience(self, party: _Party) -> float:
        """How long a party may be silent: the timeout, and until it has joined at least start-up's grace."""
        return self.timeout_s if party.ready else max(self.timeout_s, STARTUP_GRACE_S) + 10

    def running(self) -> bool:
        return any(not p.over() for p in self.parties.values())

    def stop(self) -> None:
        if self.workers is not None:  # warm: kept where every party finished its run, else ended by PID
            done = all(p.finished is not None and p.finished.is_set() for p in self.parties.values())
            for worker in (self.workers.workers.get(r) for r in self.parties):
                if worker is not None:
                    worker.sink = None
            if not done:
                self.workers.discard(list(self.parties))
            return
        for p in self.parties.values():
            if p.proc.poll() is None:
                kill_tree(p.proc.pid)
            p.proc.wait(timeout=10)
        for thread in self.threads:
            thread.join(timeout=5)
        for p in self.parties.values():
            for stream in (p.proc.stdout, p.proc.stderr):
                if stream:
                    stream.close()


class _Progress:
    """What the parties report: the progress bar, the current variant, results, dealer totals."""

    def __init__(self, suite: Suite, full: bool, show: bool, parties: _Parties) -> None:
        passes = BACKENDS.get(suite.backend).passes(suite.repeats)
        total = sum(reported_steps(e.config, full, passes) for e in suite.entries)  # every "step" event
        self.bar = Progress(total, "step", show)
        self.parties, self.current = parties, "(start-up)"
        self.measured: dict[str, Measured] = {}
        self.dealer: dict[str, dict[str, int]] = {}

    def handle(self, rank: int, event: dict[str, Any]) -> None:
        party, kind = self.parties.parties[rank], event.get("event")
        if kind == "waiting":
            party.last_waiting = time.monotonic()
            return
        party.last_event = time.monotonic()
        if kind == "ready":
            party.ready = True
        elif kind == "variant":
            self.current = event["variant"]
            self.bar.note(self.current)
        elif kind == "step" and rank == 0:
            self.bar.advance(1)
        elif kind == "result" and rank == 0:
            self.measured[event["variant"]] = _measured(event["measured"])
        elif kind in ("dealer", "dealer_lifetime"):
            self.dealer[kind] = event["counts"]

    def dealer_check(self) -> DealerCheck | None:
        if not self.dealer:
            return None
        mine, theirs = self.dealer.get("dealer_lifetime", {}), self.dealer.get("dealer", {})
        return DealerCheck(
            dealer_sent=theirs.get("sent", 0),
            dealer_received=theirs.get("received", 0),
            party0_received=mine.get("received", 0),
            party0_sent=mine.get("sent", 0),
        )


def _measured(data: Any) -> Measured:
    """A variant's measurement as rank 0 reported it (JSON), typed; one line if it is not one."""
    return validated(Measured, data, "party 0 reported a measurement that is not valid")


def _follow(parties: _Parties, progress: _Progress) -> None:
    while parties.running():
        try:
            progress.handle(*parties.events.get(timeout=0.2))
            continue
        except queue.Empty:
            pass
        parties.check(progress.current)
    parties.check(progress.current)  # a party that failed as the others finished
    for thread in parties.threads:
        thread.join(timeout=10)
    while not parties.events.empty():
        progress.handle(*parties.events.get())


def run_local(
    suite: Suite,
    *,
    full: bool = False,
    timeout_s: float = 45.0,
    progress: bool = True,
    link: EmulatedLink | None = None,
    accept_unusable: bool = False,
    include: Sequence[str] = (),
    workers: Workers | None = None,
) -> tuple[list[Measured], RunInfo]:
    """Run `suite` with every party on this machine (loopback, or the two namespaces of an emulated
    `link`; on `workers`, warm parties kept between runs, where there is no link); returns each
    variant's merged measurement and the run's settings (the record's `run`), from which
    `pibench.results.records.build_record` makes the record."""
    BACKENDS.get(suite.backend).check(suite.settings, emulated=link is not None)
    started = time.monotonic()
    parties = _Parties(suite, full, timeout_s, link, include, workers=workers if link is None else None)
    watch = _Progress(suite, full, progress, parties)
    try:
        rendezvous = parties.start()
        _follow(parties, watch)
    finally:
        watch.bar.close()
        parties.stop()
    missing = [e.name for e in suite.entries if e.name not in watch.measured]
    if missing:
        raise PibenchError(f"the parties ended without measuring {', '.join(missing)}; no record written")
    return [watch.measured[e.name] for e in suite.entries], RunInfo(
        mode="local",
        full=full,
        seed=suite.seed,
        project=[p.name for p in suite.project],
        rendezvous=rendezvous,
        network=link.describe() if link else "loopback",
        emulated=link.profile.name if link else None,
        timeout_s=timeout_s,
        elapsed_s=round(time.monotonic() - started, 3),
        ranks={str(r): p.role for r, p in parties.parties.items()},
        dealer=watch.dealer_check(),
        accepted_unusable=accept_unusable,
        warm_parties=parties.warm,
    )


def run_ranks(
    suite: Suite,
    ranks: Sequence[int],
    rendezvous: str,
    secret: str,
    *,
    listener: socket.socket | None = None,
    full: bool = False,
    timeout_s: float = 45.0,
    include: Sequence[str] = (),
) -> tuple[list[Measured] | None, dict[str, str]]:
    """Run this host's `ranks` of a run whose parties are on several hosts (a sweep's cell spread over
    Ray nodes): rank 0 serves `rendezvous` on `listener`, every rank shares `secret` and joins there.
    Returns each variant's measurement where rank 0 runs here (else None) and the roles of the ranks
    run here; a party that fails, hangs, or loses the other is a one-line `PibenchError`."""
    parties = _Parties(suite, full, timeout_s, None, include, ranks)
    watch = _Progress(suite, full, False, parties)
    try:
        parties.start(rendezvous, listener, secret)
        _follow(parties, watch)
    finally:
        watch.bar.close()
        parties.stop()
    roles = {str(r): p.role for r, p in parties.parties.items()}
    if 0 not in ranks:
        return None, roles
    missing = [e.name for e in suite.entries if e.name not in watch.measured]
    if missing:
        raise PibenchError(f"the parties ended without measuring {', '.join(missing)}; no record written")
    return [watch.measured[e.name] for e in suite.entries], roles
