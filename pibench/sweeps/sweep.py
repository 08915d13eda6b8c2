"""The driver of a sweep: which cells are left, an executor to run them, each record written as its
cell finishes, and progress over the whole sweep with an estimate of what is left.

The estimate: each cell's predicted seconds (the shipped calibration's, `pibench cost --predict`,
where its settings match), scaled by what finished cells of its backend took against their prediction;
a cell without a prediction counts as the mean of its backend's finished cells. Divided by the cells
the executor runs at once.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pibench.results.records import keep_elsewhere
from pibench.sweeps.local import Done, Outcome, Started
from pibench.sweeps.spec import Cell, Sweep
from pibench.sweeps.store import Store, other_version
from pibench.util.progress import Progress


class Executor(Protocol):
    name: str

    def check(self, cells: Sequence[Cell]) -> None: ...
    def capacity(self) -> int: ...
    def run(self, cells: Sequence[Cell], started: Started, done: Done) -> None: ...
    def close(self) -> None: ...


@dataclass
class Summary:
    """What a sweep's run did."""

    total: int
    before: int  # finished in an earlier run, not run again
    reused: list[Cell] = field(default_factory=list)  # of those, measured by another version (--reuse-other-versions)
    again: list[tuple[Cell, str]] = field(default_factory=list)  # a record there, measured again: why
    skipped_failed: list[Cell] = field(default_factory=list)  # failed earlier, not retried
    done: list[Cell] = field(default_factory=list)
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    unusable: list[Cell] = field(default_factory=list)


def predicted_seconds(cell: Cell) -> float | None:
    """The shipped calibration's loopback seconds for the cell's variant, or None where it has none."""
    from pibench.calibration.fit import predictions_for
    from pibench.suites.analytic import suite_costs

    suite = cell.suite()
    (p,) = predictions_for(suite.backend, suite.settings_dict, suite_costs(suite), ())
    return p.wall_s if p else None


class Estimate:
    """Seconds left of a sweep, from predictions scaled by what finished cells took."""

    def __init__(self, cells: Sequence[Cell]) -> None:
        self.predicted = {c.key: predicted_seconds(c) for c in cells}
        self.taken: dict[str, list[tuple[float | None, float]]] = defaultdict(list)  # backend -> (pred, took)

    def finished(self, cell: Cell, seconds: float) -> None:
        self.taken[cell.backend].append((self.predicted.get(cell.key), seconds))

    def left(self, cells: Sequence[Cell], parallel: int) -> float | None:
        total = 0.0
        for cell in cells:
            seen = self.taken.get(cell.backend) or [t for ts in self.taken.values() for t in ts]
            if not seen:
                return None
            pred = self.predicted.get(cell.key)
            scaled = [(p, t) for p, t in seen if p]
            if pred and scaled:
                total += pred * sum(t for _, t in scaled) / sum(p for p, _ in scaled)
            else:
                total += sum(t for _, t in seen) / len(seen)
        return total / max(1, parallel)


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _again(summary: Summary) -> list[str]:
    """Lines saying which cells that had a record there are measured again, and why (at most 5 named)."""
    lines = [f"cell {cell.describe()}: {why}; measuring it again" for cell, why in summary.again[:5]]
    if len(summary.again) > 5:
        lines.append(f"... and {len(summary.again) - 5} more cells whose records are measured again")
    if summary.reused:
        lines.append(
            f"{len(summary.reused)} cells measured by another version of pibench are kept (--reuse-other-versions); "
            "their records say which"
        )
    return lines


def run_sweep(
    sweep: Sweep,
    store: Store,
    executor: Executor,
    *,
    retry_failed: bool = False,
    progress: bool = True,
    reuse_other_versions: bool = False,
) -> Summary:
    """Run the cells of `sweep` that have no record in `store` (and, with `retry_failed`, those that
    failed before), one record per cell as it finishes. A record that is not its cell's
    (`Store.lookup`), or that another version of pibench measured (`other_version`, unless
    `reuse_other_versions`), is measured again, and said so."""
    store.start(sweep)
    summary = Summary(total=len(sweep.cells), before=0)
    todo: list[Cell] = []
    for cell in sweep.cells:
        found = store.lookup(cell)
        other = other_version(found.record) if found.record else None
        if found.record is not None and (other is None or reuse_other_versions):
            summary.before += 1
            summary.reused += [cell] if other else []
        elif found.record is not None or found.problem is not None:
            summary.again.append((cell, other or found.problem or ""))
            todo.append(cell)
        elif store.failure(cell) is not None and not retry_failed:
            summary.skipped_failed.append(cell)
        else:
            todo.append(cell)
    for line in _again(summary):
        print(line, file=sys.stderr, flush=True)
    print(
        f"sweep {sweep.name}: {summary.total} cells, {summary.before} finished before, {len(todo)} to run"
        + (
            f", {len(summary.skipped_failed)} failed before (--retry-failed reruns them)"
            if summary.skipped_failed
            else ""
        )
        + f"; executor {executor.name}; folder {store.folder}",
        file=sys.stderr,
        flush=True,
    )
    if not todo:
        return summary
    executor.check(todo)
    estimate = Estimate(todo)
    running: dict[str, float] = {}
    waiting = list(todo)
    bar = Progress(len(todo), "cell", progress, bar_format="{n_fmt}/{total_fmt} cells |{bar}| {elapsed} {postfix}")

    parallel = min(executor.capacity(), len(todo))  # cells at once

    def show() -> None:
        left = estimate.left([*waiting, *(c for c in todo if c.key in running)], parallel)
        bar.note(
            f"done {len(summary.done)}, failed {len(summary.failed)}, running {len(running)}, left ~{_minutes(left)}"
        )

    def started(cell: Cell) -> None:
        running[cell.key] = time.monotonic()
        if cell in waiting:
            waiting.remove(cell)
        show()

    def done(cell: Cell, outcome: Outcome, attempts: int) -> None:
        took = time.monotonic() - running.pop(cell.key, time.monotonic())
        if outcome.record is not None:
            store.save(cell, outcome.record)
            estimate.finished(cell, took)
            summary.done.append(cell)
            if not all(v.measured.usable for v in outcome.record.variants):
                summary.unusable.append(cell)
        else:
            error = outcome.error or "failed"
            if outcome.unsaved is not None:
                kept = keep_elsewhere(store.record_path(cell), outcome.unsaved, "invalid")
                error += f"; what was measured is saved in {kept}"
            store.fail(cell, error, attempts, outcome.node)
            summary.failed.append((cell, error))
        bar.advance(1)
        show()

    show()
    try:
        executor.run(todo, started, done)
    finally:
        bar.close()
    return summary


def describe(summary: Summary) -> str:
    """One line: what ran and what is in the folder."""
    parts = [f"{len(summary.done)} measured", f"{summary.before} finished before"]
    if summary.again:
        parts.append(f"{len(summary.again)} of those measured had a record that was not used")
    if summary.failed or summary.skipped_failed:
        parts.append(f"{len(summary.failed) + len(summary.skipped_failed)} failed")
    return f"{summary.total} cells: " + ", ".join(parts)


def outcome_of(result: dict[str, Any]) -> Outcome:
    """An `Outcome` from what a remote cell returned (its record as JSON, or the error)."""
    from pibench.results.records import validate_record

    record = result.get("record")
    return Outcome(
        record=validate_record(record, "the record a Ray worker returned") if record is not None else None,
        error=result.get("error"),
        unsaved=result.get("unsaved"),
        node=result.get("node"),
    )
