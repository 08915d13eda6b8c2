"""A sweep's folder: what it holds, and which cells are finished or failed.

    DIR/sweep.json          the manifest (kind pibench.sweep): the sweep file's text, the axes, and every
                            cell's values, key and record file, rewritten when the sweep starts
    DIR/cells/NAME-KEY.json a finished cell's run record (`pibench report` reads it like any record)
    DIR/failed/NAME-KEY.json why a cell failed (kind pibench.sweep-failure); removed when it succeeds

A cell's record is written atomically as it finishes, so a crash or Ctrl-C loses at most the cells in
flight. Records are kept by key: after an axis changes, cells whose key is unchanged are not measured
again, and records of cells no longer in the sweep stay in the folder but out of its report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pibench.measuring.measured import Strict
from pibench.results.records import Record, RecordNotWritten, keep_elsewhere, read_json, validate_record, write_record
from pibench.sweeps.spec import Cell, Sweep
from pibench.util.errors import PibenchError, validated
from pibench.util.machine import now

MANIFEST = "sweep.json"


class ManifestCell(Strict):
    key: str
    file: str
    variant: str
    backend: str
    values: dict[str, Any]


class Manifest(Strict):
    kind: Literal["pibench.sweep"]  # pibench.util.files.SWEEP
    schema_version: Literal[1]
    name: str
    path: str  # the sweep file
    text: str  # its text
    base: str  # the base suite
    axes: list[str]
    placement: str
    updated: str
    cells: list[ManifestCell]


class Failure(Strict):
    kind: Literal["pibench.sweep-failure"]  # pibench.util.files.SWEEP_FAILURE
    key: str
    values: dict[str, Any]
    error: str
    attempts: int
    when: str
    node: str | None = None


def default_folder(name: str) -> Path:
    return Path("results") / "sweeps" / name


class Store:
    """The folder of one sweep's records."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def record_path(self, cell: Cell | ManifestCell) -> Path:
        return self.folder / "cells" / cell.file

    def failure_path(self, cell: Cell | ManifestCell) -> Path:
        return self.folder / "failed" / cell.file

    def start(self, sweep: Sweep) -> None:
        """(Re)write the manifest: the sweep as it is now."""
        manifest = Manifest(
            kind="pibench.sweep",
            schema_version=1,
            name=sweep.name,
            path=sweep.path,
            text=sweep.text,
            base=sweep.base,
            axes=list(sweep.axes),
            placement=sweep.placement,
            updated=now(),
            cells=[
                ManifestCell(key=c.key, file=c.file, variant=c.variant, backend=c.backend, values=c.values)
                for c in sweep.cells
            ],
        )
        try:
            write_record(self.folder / MANIFEST, manifest)
        except RecordNotWritten as err:
            raise PibenchError(f"sweep folder '{self.folder}': {err}") from None

    def record(self, cell: Cell | ManifestCell) -> Record | None:
        """The cell's record where it finished (a damaged file counts as not finished)."""
        path = self.record_path(cell)
        if not path.is_file():
            return None
        try:
            return validate_record(read_json(path), f"record '{path}'")
        except PibenchError:
            return None

    def failure(self, cell: Cell | ManifestCell) -> Failure | None:
        path = self.failure_path(cell)
        if not path.is_file():
            return None
        try:
            return validated(Failure, read_json(path), f"'{path}'")
        except PibenchError:
            return None

    def save(self, cell: Cell, record: Record) -> Path:
        """Write a finished cell's record; where that fails, keep it beside and say where (one line)."""
        path = self.record_path(cell)
        try:
            written = write_record(path, record)
        except RecordNotWritten as err:
            raise PibenchError(f"{err}; the record is saved in {keep_elsewhere(path, record, 'unsaved')}") from None
        self.failure_path(cell).unlink(missing_ok=True)
        return written

    def fail(self, cell: Cell, error: str, attempts: int, node: str | None = None) -> None:
        failure = Failure(
            kind="pibench.sweep-failure",
            key=cell.key,
            values=cell.values,
            error=error,
            attempts=attempts,
            when=now(),
            node=node,
        )
        try:
            write_record(self.failure_path(cell), failure)
        except RecordNotWritten as err:
            raise PibenchError(f"sweep folder '{self.folder}': {err}") from None


def read_manifest(folder: str | Path) -> Manifest:
    """A sweep folder's manifest; a folder without one is a one-line error."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise PibenchError(f"'{folder}' is not a sweep folder: it has no {MANIFEST} (made by pibench sweep)")
    return validated(Manifest, read_json(path), f"sweep manifest '{path}'")
