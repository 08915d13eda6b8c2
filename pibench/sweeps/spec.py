"""The sweep file: a base suite, axes over its keys (or a list of cells), and how each cell runs.

    name: papers_t                      # optional, defaults to the file's stem; names the sweep's folder
    description: the papers' variants at three prompt lengths
    suite: ../gpt2_t128.yaml            # the base suite (a path relative to this file)
    set: {model.d: 256, repeats: 1}     # dotted keys set in every cell (a smaller model, say)
    axes:                               # dotted keys of the suite, each with its values: the cross product
      model.T: [64, 128, 256]
      backend: [crypten, spu]
      crypten.functions: [{exp_iterations: 8}, {exp_iterations: 10}]
      variant: [sm_ln_g, sm_scfuffn]    # entries of the base suite or registry names (default: its entries)
    # cells:                            # instead of axes: an explicit list, each a mapping axis -> value
    #   - {model.T: 64, backend: spu}
    full: false                         # every layer, as `pibench run --full`
    timeout: 45                         # seconds without progress before a cell's parties are stopped
    placement: pack                     # on Ray: a cell's parties on one node (pack) or on different ones (spread)
    retries: 2                          # reruns of a cell whose Ray worker or node was lost

A cell is one variant of the base suite with the axes' values set (`Cell`): it runs as `pibench run`
runs that one-variant suite, and is validated as that suite is (every cell before anything runs).
Its key is a digest of everything that decides its counts (`Cell.key`); its record is kept under it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as schema

from pibench.backends import BACKENDS
from pibench.models.variants import VARIANTS
from pibench.results.records import Record
from pibench.suites.loader import (
    STRICT,
    Name,
    Suite,
    _describe,
    _most_telling,
    _parse,
    _stem_name,
    _SuiteFile,
    load_suite,
    read_suite_text,
)
from pibench.util.errors import PibenchError, did_you_mean, shorten

MAX_CELLS = 1000  # a grid over this is refused before anything runs
MAX_VALUES = 64  # values of one axis
MAX_RETRIES = 10
VARIANT = "variant"  # the axis that picks the base suite's entry
# the suite keys an axis may set (the first part of its dotted path), and why the others may not
SUITE_KEYS = {"model", "backend", "seed", "repeats", "generate", "scope", "vocab", "accuracy", "weights", "network"}
NOT_AXES = {
    "variants": f"name the entries with the axis '{VARIANT}'",
    "name": "every cell keeps the base suite's name",
    "description": "every cell keeps the base suite's description",
    "train": "a sweep measures; `pibench train` trains",
}
AXIS_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,7}")
Seconds = Field(default=45.0, ge=5.0, le=86_400.0)


@schema(frozen=True, config=STRICT)
class SweepSpec:
    suite: StrictStr = Field(min_length=1, max_length=4096)
    name: Name | None = None
    description: StrictStr = Field(default="", max_length=1000)
    set: dict[StrictStr, Any] = Field(default_factory=dict, max_length=32)
    axes: dict[StrictStr, list[Any]] = Field(default_factory=dict, max_length=16)
    cells: list[dict[StrictStr, Any]] | None = Field(default=None, min_length=1, max_length=MAX_CELLS)
    full: StrictBool = False
    timeout: StrictFloat | StrictInt = Seconds
    placement: Literal["pack", "spread"] = "pack"
    retries: StrictInt = Field(default=2, ge=0, le=MAX_RETRIES)


@dataclass(frozen=True)
class Cell:
    """One measurement of a sweep: the axes' values (with the variant's entry name), the one-variant
    suite it runs (its text, validated, and as loaded then: `suite()`) and its key."""

    values: dict[str, Any]
    text: str  # the cell's suite, YAML
    base: str  # the base suite's path (relative weights and text resolve from its folder)
    key: str
    full: bool  # every layer runs (the sweep's `full`)
    loaded: Suite = field(compare=False, repr=False)  # `text` loaded, when the sweep was validated

    @property
    def variant(self) -> str:
        """The entry's name (its record's variant)."""
        return self.loaded.entries[0].name

    @property
    def backend(self) -> str:
        return self.loaded.backend

    @property
    def file(self) -> str:
        """The file name of its record in the sweep's folder."""
        return f"{self.variant}-{self.key[:16]}.json"

    def describe(self) -> str:
        """'model.T=64, backend=spu, variant=sm_ln_g'."""
        return ", ".join(f"{k}={show(v)}" for k, v in self.values.items())

    def suite(self) -> Suite:
        return self.loaded

    def mismatch(self, record: Record) -> str | None:
        """Why `record` is not this cell's measurement (None: it is, `record_key`): another variant, another
        suite (dimensions, settings, seed...: `Suite.digest`), another `full`, or another emulated link."""
        if record_key(record) == self.key:
            return None
        suite = self.loaded
        names = [v.name for v in record.variants]
        if names != [self.variant]:
            return f"it holds variant{'s' * (len(names) > 1)} {', '.join(names)}, not {self.variant}"
        if record.suite.digest != suite.digest:
            differ = [k for k, v in record.suite.dims.items() if suite.dims.get(k) != v]
            if differ:
                theirs = ", ".join(f"{k}={record.suite.dims[k]}" for k in differ)
                mine = ", ".join(f"{k}={suite.dims.get(k)}" for k in differ)
                return f"it was measured at {theirs}, the cell is at {mine}"
            return "it was measured from another suite (its settings, seed or weights differ)"
        if record.run.full != self.full:
            return "it ran every layer" if record.run.full else "it ran a sample of layers, the cell every layer"
        emulated = suite.emulate.name if suite.emulate else None
        if record.run.emulated != emulated:
            return f"it was measured over {record.run.emulated or 'loopback'}, the cell over {emulated or 'loopback'}"
        return "it is another cell's measurement"


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file: its cells in order, the axes (with `variant` last) and run settings."""

    name: str
    path: str
    text: str
    description: str
    base: str
    axes: tuple[str, ...]
    cells: tuple[Cell, ...]
    full: bool
    timeout_s: float
    placement: str
    retries: int


def show(value: Any) -> str:
    """An axis value as a table cell: scalars as written, mappings and lists as compact JSON."""
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def cell_key(suite: Suite, full: bool) -> str:
    """SHA-256 of what a cell measures: the one-variant suite (dimensions, entry and its config, seed,
    repeats, backend and settings, weights, accuracy windows: `Suite.digest`), whether every layer runs,
    and the link it runs over. The code that measured it is checked apart, on its record
    (`pibench.sweeps.store.other_version`), so that a cell measured by another pibench is found, said
    and measured again. Times depend on the machine too: its record names the machine
    (`environment.fingerprint`)."""
    return _key(suite.digest, full, suite.emulate.name if suite.emulate else None)


def record_key(record: Record, manifest_version: int = 2) -> str:
    """The key of the cell a record measured (`cell_key`), from what the record says it ran; for a folder
    whose manifest is of version 1, as keys were then made (with pibench's version in them)."""
    version = record.environment.packages.get("pibench") if manifest_version == 1 else None
    return _key(record.suite.digest, record.run.full, record.run.emulated, version)


def _key(digest: str, full: bool, emulate: str | None, version: str | None = None) -> str:
    what = {"suite": digest, "full": full, "emulate": emulate} | ({"pibench": version} if version else {})
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def _check_axis(file: _SuiteFile, loc: tuple[Any, ...], axis: str) -> None:
    top = axis.split(".", 1)[0]
    if axis == VARIANT:
        return
    if not AXIS_PATTERN.fullmatch(axis):
        raise file.error(loc, f"axis {shorten(axis)} is not a dotted suite key (e.g. model.T, crypten.gelu)")
    if top in NOT_AXES:
        raise file.error(loc, f"'{top}' cannot be an axis: {NOT_AXES[top]}")
    known = SUITE_KEYS | set(BACKENDS.names())
    if top not in known:
        raise file.error(
            loc,
            f"axis '{axis}': unknown suite key '{top}'{did_you_mean(top, [*known, VARIANT])}; "
            f"known: {', '.join(sorted(known))}, {VARIANT}",
        )
    if top in SUITE_KEYS and axis.count(".") and top not in ("model", "generate", "accuracy", "weights", "network"):
        raise file.error(loc, f"axis '{axis}': '{top}' is a value, not a section; use '{top}'")


def _other_backend(axis: str, backend: str) -> bool:
    top = axis.split(".", 1)[0]
    return top in BACKENDS.names() and top != backend


def _set(data: dict[str, Any], axis: str, value: Any) -> None:
    """Set the dotted key `axis` of the suite's data to `value` (sections made where absent)."""
    *parents, last = axis.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise PibenchError(f"'{part}' of the base suite is a value, not a section")
        node = child
    node[last] = copy.deepcopy(value)


def _entries(base: Suite) -> dict[str, Any]:
    """The base suite's entries as written, by entry name."""
    data = base.source  # the suite's YAML as loaded (not a record)
    return {e.name: data["variants"][i] for i, e in enumerate(base.entries)}


def _combinations(file: _SuiteFile, spec: SweepSpec, base: Suite) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    """The axes (variant last) and every combination of values, refused before building any cell when
    there would be more than MAX_CELLS."""
    if (spec.cells is None) == (not spec.axes):
        raise file.error((), "give 'axes' (their cross product) or 'cells' (a list), one of them")
    if spec.cells is None:
        for axis, values in spec.axes.items():
            _check_axis(file, ("axes", axis), axis)
            if not 1 <= len(values) <= MAX_VALUES:
                raise file.error(("axes", axis), f"give 1 to {MAX_VALUES} values, not {len(values)}")
        axes = list(spec.axes)
        count = math.prod(len(v) for v in spec.axes.values())
        combos: list[dict[str, Any]] = []
        if count <= MAX_CELLS:
            combos = [dict(zip(axes, vs, strict=True)) for vs in itertools.product(*spec.axes.values())]
    else:
        axes = []
        for i, cell in enumerate(spec.cells):
            for axis in cell:
                _check_axis(file, ("cells", i, axis), axis)
                axes += [axis] if axis not in axes else []
        combos = [dict(c) for c in spec.cells]
        count = len(combos)
    per = 1 if VARIANT in axes else len(base.entries)
    if count * per > MAX_CELLS:
        raise file.error(
            ("axes",) if spec.cells is None else ("cells",),
            f"{count * per} cells ({count} combinations x {per} variants); a sweep has at most {MAX_CELLS}",
        )
    axes = [a for a in axes if a != VARIANT] + [VARIANT]
    if per > 1:
        combos = [c | {VARIANT: e.name} for c in combos for e in base.entries]
    return tuple(axes), combos


def _cell(
    file: _SuiteFile, base: Suite, loc: tuple[Any, ...], values: dict[str, Any], fixed: dict[str, Any], full: bool
) -> Cell:
    data = copy.deepcopy(base.source)
    entries = _entries(base)
    name = values.get(VARIANT, base.entries[0].name)
    if not isinstance(name, str) or (name not in entries and name not in VARIANTS):
        known = [*entries, *(n for n in VARIANTS.names() if n not in entries)]
        raise file.error(
            (*loc, VARIANT),
            f"unknown variant {shorten(name)}{did_you_mean(str(name), known)}; `pibench list` shows them",
        )
    data["variants"] = [entries.get(name, name)]
    described = ", ".join(f"{k}={show(v)}" for k, v in values.items())
    try:
        for axis, value in [*fixed.items(), *values.items()]:
            if axis != VARIANT:
                _set(data, axis, value)
        text = yaml.safe_dump(data, sort_keys=False)
        suite = load_suite(base.path, text=text)
    except PibenchError as err:
        why = re.sub(rf"^{re.escape(base.path)}(:\d+)?: ", "", str(err))
        raise file.error(loc, f"the cell {described}: {why}") from None
    entry = suite.entries[0]
    # a setting of another backend than the cell's does not apply to it: shown as none
    ordered = {k: None if _other_backend(k, suite.backend) else values[k] for k in values if k != VARIANT}
    ordered[VARIANT] = entry.name
    return Cell(ordered, text, base.path, cell_key(suite, full), full, suite)


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file and every one of its cells (each cell's suite is loaded as
    `pibench run` would load it); any problem is a one-line `PibenchError` naming the file and key."""
    path = Path(path)
    text = read_suite_text(path)
    root, data = _parse(path, text)
    file = _SuiteFile(path, root)
    if not isinstance(data, dict):
        raise file.error((), "a sweep must be a mapping with keys 'suite' and 'axes' (or 'cells')")
    try:
        spec = TypeAdapter(SweepSpec).validate_python(data)
    except ValidationError as err:
        first = _most_telling(err)
        loc, msg = _describe(first)
        if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):  # a sweep's keys, not a suite's
            key = str(loc[-1])
            msg = f"unknown key {shorten(key)}{did_you_mean(key, [f.name for f in dataclasses.fields(SweepSpec)])}"
        raise file.error(loc, msg) from None
    base_path = path.parent / Path(spec.suite).expanduser()
    try:
        base = load_suite(base_path)
    except PibenchError as err:
        raise file.error(("suite",), str(err)) from None
    for key in spec.set:
        _check_axis(file, ("set", key), key)
        if key == VARIANT:
            raise file.error(("set", key), f"name the variants in the base suite, or make '{VARIANT}' an axis")
    axes, combos = _combinations(file, spec, base)
    cells: dict[str, Cell] = {}  # by key: combinations that make the same measurement are one cell (an SPU
    for i, values in enumerate(combos):  # cell under two values of a CrypTen setting, a value given twice)
        where: tuple[Any, ...] = ("cells", i) if spec.cells is not None else ("axes",)
        cell = _cell(file, base, where, values, spec.set, spec.full)
        cells.setdefault(cell.key, cell)
    return Sweep(
        spec.name or _stem_name(path),
        str(path),
        text,
        spec.description,
        str(base_path),
        axes,
        tuple(cells.values()),
        spec.full,
        float(spec.timeout),
        spec.placement,
        spec.retries,
    )
