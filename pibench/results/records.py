"""Result records: one versioned JSON file per run, with every setting that produced it.

`Record` is the schema (strict: no extra keys, no NaN, no strings for numbers, no zero totals);
`build_record` is the one place a record is made, and it validates what it makes; `read_record`
validates what it reads, so a damaged file is "not a valid record" (exit 2), never a crash or a
regression. `SCHEMA_VERSION` changes whenever a field does, and `MIGRATIONS` upgrades a record of
each older version one step at a time on load (as asv does); a record older than the first migration
is refused with the reason, one from a newer pibench with the version it needs. Records are written
atomically (a temporary file in the same folder, then a rename) and only for complete runs; a default
record name is never reused (two runs in the same second get `-2`, `-3`, ...).

A finished measurement is never lost: where its record cannot be built or validated
(`RecordNotBuilt`) or written (`RecordNotWritten`), `keep_elsewhere` saves what was measured beside
the record's path, else in the temporary folder, else on stdout, and the one-line error says where.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from pibench.backends import BACKENDS
from pibench.calibration.fit import Predicted, predictions_for
from pibench.measuring.measured import Count, Measured, Positive, RunInfo, Strict
from pibench.models.config import FIELDS, ModelConfig
from pibench.suites.analytic import suite_costs, suite_generations
from pibench.suites.loader import Suite
from pibench.util.errors import PibenchError, did_you_mean, shorten, validated
from pibench.util.files import RUN, expect
from pibench.util.files import read_json as read_pibench_json
from pibench.util.machine import Environment, environment, fingerprint, now, package_version

SCHEMA_VERSION = 3
HISTORY = {  # versions no migration reaches, and why
    1: "version 1 (before pibench's backend interface: separate Q/K/V products, CrypTen's softmax, "
    "no error scope, no dealer traffic)",
}


def _from_2(record: dict[str, Any]) -> dict[str, Any]:
    """Version 3 adds each variant's synthetic prompt (`Measured.prompt`; version 2 did not keep it), the
    environment's measuring-code digest (`Machine.code`; unknown before), whether the parties were warm
    (`RunInfo.warm_parties`; they never were before), and to predictions their round trips (version 2's
    counted rounds, which its projections multiplied) and notes (none)."""
    for measured in (v.get("measured") for v in record.get("variants") or [] if isinstance(v, dict)):
        if isinstance(measured, dict):
            measured.setdefault("prompt", None)
    environment = record.get("environment")
    if isinstance(environment, dict):
        environment.setdefault("code", None)
    run = record.get("run")
    if isinstance(run, dict):
        run.setdefault("warm_parties", False)
    for predicted in (v.get("predicted") for v in record.get("variants") or [] if isinstance(v, dict)):
        if isinstance(predicted, dict):  # predictions then counted rounds alone, and said nothing more
            predicted.setdefault("notes", [])
            generation = predicted.get("generation")
            steps = generation.get("steps") if isinstance(generation, dict) else None
            for part in [predicted, *(steps if isinstance(steps, list) else [])]:
                if isinstance(part, dict):
                    part.setdefault("round_trips", part.get("rounds", 0))
                    for kind in (part.get("by_kind") or {}).values():
                        if isinstance(kind, dict):
                            kind.setdefault("round_trips", kind.get("rounds", 0))
    return record


# version N -> the function that upgrades a record of version N to N + 1 (a copy: the file is not changed)
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {2: _from_2}

UNITS = {
    "bytes": "bytes sent by the two parties together (each byte once, both directions); 8 per ring element",
    "rounds": "blocking exchanges (communicator calls): per operation kind the party with more of them; "
    "the total is the sum of the kinds'",
    "wall_s": "seconds of the forward pass, secret-sharing of weights and input excluded",
    "comm_s": "seconds inside exchanges",
    "wall_s_min": "the fastest of each step's repeated passes, summed like wall_s (wall_s: the median pass)",
    "dealer": "traffic between party 0 and a trusted third party dealing triples (offline material), "
    "bytes both ways; not in bytes",
    "peak_rss_bytes": "peak resident memory of each party process during the variant",
    "max_abs_error": "max |MPC output - plaintext output| over the (T, d) hidden states of what ran (error_scope)",
}

MAX_RECORD_BYTES = 64 * 2**20


class NonlinearGroup(Strict):
    count: Positive
    shape: list[Positive] = Field(min_length=2, max_length=2)


class NonlinearEntry(Strict):
    count: Positive
    shape: list[Positive] | None
    elements: Positive
    groups: list[NonlinearGroup] | None = None


class Flops(Strict):
    ffn: Count
    attn: Count
    convention: str
    head: Count | None = None  # end to end: the embedding lookup and the LM head


class Analytic(Strict):
    variant: str
    label: str
    config: dict[str, Any]
    nonlinear: dict[str, NonlinearEntry]
    flops: Flops
    macs: dict[str, Count]
    elementwise: dict[str, Count]


class VariantRecord(Strict):
    name: str
    variant: str
    label: str
    config: dict[str, Any]
    analytic: Analytic
    measured: Measured
    predicted: Predicted | None
    # where the variant's code came from (`pibench.models.variants.Origin`); records made before it: None
    origin: dict[str, str] | None = None

    @field_validator("config")
    @classmethod
    def _a_model_config(cls, value: dict[str, Any]) -> dict[str, Any]:
        """A valid configuration, with defaults filled in (a record older than a field lacks it)."""
        try:
            return ModelConfig(**value).as_dict()
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(the configuration)"
            if first["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
                why = f"unknown field '{field}'{did_you_mean(field, FIELDS)}"
            else:
                why = f"{field}: {first['msg']}"
            raise ValueError(f"not a model configuration: {why}") from None
        except TypeError as err:  # a key ModelConfig has no field for
            raise ValueError(f"not a model configuration: {err}") from None


class SuiteInfo(Strict):
    name: str
    path: str
    description: str
    dims: dict[str, Positive]
    source: dict[str, Any]
    digest: str


class BackendInfo(Strict):
    name: str
    label: str
    protocol: str
    version: str | None
    settings: dict[str, Any]


class Record(Strict):
    schema_version: Literal[3]
    kind: Literal["pibench.run"]
    created: str
    suite: SuiteInfo
    backend: BackendInfo
    run: RunInfo
    environment: Environment
    units: dict[str, str]
    variants: list[VariantRecord] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> Record:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("two variants have the same name")
        return self

    @property
    def repeats(self) -> int:
        """How many times the record's steps were timed (one run: the same for every variant)."""
        return max(v.measured.repeats for v in self.variants)

    def variant(self, name: str) -> VariantRecord | None:
        """The variant of that name (or registry name), if the record has it."""
        return next((v for v in self.variants if name in (v.name, v.variant)), None)

    def same_suite(self, other: Record) -> bool:
        return (self.suite.name, self.suite.dims) == (other.suite.name, other.suite.dims)


class RecordNotBuilt(PibenchError):
    """A completed run whose record could not be made or is not valid; `data` is what was measured
    (the record as far as it was made), for `keep_elsewhere`."""

    def __init__(self, message: str, data: dict[str, Any]) -> None:
        super().__init__(message)
        self.data = data


class RecordNotWritten(PibenchError):
    """A record that could not be written where asked (a full disk, a vanished folder, ...)."""


def build_record(suite: Suite, measured: Sequence[Measured], run: RunInfo) -> Record:
    """The versioned record of a completed run, validated: suite, backend and its settings, the run's
    settings, environment, analytic costs, measured costs and, where the shipped calibration matches
    the settings, predicted ones. Any failure is a `RecordNotBuilt` that carries the measurement."""
    what = f"the record of suite '{suite.name}'"
    try:
        record = _assemble(suite, measured, run)
    except Exception as err:  # whatever went wrong, the measurement goes with the error
        data = {
            "kind": "pibench.unsaved",
            "suite": suite.name,
            "measured": [m.model_dump(mode="json") for m in measured],
            "run": run.model_dump(mode="json"),
        }
        raise RecordNotBuilt(f"{what} could not be made: {type(err).__name__}: {err}", data) from err
    try:
        return validate_record(record, what)
    except PibenchError as err:
        raise RecordNotBuilt(str(err), record) from None


def _assemble(suite: Suite, measured: Sequence[Measured], run: RunInfo) -> dict[str, Any]:
    backend = BACKENDS.get(suite.backend)
    costs = suite_costs(suite)
    predicted = predictions_for(suite.backend, suite.settings_dict, costs, suite.project, suite_generations(suite))
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
            "digest": suite.digest,
        },
        "backend": {
            "name": backend.name,
            "label": backend.label,
            "protocol": backend.protocol,
            "version": package_version(backend.package),
            "settings": suite.settings_dict,
        },
        "run": run.model_dump(mode="json"),
        "environment": environment() | {"fingerprint": fingerprint(suite.settings_dict)},
        "units": UNITS,
        "variants": [
            {
                "name": e.name,
                "variant": e.variant.name,
                "label": e.label,
                "config": e.config.as_dict(),
                "analytic": c.to_json(),
                "measured": m.model_dump(mode="json"),
                "predicted": p.model_dump(mode="json") if p else None,
                "origin": e.variant.origin.to_json(),
            }
            for e, c, m, p in zip(suite.entries, costs, measured, predicted, strict=True)
        ],
    }


def validate_record(record: Any, what: str) -> Record:
    """`record` (a record file's JSON) checked against the schema, as the typed `Record`, or a one-line
    `PibenchError`."""
    version = record.get("schema_version") if isinstance(record, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise PibenchError(
            f"{what} was made by a newer pibench (record schema {version}); this one reads schema {SCHEMA_VERSION} "
            "and older: upgrade pibench to read it"
        )
    if isinstance(version, int) and version in MIGRATIONS:
        record = copy.deepcopy(record)
        while version in MIGRATIONS:
            record = MIGRATIONS[version](record) | {"schema_version": version + 1}
            version += 1
    if version != SCHEMA_VERSION:
        why = (
            HISTORY.get(version, f"schema_version {shorten(version)}")
            if isinstance(version, int)
            else "no schema_version"
        )
        raise PibenchError(
            f"{what} is not a record this pibench reads: {why}; "
            f"it reads versions {min(MIGRATIONS)} to {SCHEMA_VERSION}; rerun the suite"
        )
    return validated(Record, record, f"{what} is not a valid record")


def default_record_path(suite_name: str, results_dir: str | Path = "results") -> Path:
    """results/SUITE-TIME.json (`write_record(..., exclusive=True)` adds -2, -3 where it exists)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(results_dir) / f"{suite_name}-{stamp}.json"


def check_folder(path: str | Path, what: str) -> None:
    """Refuse, before any work, a folder that cannot be made or written: the path must be a folder or
    not exist, and its nearest existing ancestor a writable folder. Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PibenchError(f"{what} '{path}' is not a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PibenchError(f"{what} '{path}': '{existing}' is not a writable folder")


def check_writable(path: str | Path, force: bool = True) -> None:
    """Refuse, before a run, a record path that cannot be written or must not be: its nearest existing
    folder must be a writable folder; the path itself not a folder, device, FIFO or socket (records go
    only to regular files), and, unless `force`, nothing yet (a symbolic link there is replaced by the
    record, its target left as it is). Creates nothing."""
    path = Path(path)
    if len(path.name.encode()) > 255 or len(str(path).encode()) > 4000:
        raise PibenchError(f"cannot write result record '{shorten(str(path))}': the name is too long")
    if path.is_dir():
        raise PibenchError(f"cannot write result record '{path}': it is a folder")
    _not_special(path)
    if not force and (path.exists() or path.is_symlink()):
        raise PibenchError(f"result record '{path}' exists; --force replaces it (or name another)")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise PibenchError(f"cannot write result record '{path}': '{parent}' is not a writable folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise PibenchError(f"cannot write result record '{path}': permission denied")


def write_record(path: str | Path, record: BaseModel | dict[str, Any], exclusive: bool = False) -> Path:
    """Write `record` (a typed record, or a calibration's content) to `path` atomically, creating its
    folder. With `exclusive`, an existing file is never replaced: the record goes to PATH-2.json,
    PATH-3.json, ... instead. Returns the path written; any failure is a `RecordNotWritten` and leaves
    no file behind."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise RecordNotWritten(f"cannot write result record '{path}': {err.strerror or err}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a record is an ordinary file
        data = record.model_dump(mode="json") if isinstance(record, BaseModel) else record
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False, allow_nan=False)
            f.write("\n")
        return _place(Path(tmp), path, exclusive)
    except OSError as err:
        raise RecordNotWritten(f"cannot write result record '{path}': {err.strerror or err}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def keep_elsewhere(path: str | Path, data: BaseModel | dict[str, Any], why: str) -> str:
    """Save `data` (a measurement whose record could not go to `path`) where it can live, never over
    another file: beside `path` as PATH.WHY.json, else in the temporary folder, else on stdout (after
    whatever stdout holds). Returns where, for the error message."""
    path = Path(path)
    data = _plain(data.model_dump(mode="json") if isinstance(data, BaseModel) else data)
    stem = path.name.removesuffix(".json") or "record"
    for place in (path.with_name(f"{stem}.{why}.json"), Path(tempfile.gettempdir()) / f"pibench-{stem}.{why}.json"):
        try:
            return str(write_record(place, data, exclusive=True))
        except RecordNotWritten:
            continue
    sys.stdout.flush()
    print(json.dumps(data, ensure_ascii=False, allow_nan=False), flush=True)
    return "stdout (the last line)"


def _plain(value: Any) -> Any:
    """`value` as strict JSON can hold it: non-finite numbers as None, other objects as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    return value if value is None or isinstance(value, str | int | bool) else str(value)


def _not_special(path: Path) -> None:
    """Refuse a path that is a device, FIFO or socket: a rename would replace it (as root, /dev/full)."""
    try:
        mode = path.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there yet (or a file above: said elsewhere)
        return
    except OSError as err:
        raise RecordNotWritten(f"cannot write result record '{path}': {err.strerror or err}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise RecordNotWritten(
            f"cannot write result record '{path}': it is not a regular file (a device, FIFO or socket); "
            "records go only to regular files"
        )


def _place(tmp: Path, path: Path, exclusive: bool) -> Path:
    if not exclusive:
        _not_special(path)  # checked before the run too; again here, at the last moment
        os.replace(tmp, path)
        return path
    for n in range(1, 1000):
        target = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        try:
            os.link(tmp, target)  # fails if target exists: no run overwrites another's record
            return target
        except FileExistsError:
            continue
    raise PibenchError(f"cannot write result record '{path}': 999 records of that name exist")


def read_record(path: str | Path) -> Record:
    """Load and validate a run record; a missing, unreadable or damaged file, or a file of another kind
    (`pibench.util.files`), is a one-line `PibenchError`."""
    data = read_json(path)
    expect(data, path, RUN)
    return validate_record(data, f"record '{path}'")


def read_json(path: str | Path) -> Any:
    """A record file's JSON, not yet validated (its `kind` says which schema applies); a missing,
    unreadable or oversized file, or one that is not JSON, is a one-line `PibenchError`."""
    return read_pibench_json(path, "record", MAX_RECORD_BYTES)


def flat_settings(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys: {"functions": {"exp_iterations": 8}} -> {"functions.exp_iterations": 8}."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out |= flat_settings(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def _changes(a: Any, b: Any) -> list[str]:
    fa, fb = flat_settings(a), flat_settings(b)
    keys = sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))
    return [f"{k} {fa.get(k, '-')} vs {fb.get(k, '-')}".strip() for k in keys]


def record_differences(a: Record, b: Record) -> list[str]:
    """What differs between two run records, as sentences (A's value first): backend and its settings,
    the run's own settings, the machine, and the code (commit and package versions); one sentence saying
    so when nothing does."""

    def run(r: Record) -> dict[str, Any]:
        return {"mode": r.run.mode, "full": r.run.full, "network": r.run.network, "seed": r.run.seed} | {
            "repeats": r.repeats
        }

    def machine(r: Record) -> dict[str, Any]:
        return r.environment.fingerprint | {"hostname": r.environment.hostname}

    def code(r: Record) -> dict[str, Any]:
        git = r.environment.git
        commit = {"commit": git.commit[:10] if git else "none", "dirty": git.dirty if git else None}
        return commit | r.environment.packages

    parts = {
        "Backends differ": _changes(a.backend.name, b.backend.name),
        "Backend settings differ": _changes(a.backend.settings, b.backend.settings),
        "Run settings differ": _changes(run(a), run(b)),
        "Machines differ": _changes(machine(a), machine(b)),
        "Code differs": _changes(code(a), code(b)),
    }
    out = [f"{what} (A vs B): {'; '.join(changes)}." for what, changes in parts.items() if changes]
    return out or ["A and B were made with the same backend settings, run settings, machine and code."]
