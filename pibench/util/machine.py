"""The machine, software and checkout a measurement was made on (records and calibrations carry it)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

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


def git_info() -> dict[str, Any] | None:
    """Commit and dirtiness of the checkout pibench runs from, or None outside git."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
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
    model_config = ConfigDict(extra="forbid", strict=True)
    commit: str
    dirty: bool


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


class Environment(Machine):
    """A record's: the machine, and what its time model holds for (`fingerprint`)."""

    fingerprint: dict[str, Any]
