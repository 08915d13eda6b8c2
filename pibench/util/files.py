"""What a pibench file is, so that a file of one kind given where another is expected (a run record as a
calibration, a suite as a record) is one line saying what it is and what was expected (exit 2).

Every JSON file pibench writes names its `kind`; a suite is YAML (which also reads JSON) with `model:`
and `variants:`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pibench.util.errors import PibenchError

RUN, QUALITY, CALIBRATION, UNSAVED = "pibench.run", "pibench.quality", "pibench.calibration", "pibench.unsaved"
SWEEP, SWEEP_FAILURE = "pibench.sweep", "pibench.sweep-failure"
SUITE = "suite"
WHAT = {
    RUN: "a run record (from pibench run)",
    QUALITY: "a quality record (from pibench train)",
    CALIBRATION: "a calibration (from pibench calibrate)",
    UNSAVED: "a measurement kept after its record could not be made (not readable as a record)",
    SWEEP: "a sweep's manifest (from pibench sweep; `pibench report` takes its folder)",
    SWEEP_FAILURE: "why a sweep's cell failed (from pibench sweep)",
    SUITE: "a suite (YAML with model: and variants:)",
}


def kind_of(data: Any) -> str | None:
    """The kind of a parsed file (a key of WHAT), or None for what pibench did not write."""
    if not isinstance(data, dict):
        return None
    kind = data.get("kind")
    if isinstance(kind, str) and kind in WHAT and kind != SUITE:
        return kind
    if "variants" in data and "model" in data and "kind" not in data:
        return SUITE
    return None


def expect(data: Any, path: object, *expected: str) -> None:
    """Refuse `data` (read from `path`) unless its kind is one of `expected` (keys of WHAT); a file
    pibench did not write passes, for the expected kind's own validation to describe."""
    kind = kind_of(data)
    if kind is not None and kind not in expected:
        wanted = " or ".join(WHAT[k].split(" (")[0] for k in expected)
        raise PibenchError(f"'{path}' is {WHAT[kind]}, not {wanted}")


def sniff_text(text: str) -> str | None:
    """The kind of a file that is not JSON (a suite given where a record is expected), or None."""
    import yaml

    try:
        return kind_of(yaml.safe_load(text))
    except (yaml.YAMLError, RecursionError, ValueError):
        return None


def read_json(path: str | Path, noun: str, max_bytes: int, missing: str = "") -> Any:
    """The JSON of a file pibench wrote (`noun`: "record", "calibration"), not yet validated: a missing,
    unreadable or oversized file, one that is not JSON, or a suite given instead, is a one-line
    `PibenchError` naming the file (`missing`: advice added where the file does not exist)."""
    path = Path(path)
    text = ""
    try:
        if not path.is_file():
            raise PibenchError(f"{noun} '{path}' {'not found' + missing if not path.exists() else 'is not a file'}")
        if path.stat().st_size > max_bytes:
            raise PibenchError(f"{noun} '{path}' is not a valid {noun}: over {max_bytes} bytes")
        text = path.read_text(encoding="utf-8")
        return json.loads(text)
    except json.JSONDecodeError as err:
        if sniff_text(text) == SUITE:
            raise PibenchError(f"'{path}' is {WHAT[SUITE]}, not a {noun}") from None
        reason = str(err).splitlines()[0][:100]
    except (OSError, UnicodeDecodeError, RecursionError) as err:
        reason = (
            (err.strerror or str(err)) if isinstance(err, OSError) else str(err).splitlines()[0][:100] or "too deep"
        )
    raise PibenchError(f"{noun} '{path}' is not a valid {noun}: not readable JSON ({reason})")
