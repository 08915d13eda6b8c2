"""A sweep's folder: what it holds, and which cells are finished or failed.

    DIR/sweep.json          the manifest (kind pibench.sweep): the sweep file's text, the axes, and every
                            cell's values, key and record file, rewritten when the sweep starts
    DIR/cells/NAME-KEY.json a finished cell's run record (`pibench report` reads it like any record)
    DIR/failed/NAME-KEY.json why a cell failed (kind pibench.sweep-failure); removed when it succeeds

A cell's record is written atomically as it finishes, so a crash or Ctrl-C loses at most the cells in
flight. Records are kept by key: after an axis changes, cells whose key is unchanged are not measured
again, and records of cells no longer in the sweep stay in the folder but out of its report. A record
is used as its cell's only once it is checked to be that cell's measurement (`Cell.mismatch`: a file
copied under another cell's name is measured again, and said so), and one measured by another version
of pibench's measuring code (`other_version`) is measured again unless the sweep is told to reuse it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pibench.backends import BACKENDS
from pibench.measuring.measured import Strict
from pibench.results.records import Record, RecordNotWritten, keep_elsewhere, read_json, validate_record, write_record
from pibench.sweeps.spec import Cell, Sweep, record_key
from pibench.util.errors import PibenchError, validated
from pibench.util.machine import code_digest, now, package_version

MANIFEST = "sweep.json"


class ManifestCell(Strict):
    key: str
    file: str
    variant: str
    backend: str
    values: dict[str, Any]


class Manifest(Strict):
    kind: Literal["pibench.sweep"]  # pibench.util.files.SWEEP
    # 2: cells' keys without pibench's version (a record's code is checked apart: `other_version`); a folder
    # of version 1 still reports (its keys checked as they were made), and `pibench sweep` rewrites it
    schema_version: Literal[1, 2]
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


@dataclass(frozen=True)
class Found:
    """What a cell's file in the folder holds: its record (None: none, or not usable as this cell's),
    and why a file there is not used (None: no file, or its record is the cell's)."""

    record: Record | None = None
    problem: str | None = None


def other_version(record: Record) -> str | None:
    """Why `record` was measured by another version of pibench than this one (None: the same): its
    measuring code (`pibench.util.machine.code_digest`) or its backend's package differ."""
    env = record.environment
    backend = BACKENDS.get(record.backend.name).package if record.backend.name in BACKENDS else None
    git = env.git
    made = f"at commit {git.commit[:10]}{' (dirty)' if git.dirty else ''}" if git else "at an unknown commit"
    if env.code is None:
        return f"its record names no measuring code (made {made}, before pibench kept it)"
    if env.code != code_digest():
        return f"its measuring code differs from this pibench's (made {made})"
    if backend and record.backend.version != package_version(backend):
        return f"it ran {backend} {record.backend.version}, this machine has {package_version(backend)}"
    return None


def default_folder(name: str) -> Path:
    return Path("results") / "sweeps" / name


class Store:
    """The folder of one sweep's records."""

    def __init__(self, folder: str | Path, manifest_version: int = 2) -> None:
        self.folder = Path(folder)
        self.manifest_version = manifest_version  # how its cells' keys were made (`record_key`)

    def record_path(self, cell: Cell | ManifestCell) -> Path:
        return self.folder / "cells" / cell.file

    def failure_path(self, cell: Cell | ManifestCell) -> Path:
        return self.folder / "failed" / cell.file

    def start(self, sweep: Sweep) -> None:
        """(Re)write the manifest: the sweep as it is now."""
        manifest = Manifest(
            kind="pibench.sweep",
            schema_version=2,
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
        """The cell's record where it finished (`lookup`; a damaged file, or another cell's record, counts
        as not finished)."""
        return self.lookup(cell).record

    def lookup(self, cell: Cell | ManifestCell) -> Found:
        """The cell's file: its record where it is that cell's (its `record_key` is the cell's key), else why
        not (`Cell.mismatch` says what differs)."""
        path = self.record_path(cell)
        if not path.is_file():
            return Found()
        try:
            record = validate_record(read_json(path), f"record '{path}'")
        except PibenchError as err:
            return Found(problem=str(err))
        if record_key(record, self.manifest_version) == cell.key:
            return Found(record)
        why = cell.mismatch(record) if isinstance(cell, Cell) else "it is another cell's measurement"
        return Found(problem=f"'{path}' is not its record: {why}") if why else Found(record)

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
