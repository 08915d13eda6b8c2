"""Warm parties: party processes kept between the runs of one caller on this machine (a sweep's local
executor), so that a run does not start its parties afresh (a party's start-up imports torch, CrypTen
or JAX: seconds a tiny cell otherwise pays every time).

A worker is `pibench party --serve`: each line of its stdin is one run, the suite text and secret that
`pibench run` hands a party, with where to meet; it reports the run's events on stdout as a party
does, "done" when the run is over, and waits for the next line. Rank 0 listens on a fresh port of the
given host and says where ("listening") before the others are told to join. A worker that fails, hangs
or is stopped is ended by its PID with the run (`Workers.discard`), and the next run starts a new one;
`Workers.close` ends every worker (each also dies with the process that started it).
"""

from __future__ import annotations

import collections
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pibench.util.errors import PibenchError
from pibench.util.procs import die_with_parent, kill_tree

Event = tuple[int, dict[str, Any]]


def json_events(stream: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The events a party writes, one JSON object a line (a stray print of a library is skipped)."""
    for line in stream:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            yield event


@dataclass
class Worker:
    """One warm party process: `sink` takes the events of the run it serves (its rank with each)."""

    rank: int
    proc: subprocess.Popen[str]
    stderr: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=50))
    sink: queue.Queue[Event] | None = None
    listening: queue.Queue[str] = field(default_factory=queue.Queue)  # rank 0: where it listens, per run
    finished: threading.Event = field(default_factory=threading.Event)  # the run it serves is done
    served: int = 0  # runs handed to it

    def send(self, run: dict[str, Any]) -> None:
        """Hand the worker a run (one JSON line on its stdin)."""
        assert self.proc.stdin is not None
        self.finished.clear()
        self.served += 1
        self.proc.stdin.write(json.dumps(run) + "\n")
        self.proc.stdin.flush()

    def _read_events(self) -> None:
        assert self.proc.stdout is not None
        for event in json_events(self.proc.stdout):
            if event.get("event") == "listening":
                self.listening.put(str(event.get("rendezvous")))
            elif event.get("event") == "done":
                self.finished.set()
            elif self.sink is not None:
                self.sink.put((self.rank, event))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)


class Workers:
    """The warm party processes of one caller, one per rank, started when a run first needs them."""

    def __init__(self) -> None:
        self.workers: dict[int, Worker] = {}

    def get(self, rank: int) -> Worker:
        """The worker of `rank`, started where there is none (or it has exited)."""
        worker = self.workers.get(rank)
        if worker is not None and worker.proc.poll() is None:
            return worker
        cmd = [sys.executable, "-m", "pibench", "party", "--rank", str(rank), "--rendezvous", "tcp://127.0.0.1:1"]
        proc = subprocess.Popen(
            [*cmd, "-", "--events", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent,
        )
        worker = self.workers[rank] = Worker(rank, proc)
        for target in (worker._read_events, worker._read_stderr):
            threading.Thread(target=target, daemon=True).start()
        return worker

    def rendezvous(self, timeout_s: float) -> str:
        """Where rank 0's worker listens for the run just sent to it (its "listening" event)."""
        worker = self.workers[0]
        try:
            return worker.listening.get(timeout=timeout_s)
        except queue.Empty:
            code = worker.proc.poll()
            why = f"exited with code {code}" if code is not None else f"did not listen within {timeout_s:.0f} s"
            detail = next((ln.strip() for ln in reversed(worker.stderr) if ln.strip()), "")
            raise PibenchError(f"party 0 (server) {why}{': ' + detail[:300] if detail else ''}") from None

    def discard(self, ranks: list[int] | None = None) -> None:
        """End the workers of `ranks` (default: all) by PID: after a run that failed, none is reused."""
        for rank in list(self.workers) if ranks is None else ranks:
            worker = self.workers.pop(rank, None)
            if worker is None:
                continue
            if worker.proc.poll() is None:
                kill_tree(worker.proc.pid)
            worker.proc.wait(timeout=10)
            for stream in (worker.proc.stdin, worker.proc.stdout, worker.proc.stderr):
                if stream:
                    try:
                        stream.close()
                    except OSError:
                        pass

    def close(self) -> None:
        self.discard()
