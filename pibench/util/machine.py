"""The machine, software and checkout a measurement was made on (records and calibrations carry it)."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib
import os
import platform
import socket
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PACKAGES = ("pibench", "torch", "crypten", "spu", "jax", "jaxlib", "numpy", "pydantic")


def now() -> str:
    """The time, UTC, to the second, as records and calibrations carry it."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def package_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


PACKAGE = Path(__file__).resolve().parents[1]  # the pibench/ folder this code runs from
# What decides the counts of a measurement: the model definition and its interpreters, the counting,
# the backends and the measuring wing (not the reports, the CLI or the sweeps' bookkeeping)
MEASURING_CODE = ("models", "counting", "backends", "measuring")


def built_version() -> ModuleType | None:
    """pibench/_version.py, which setuptools-scm writes when pibench is built (None: never built)."""
    try:
        return importlib.import_module("pibench._version")
    except ImportError:
        return None


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def git_info() -> dict[str, Any] | None:
    """The commit pibench's code comes from, whether its tree differed from that commit, and how that
    is known (`Git`): pibench running from a git checkout (a clone, or an editable install of one)
    reads the checkout now (HEAD; dirty where a tracked file differs); a wheel or sdist built from a
    checkout carries what setuptools-scm wrote when it was built (pibench/_version.py). None where
    neither says (a copy without git, built without it)."""
    root = PACKAGE.parent
    if (root / ".git").exists():
        try:
            if Path(_git(root, "rev-parse", "--show-toplevel")).resolve() == root:
                dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
                return {"commit": _git(root, "rev-parse", "HEAD"), "dirty": bool(dirty), "source": "checkout"}
        except (OSError, subprocess.SubprocessError):
            pass  # no git program here: what the build wrote, if anything
    built = built_version()
    node = getattr(built, "commit", None)
    if not isinstance(node, str) or not node:
        return None
    return {"commit": node.removeprefix("g"), "dirty": bool(getattr(built, "dirty", False)), "source": "build"}


@functools.cache
def code_digest() -> str:
    """SHA-256 of the source of the code that decides what a measurement counts (`MEASURING_CODE`):
    two runs of one suite under the same digest and backend version count the same bytes and rounds,
    whatever else changed (a report, a command's options); a sweep re-measures cells measured under
    another (`pibench.sweeps.store`)."""
    digest = hashlib.sha256()
    for folder in MEASURING_CODE:
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (from /proc/cpuinfo on Linux: virtual
    machines often name only the vendor line, "AMD EPYC"), else what the platform says."""
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "cpu family", "model") and key.strip() not in fields:
                fields[key.strip()] = value.strip()
        if "model name" in fields:
            numbers = f" (family {fields['cpu family']}, model {fields['model']})" if "cpu family" in fields else ""
            return fields["model name"] + numbers
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Machine, software and checkout this process runs on."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 1,
        "python": platform.python_version(),
        "packages": {p: package_version(p) for p in PACKAGES},
        "git": git_info(),
        "code": code_digest(),
    }


# Backend settings that change how fast a party computes, never what it sends: a calibration made
# under other values still predicts bytes and rounds exactly, only its seconds may be off.
TIME_SETTINGS = ("device", "local_products")


def fingerprint(settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a time model holds for: the CPU and its cores, the threads a party computes with, and the
    backend settings of `TIME_SETTINGS` (where a backend has them)."""
    settings = settings or {}
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 1,
        "threads_per_party": 1,
        "device": settings.get("device", "cpu"),
        "local_products": settings.get("local_products"),
    }


def same_machine(recorded: Mapping[str, Any] | None) -> bool:
    """Whether a recorded fingerprint's CPU, cores and threads are this machine's."""
    here = fingerprint()
    keys = ("cpu_model", "cpu_count", "threads_per_party")
    return recorded is not None and all(recorded.get(k) == here[k] for k in keys)


class Git(BaseModel):
    """The commit of pibench's code (`git_info`): read from its checkout, or written when it was built."""

    model_config = ConfigDict(extra="forbid", strict=True)
    commit: str
    dirty: bool
    source: Literal["checkout", "build"] | None = None  # None: a file older than pibench's saying it


class Machine(BaseModel):
    """The machine, software and checkout a measurement was made on (`environment()`)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    hostname: str
    platform: str
    machine: str
    cpu_model: str
    cpu_count: Annotated[int, Field(ge=1)]
    python: str
    packages: dict[str, str | None]
    git: Git | None
    code: str | None = None  # `code_digest()` (None: a file older than it): the measuring code, whatever the commit


class Environment(Machine):
    """A record's: the machine, and what its time model holds for (`fingerprint`)."""

    fingerprint: dict[str, Any]
