"""The local executor: one cell at a time on this machine, measured as `pibench run` measures it
(`pibench.measuring.runner.run_local`) on warm parties kept from one cell to the next
(`pibench.measuring.workers`: a party's start-up, its imports of torch, CrypTen or JAX, is paid once,
not per cell; a cell over an emulated link starts its own inside the link's namespaces). Nothing to
install; the default of `pibench sweep`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pibench.measuring.workers import Workers
from pibench.results.records import Record, RecordNotBuilt, build_record
from pibench.sweeps.spec import Cell, Sweep
from pibench.util.errors import PibenchError


@dataclass(frozen=True)
class Outcome:
    """How a cell ended: its record, or the one-line error (with what was measured where the record
    could not be made: `unsaved`), and the Ray node it ran on."""

    record: Record | None = None
    error: str | None = None
    unsaved: dict[str, Any] | None = None
    node: str | None = None


Started = Callable[[Cell], None]
Done = Callable[[Cell, Outcome, int], None]  # the cell, how it ended, attempts made


def measure_cell(
    text: str,
    base: str,
    full: bool,
    timeout_s: float,
    include: Sequence[str],
    accept_unusable: bool,
    nodes: dict[str, str] | None = None,
    workers: Workers | None = None,
) -> Outcome:
    """Run one cell's suite (its YAML `text`, said to come from `base`) with its parties on this
    machine, over its `network.emulate` link where it names one, and make its record here (this
    machine's environment). `include`: the user's variant files (loaded in this process already;
    the parties load them too); `nodes`: the Ray nodes its ranks ran on, for the record; `workers`:
    warm parties to run on."""
    from pibench.measuring.emulate import EmulatedLink
    from pibench.measuring.runner import run_local
    from pibench.suites.loader import load_suite

    try:
        suite = load_suite(base, text=text)
        with contextlib.ExitStack() as stack:
            link = stack.enter_context(EmulatedLink(suite.emulate)) if suite.emulate else None
            measured, run = run_local(
                suite,
                full=full,
                timeout_s=timeout_s,
                progress=False,
                link=link,
                accept_unusable=accept_unusable,
                include=include,
                workers=workers,
            )
        if nodes:
            run = run.model_copy(update={"nodes": nodes})
        return Outcome(record=build_record(suite, measured, run))
    except RecordNotBuilt as err:
        return Outcome(error=str(err), unsaved=err.data)
    except PibenchError as err:
        return Outcome(error=str(err))


class LocalExecutor:
    """Cells one after another on this machine."""

    name = "local"

    def __init__(self, sweep: Sweep, include: Sequence[str], accept_unusable: bool) -> None:
        self.sweep, self.include, self.accept_unusable = sweep, list(include), accept_unusable
        self.workers = Workers()  # warm parties, kept from one cell to the next

    def check(self, cells: Sequence[Cell]) -> None:
        """Refuse, before any cell runs, what this machine cannot run (memory for two parties, weights)."""
        from pibench.measuring.runner import check_before_run

        for cell in cells:
            try:
                check_before_run(cell.suite(), self.sweep.full)
            except PibenchError as err:
                raise PibenchError(f"{self.sweep.path}: the cell {cell.describe()}: {err}") from None

    def capacity(self) -> int:
        return 1

    def run(self, cells: Sequence[Cell], started: Started, done: Done) -> None:
        sweep = self.sweep
        for cell in cells:
            started(cell)
            outcome = measure_cell(
                cell.text,
                cell.base,
                sweep.full,
                sweep.timeout_s,
                self.include,
                self.accept_unusable,
                workers=self.workers,
            )
            done(cell, outcome, 1)

    def close(self) -> None:
        self.workers.close()
