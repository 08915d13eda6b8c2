"""The empirical runner: every variant of a suite under CrypTen 2PC, two parties on this machine.

`run_local` starts the parties as separate programs (`pibench party ... --events`, rank 0 the
server, rank 1 the client, rank 2 the TTP where the suite asks for one) on 127.0.0.1 and a free
port, follows their progress, and stops them all by PID when one dies or stops making progress for
`timeout_s`. Only a complete run produces a record.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
from tqdm import tqdm

from pibench.analytic import suite_costs
from pibench.emulate import EmulatedLink
from pibench.errors import PibenchError
from pibench.model import layer_sample
from pibench.results import SCHEMA_VERSION, environment, now
from pibench.suite import Suite

ROLES = {0: "server", 1: "client", 2: "TTP"}

UNITS = {
    "bytes": "bytes sent by the two parties together (each byte once, both directions); 8 per ring element",
    "rounds": "blocking exchanges (communicator calls) of the party with more of them",
    "wall_s": "seconds of the forward pass, secret-sharing of weights and input excluded",
    "comm_s": "seconds inside exchanges",
    "peak_rss_bytes": "peak resident memory of each party process during the variant",
    "max_abs_error": "max |MPC output - plaintext output| over the (T, d) hidden states",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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


def build_record(
    suite: Suite,
    measured: Sequence[dict[str, Any]],
    *,
    mode: str,
    full: bool,
    rendezvous: str,
    network: str,
    timeout_s: float,
    elapsed_s: float,
    emulated: str | None = None,
) -> dict[str, Any]:
    """The versioned record of a completed run: settings, environment, analytic and measured costs."""
    run = {
        "mode": mode,
        "full": full,
        "seed": suite.seed,
        "parties": 2,
        "ttp": suite.crypten.provider == "TTP",
        "rendezvous": rendezvous,
        "network": network,
        "emulated": emulated,
        "project": [p.name for p in suite.project],
        "timeout_s": timeout_s,
        "elapsed_s": round(elapsed_s, 3),
    }
    costs = suite_costs(suite)
    predicted = _predictions(suite, costs)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "pibench.run",
        "created": now(),
        "suite": {
            "name": suite.name,
            "path": suite.path,
            "description": suite.description,
            "dims": suite.dims,
            "source": suite.source,
        },
        "backend": {
            "name": "crypten",
            "protocol": "CrypTen 2PC: arithmetic and binary secret sharing, Beaver triples, semi-honest",
            "settings": suite.crypten.as_dict(),
        },
        "run": run,
        "environment": environment(),
        "units": UNITS,
        "variants": [
            {
                "name": e.name,
                "variant": e.variant.name,
                "label": e.variant.label,
                "config": e.config.as_dict(),
                "analytic": cost.to_json(),
                "measured": m,
                "predicted": p,
            }
            for e, cost, m, p in zip(suite.entries, costs, measured, predicted, strict=True)
        ],
    }


def _predictions(suite: Suite, costs: Sequence[Any]) -> list[dict[str, Any] | None]:
    """The shipped calibration's predictions beside the measurements, where its settings match
    (None elsewhere): "measured" is what ran, "predicted" what the calibrated model expected."""
    from pibench.calibration import load_calibration, predict_cost

    try:
        cal = load_calibration()
        cal.check_settings(suite.crypten, "this run")
        return [predict_cost(cal, c.tally, suite.project) for c in costs]
    except PibenchError:
        return [None] * len(costs)


@dataclass
class _Party:
    rank: int
    proc: subprocess.Popen[str]
    log: Path
    last_event: float = field(default_factory=time.monotonic)  # progress: any event but "waiting"
    last_waiting: float = 0.0  # the party said it is blocked on another party

    @property
    def name(self) -> str:
        return f"party {self.rank} ({ROLES[self.rank]})"

    def last_error(self) -> str:
        """The last line the party wrote to stderr (a Python error's message), if any."""
        try:
            lines = [ln.strip() for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        errors = [ln for ln in lines if not ln.startswith(("Traceback", "File ", "^", "~"))]
        return errors[-1][:300] if errors else ""


def _read_events(party: _Party, stream: IO[str], events: queue.Queue[tuple[int, dict[str, Any]]]) -> None:
    for line in stream:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a stray print of a library
        events.put((party.rank, event))


def run_local(
    suite: Suite,
    *,
    full: bool = False,
    timeout_s: float = 45.0,
    progress: bool = True,
    link: EmulatedLink | None = None,
) -> dict[str, Any]:
    """Run `suite` with both parties on 127.0.0.1, or in the two namespaces of an emulated `link`;
    returns the record (not yet written)."""
    rendezvous = link.rendezvous if link else f"tcp://127.0.0.1:{free_port()}"
    if link and suite.crypten.provider == "TTP":
        raise PibenchError("--emulate runs two parties; the TTP provider is not supported with it")
    ranks = [0, 1, 2] if suite.crypten.provider == "TTP" else [0, 1]
    suite_path = str(Path(suite.path).resolve())
    steps_total = sum(1 + (suite.dims["L"] if full else len(layer_sample(e.config))) for e in suite.entries)
    events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
    measured: dict[str, dict[str, Any]] = {}
    current = "(start-up)"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pibench-run-") as tmp:
        parties: list[_Party] = []
        readers: list[threading.Thread] = []
        bar = tqdm(total=steps_total, unit="step", disable=not progress, file=sys.stderr, dynamic_ncols=True)

        def handle(rank: int, event: dict[str, Any]) -> None:
            nonlocal current
            kind = event.get("event")
            if kind == "waiting":
                parties[rank].last_waiting = time.monotonic()
                return
            parties[rank].last_event = time.monotonic()
            if kind == "variant":
                current = event["variant"]
                bar.set_postfix_str(current)
            elif kind == "step" and rank == 0:
                bar.update(1)
            elif kind == "result" and rank == 0:
                measured[event["variant"]] = event["measured"]

        try:
            for rank in ranks:
                log = Path(tmp) / f"rank{rank}.log"
                cmd = [sys.executable, "-m", "pibench", "party", "--rank", str(rank), "--rendezvous", rendezvous]
                # the parties' own exchange timeout is longer, so that this monitor names the hung party
                cmd += [suite_path, "--events", "--timeout", str(timeout_s + 15), *(["--full"] if full else [])]
                env = os.environ | (link.env(rank) if link else {})
                prefix = link.command_prefix(rank) if link else []
                with log.open("w") as err:
                    proc = subprocess.Popen([*prefix, *cmd], stdout=subprocess.PIPE, stderr=err, text=True, env=env)
                party = _Party(rank, proc, log)
                parties.append(party)
                reader = threading.Thread(target=_read_events, args=(party, proc.stdout, events), daemon=True)
                reader.start()
                readers.append(reader)
            while any(p.proc.poll() is None for p in parties):
                try:
                    handle(*events.get(timeout=0.2))
                    continue
                except queue.Empty:
                    pass
                for p in parties:
                    code = p.proc.poll()
                    if code not in (None, 0):
                        detail = p.last_error()
                        raise PibenchError(
                            f"{p.name} exited with code {code} during variant '{current}'"
                            + (f": {detail}" if detail else "")
                            + "; the run was stopped and no record written"
                        )
                live = [p for p in parties if p.rank < 2 and p.proc.poll() is None]
                if live and all(time.monotonic() - p.last_event > timeout_s for p in live):
                    # a party blocked on another says so; the hung one is silent
                    hung = [p for p in live if time.monotonic() - p.last_waiting > 5] or live
                    raise PibenchError(
                        f"{' and '.join(p.name for p in hung)} made no progress for {timeout_s:.0f} s "
                        f"during variant '{current}' (hung?); the run was stopped and no record written"
                    )
            for reader in readers:
                reader.join(timeout=10)
            while not events.empty():
                handle(*events.get())
        finally:
            bar.close()
            for p in parties:
                if p.proc.poll() is None:
                    kill_tree(p.proc.pid)
                p.proc.wait(timeout=10)
                if p.proc.stdout:
                    p.proc.stdout.close()
    missing = [e.name for e in suite.entries if e.name not in measured]
    if missing:
        raise PibenchError(f"the parties ended without measuring {', '.join(missing)}; no record written")
    return build_record(
        suite,
        [measured[e.name] for e in suite.entries],
        mode="local",
        full=full,
        rendezvous=rendezvous,
        network=link.describe() if link else "loopback",
        emulated=link.profile.name if link else None,
        timeout_s=timeout_s,
        elapsed_s=time.monotonic() - started,
    )
