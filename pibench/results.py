"""Result records: one versioned JSON file per run, with every setting that produced it.

A record is written atomically (a temporary file in the same folder, then a rename), and only
when the run completed: a failed run leaves no record.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pibench
from pibench.errors import PibenchError

SCHEMA_VERSION = 1
PACKAGES = ("pibench", "torch", "crypten", "numpy", "pydantic")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_info() -> dict[str, Any] | None:
    """Commit and dirtiness of the checkout pibench runs from, or None outside git."""
    root = Path(pibench.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def environment() -> dict[str, Any]:
    """Machine, software and checkout this process runs on."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "git": git_info(),
    }


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def default_record_path(suite_name: str, results_dir: str | Path = "results") -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(results_dir) / f"{suite_name}-{stamp}.json"


def write_record(path: str | Path, record: dict[str, Any]) -> Path:
    """Write `record` to `path` atomically; the folder is created if needed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise PibenchError(f"cannot write result record '{path}': {err.strerror}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a record is an ordinary file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_record(path: str | Path) -> dict[str, Any]:
    """Load a record, checking its schema version."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PibenchError(f"record '{path}' not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PibenchError(f"record '{path}' is not a readable JSON record: {err}") from None
    version = record.get("schema_version") if isinstance(record, dict) else None
    if version != SCHEMA_VERSION:
        raise PibenchError(
            f"record '{path}' has schema_version {version!r}; this pibench reads {SCHEMA_VERSION}: rerun the suite"
        )
    return record
