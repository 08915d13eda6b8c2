"""The Ray executor (`pibench sweep --executor ray [--address HOST:PORT]`; `pip install 'pibench[ray]'`).

Each cell reserves what its parties need, a placement group with one bundle per rank (a CPU and the
backend's estimate of a party's memory, `Backend.party_memory`):

- `placement: pack` (STRICT_PACK): every rank on one node. One task in the group runs the cell as
  `pibench run` does, parties on that node's loopback, and returns the record it made there.
- `placement: spread` (STRICT_SPREAD): every rank on a different node, so the cell measures the link
  between them. An actor per rank: rank 0's binds pibench's channel on its node's address, every
  actor starts its party with the run's secret, rank 0's makes the record (`run.nodes` and
  `run.network` name the nodes).

The driver writes each record as it comes back (`pibench.sweeps.sweep`). A cell whose worker, actor
or node is lost is run again, up to the sweep's `retries`; a cell that fails on its own (a party's
error) is recorded as failed. Without `--address`, a local Ray instance bound to 127.0.0.1 is started
and stopped with the sweep. Ray has no authentication of its own: a cluster must sit on a private
network (docs/sweeps.md); the run's secret travels to the actors through it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pibench.backends import BACKENDS
from pibench.sweeps.local import Done, Outcome, Started, measure_cell
from pibench.sweeps.spec import Cell, Sweep
from pibench.sweeps.sweep import outcome_of
from pibench.util.errors import PibenchError

CONNECT_TIMEOUT_S = 5.0
# Ray takes 127.0.0.1 for a node's address only where "clusters" are off (its Windows/macOS switch);
# otherwise it replaces it by this machine's reachable address and its servers listen there
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
POLL_S = 0.5
PLACE_TIMEOUT_S = 600.0  # a spread cell's actors must start within this
_loaded: set[str] = set()  # --include files this worker process has imported


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise PibenchError("--executor ray needs Ray: pip install 'pibench[ray]'") from None
    return ray


# HTTP/2's connection preface and an empty SETTINGS frame: a gRPC server (a Ray head's GCS) answers with a
# SETTINGS frame of its own (type 4) at once
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
# ray.init retries without limit where something answers that is not a cluster; PIBENCH_RAY_INIT_TIMEOUT_S
# sets another limit (a slow link to a far cluster)
INIT_TIMEOUT_S = float(os.environ.get("PIBENCH_RAY_INIT_TIMEOUT_S", "60"))


def _check_address(address: str) -> None:
    """An address that no Ray cluster answers is one line within seconds, before Ray tries without limit:
    nothing listening, a listener that says nothing, or one that does not speak gRPC (HTTP/2) as a
    Ray head's GCS does."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise PibenchError(
            f"--address '{address[:80]}' is not HOST:PORT (a Ray head's GCS address, e.g. 10.0.0.5:6379)"
        )
    start = "`ray start --head --node-ip-address ADDR` on a private network starts one"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S) as sock:
            sock.sendall(H2_PREFACE)
            head = b""
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            while len(head) < 9 and time.monotonic() < deadline:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except TimeoutError:
        head = b""
    except OSError as err:
        why = err.strerror or err
        raise PibenchError(f"--address {address}: no Ray cluster answers there ({why}); {start}") from None
    if not head:
        raise PibenchError(
            f"--address {address}: something accepted the connection but said nothing in {CONNECT_TIMEOUT_S:.0f} s: "
            f"not a Ray cluster's head; {start}"
        )
    if len(head) < 9 or head[3] != 4:
        raise PibenchError(
            f"--address {address}: what answers there does not speak gRPC as a Ray cluster's head does; {start}"
        )


def _init_bounded(ray: Any, address: str | None, kwargs: dict[str, Any]) -> None:
    """`ray.init`, ended with one line (exit 2) where it has not connected within INIT_TIMEOUT_S: Ray
    retries without limit, and a call blocked in its C++ core cannot be interrupted otherwise. Ray's C++
    core writes its warnings to file descriptor 2 while it connects: they are held in a temporary file
    meanwhile, so that pibench's one line stands alone."""
    where = f" at {address}" if address else ""
    done = threading.Event()
    terminal = os.dup(2)  # where pibench's own line goes while fd 2 holds Ray's

    def give_up() -> None:
        if not done.wait(INIT_TIMEOUT_S):
            line = (
                f"pibench: error: Ray did not connect{where} within {INIT_TIMEOUT_S:.0f} s (something answers "
                "there that is not a Ray cluster's head, or one of another Ray version); no cell ran\n"
            )
            os.write(terminal, line.encode())
            os._exit(2)

    watchdog = threading.Thread(target=give_up, daemon=True)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        watchdog.start()
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:  # a local instance, on loopback only, stopped with the sweep
                ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, **kwargs)
        except Exception as err:  # Ray's own errors: one line
            raise PibenchError(f"Ray did not start{where}: {str(err).splitlines()[0][:200]}") from None
        finally:
            done.set()
            os.dup2(terminal, 2)
            os.close(terminal)


def _loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _load_once(include: Sequence[str]) -> None:
    from pibench.models.plugins import include as load_include

    todo = [p for p in include if p not in _loaded]
    if todo:
        load_include(todo)
        _loaded.update(todo)


def _here() -> str:
    """This worker's node: 'IP, node ID' (the ID shortened)."""
    ray = _ray()
    return f"{ray.util.get_node_ip_address()}, node {ray.get_runtime_context().get_node_id()[:12]}"


def pack_cell(
    text: str, base: str, ranks: Sequence[str], full: bool, timeout_s: float, include: Sequence[str], accept: bool
) -> dict[str, Any]:
    """A Ray task: the whole cell on this node (`measure_cell`); its record as JSON, or the error."""
    node = _here()
    try:
        _load_once(include)
    except PibenchError as err:
        return {"error": str(err), "node": node}
    out = measure_cell(text, base, full, timeout_s, include, accept, nodes={r: node for r in ranks})
    return {
        "record": out.record.model_dump(mode="json") if out.record else None,
        "error": out.error,
        "unsaved": out.unsaved,
        "node": node,
    }


class PartyHost:
    """A Ray actor holding one rank of a spread cell: where it runs, the listening socket (rank 0),
    and the party it starts (`pibench.measuring.runner.run_ranks`)."""

    def __init__(self) -> None:
        self.listener: socket.socket | None = None

    def node(self) -> str:
        return _here()

    def listen(self) -> str:
        """Bind pibench's channel on this node's address (rank 0); the rendezvous the others join."""
        from pibench.util.procs import listening_socket

        ip = _ray().util.get_node_ip_address()
        self.listener = listening_socket(ip, 0)
        host = f"[{ip}]" if ":" in ip else ip
        return f"tcp://{host}:{self.listener.getsockname()[1]}"

    def run(
        self,
        text: str,
        base: str,
        rank: int,
        rendezvous: str,
        secret: str,
        nodes: dict[str, str],
        settings: dict[str, Any],
    ) -> dict[str, Any]:
        from pibench.measuring.measured import RunInfo
        from pibench.measuring.runner import run_ranks
        from pibench.results.records import RecordNotBuilt, build_record
        from pibench.suites.loader import load_suite

        node = _here()
        started = time.monotonic()
        try:
            _load_once(settings["include"])
            suite = load_suite(base, text=text)
            measured, _ = run_ranks(
                suite,
                [rank],
                rendezvous,
                secret,
                listener=self.listener,
                full=settings["full"],
                timeout_s=settings["timeout_s"],
                include=settings["include"],
            )
            if measured is None:
                return {"node": node}
            run = RunInfo(
                mode="party",
                full=settings["full"],
                seed=suite.seed,
                project=[p.name for p in suite.project],
                rendezvous=rendezvous,
                network="between Ray nodes " + "; ".join(f"rank {r}: {n}" for r, n in nodes.items()),
                emulated=None,
                timeout_s=settings["timeout_s"],
                elapsed_s=round(time.monotonic() - started, 3),
                ranks={str(r): role for r, role in BACKENDS.get(suite.backend).ranks(suite.settings).items()},
                accepted_unusable=settings["accept"],
                dealer=None,
                nodes=nodes,
                warm_parties=False,
            )
            return {"record": build_record(suite, measured, run).model_dump(mode="json"), "node": node}
        except RecordNotBuilt as err:
            return {"error": str(err), "unsaved": err.data, "node": node}
        except PibenchError as err:
            return {"error": str(err), "node": node}


@dataclass
class _InFlight:
    cell: Cell
    attempt: int
    group: Any  # the placement group
    refs: list[Any]  # the task's, or each actor's run
    actors: list[Any] = field(default_factory=list)


class RayExecutor:
    """Cells as Ray tasks (pack) or actors (spread), each in its own placement group."""

    name = "ray"

    def __init__(self, sweep: Sweep, include: Sequence[str], accept_unusable: bool, address: str | None) -> None:
        self.sweep, self.include, self.accept = sweep, [os.path.abspath(p) for p in include], accept_unusable
        self.address = address
        if address:
            _check_address(address)
        if not address or _loopback(address):  # Ray keeps 127.0.0.1 as the node's address (else it takes this
            os.environ[LOOPBACK_ENV] = "0"  # machine's LAN one) and its servers listen there; read at import
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the cluster
        self.ray = _ray()
        kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
        _init_bounded(self.ray, address, kwargs)
        self.in_flight: list[_InFlight] = []

    def _nodes(self) -> list[dict[str, Any]]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def _bundles(self, cell: Cell) -> list[dict[str, float]]:
        from pibench.measuring.runner import party_memory

        suite = cell.suite()
        ranks = BACKENDS.get(suite.backend).ranks(suite.settings)
        memory = party_memory(suite.backend, suite.entries[0].config, self.sweep.full)
        return [{"CPU": 1.0, "memory": float(memory)} for _ in ranks]

    def check(self, cells: Sequence[Cell]) -> None:
        """Refuse, before any cell runs, cells the cluster cannot place, and what Ray cannot run."""
        nodes = self._nodes()
        for cell in cells:
            if cell.suite().emulate is not None:
                raise PibenchError(
                    f"{self.sweep.path}: the cell {cell.describe()} emulates a link (network.emulate); "
                    "run it with the local executor, or use placement: spread for a real one"
                )
            bundles = self._bundles(cell)
            fits = [
                n
                for n in nodes
                if n["Resources"].get("CPU", 0) >= bundles[0]["CPU"]
                and n["Resources"].get("memory", 0) >= bundles[0]["memory"]
            ]
            if self.sweep.placement == "spread" and len(fits) < len(bundles):
                raise PibenchError(
                    f"placement spread puts the {len(bundles)} parties of a cell ({cell.describe()}) on different "
                    f"nodes; the Ray cluster has {len(fits)} node{'s' if len(fits) != 1 else ''} that fit one"
                )
            need_cpu = sum(b["CPU"] for b in bundles)
            need_mem = sum(b["memory"] for b in bundles)
            if self.sweep.placement == "pack" and not any(
                n["Resources"].get("CPU", 0) >= need_cpu and n["Resources"].get("memory", 0) >= need_mem for n in nodes
            ):
                raise PibenchError(
                    f"placement pack puts the {len(bundles)} parties of a cell ({cell.describe()}) on one node: "
                    f"{need_cpu:g} CPUs and {need_mem / 2**30:.3g} GiB; no node of the Ray cluster has them"
                )

    def capacity(self) -> int:
        """Cells that can run at once: the cluster's CPUs over a cell's parties (at least 1)."""
        cpus = sum(n["Resources"].get("CPU", 0) for n in self._nodes())
        return max(1, int(cpus // 2))

    def _submit(self, cell: Cell, attempt: int) -> _InFlight:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        ray, sweep = self.ray, self.sweep
        bundles = self._bundles(cell)
        spread = sweep.placement == "spread"
        group = placement_group(bundles, strategy="STRICT_SPREAD" if spread else "STRICT_PACK")
        ranks = [str(r) for r in range(len(bundles))]

        def strategy(i: int) -> Any:
            return PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=i)

        if not spread:
            task = ray.remote(pack_cell).options(
                num_cpus=1, memory=bundles[0]["memory"], max_retries=0, scheduling_strategy=strategy(0)
            )
            ref = task.remote(cell.text, cell.base, ranks, sweep.full, sweep.timeout_s, self.include, self.accept)
            return _InFlight(cell, attempt, group, [ref])
        from pibench.measuring.peers import new_secret

        host = ray.remote(PartyHost)
        actors = [
            host.options(num_cpus=1, memory=b["memory"], max_restarts=0, scheduling_strategy=strategy(i)).remote()
            for i, b in enumerate(bundles)
        ]
        flight = _InFlight(cell, attempt, group, [], actors)
        try:  # the actors start once the group is placed (the driver runs no more cells than fit)
            nodes = dict(zip(ranks, ray.get([a.node.remote() for a in actors], timeout=PLACE_TIMEOUT_S), strict=True))
            rendezvous = ray.get(actors[0].listen.remote(), timeout=PLACE_TIMEOUT_S)
        except ray.exceptions.RayError:
            return flight  # lost before it started: `_wait` sees no refs and retries
        secret = new_secret().decode()
        settings = {"include": self.include, "full": sweep.full, "timeout_s": sweep.timeout_s, "accept": self.accept}
        flight.refs = [
            a.run.remote(cell.text, cell.base, i, rendezvous, secret, nodes, settings) for i, a in enumerate(actors)
        ]
        return flight

    def _release(self, flight: _InFlight) -> None:
        """Stop what is left of a cell (its parties die with their worker) and free its reservation."""
        from ray.util.placement_group import remove_placement_group

        if flight.actors:
            for actor in flight.actors:
                self.ray.kill(actor, no_restart=True)
        else:  # a task still running (cancelling a finished one upsets Ray's bookkeeping)
            _, running = self.ray.wait(flight.refs, num_returns=len(flight.refs), timeout=0)
            for ref in running:
                self.ray.cancel(ref, force=True)
        try:
            remove_placement_group(flight.group)
        except Exception:  # already gone with its node
            pass

    def _collect(self, flight: _InFlight) -> Outcome | None:
        """How a cell ended once all its refs are ready (None: its worker, actor or node was lost)."""
        ray = self.ray
        results: list[dict[str, Any]] = []
        for ref in flight.refs:
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayTaskError as err:  # pibench's own code raised: the cell failed
                lines = str(getattr(err, "cause", None) or err).strip().splitlines()
                return Outcome(error=f"a Ray worker failed: {lines[-1][:300] if lines else type(err).__name__}")
            except ray.exceptions.RayError:
                return None
        recorded = [r for r in results if r.get("record")]
        if recorded:
            return outcome_of(recorded[0])
        failed = [r for r in results if r.get("error")] or results or [{}]  # rank 0's first: results are in rank order
        unsaved = next((r["unsaved"] for r in results if r.get("unsaved")), None)
        return Outcome(
            error=failed[0].get("error") or "the cell ended without a record",
            unsaved=unsaved,
            node=failed[0].get("node"),
        )

    def run(self, cells: Sequence[Cell], started: Started, done: Done) -> None:
        ray = self.ray
        waiting = list(cells)
        limit = self.capacity()
        while waiting or self.in_flight:
            while waiting and len(self.in_flight) < limit:
                cell = waiting.pop(0)
                started(cell)
                self.in_flight.append(self._submit(cell, 1))
            refs = [r for f in self.in_flight for r in f.refs]
            if refs:
                ray.wait(refs, num_returns=1, timeout=POLL_S)
            for flight in list(self.in_flight):
                ready, _ = ray.wait(flight.refs, num_returns=len(flight.refs), timeout=0) if flight.refs else ([], [])
                lost = not flight.refs or self._any_lost(ready)
                if not lost and len(ready) < len(flight.refs):
                    continue
                outcome = None if lost else self._collect(flight)
                self.in_flight.remove(flight)
                self._release(flight)
                if outcome is None and flight.attempt <= self.sweep.retries:
                    print(
                        f"cell {flight.cell.describe()}: its Ray worker or node was lost; running it again "
                        f"(attempt {flight.attempt + 1} of {self.sweep.retries + 1})",
                        file=sys.stderr,
                        flush=True,
                    )
                    self.in_flight.append(self._submit(flight.cell, flight.attempt + 1))
                    continue
                if outcome is None:
                    outcome = Outcome(error=f"its Ray worker or node was lost {flight.attempt} times")
                done(flight.cell, outcome, flight.attempt)

    def _any_lost(self, ready: list[Any]) -> bool:
        """Whether one of a cell's finished refs failed because its worker, actor or node is gone (the
        others would only wait for their party's timeout)."""
        ray = self.ray
        for ref in ready:
            try:
                ray.get(ref, timeout=0)
            except ray.exceptions.RayTaskError:
                continue
            except ray.exceptions.RayError:
                return True
        return False

    def close(self) -> None:
        for flight in self.in_flight:
            self._release(flight)
        self.in_flight.clear()
        self.ray.shutdown()
