"""The versioned record of `pibench train`: every setting that produced it, and per variant its
training curve, validation perplexity per byte and attention entropy (`pibench.quality.entropy`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pibench.models.config import DIMENSIONS
from pibench.results.report import MeasuredPpl
from pibench.suites.analytic import suite_costs
from pibench.suites.loader import Suite
from pibench.util.errors import PibenchError
from pibench.util.files import QUALITY
from pibench.util.machine import environment, fingerprint, now

KIND = QUALITY
SCHEMA_VERSION = 1
UNITS = {
    "val_loss": "mean cross-entropy per byte on the validation windows, nats",
    "val_ppl": "exp(val_loss): perplexity per byte (byte-level tokens, vocabulary 256)",
    "train_curve": "[step, training cross-entropy per byte (nats)] pairs",
    "entropy.per_head_nats": "[layer][head]: mean over validation rows of -sum p ln p",
    "entropy.per_head_fraction": "[layer][head]: mean over rows i >= 1 of the row's entropy / ln(i + 1)",
    "entropy.quarter_shares": "share of heads whose fraction lies in each quarter of the maximum",
    "entropy.overload": "share of heads in the top quarter (attention nearly uniform)",
    "entropy.collapse": "share of heads in the bottom quarter (attention on nearly one position)",
    "wall_s": "seconds of training (evaluation excluded)",
}


def build_quality_record(suite: Suite, corpus: Any, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`corpus`: the `pibench.quality.corpus.Corpus` trained on; `results`: `train_variant`'s, per entry."""
    from pibench.quality.corpus import VALIDATION_SHARE

    costs = {c.variant: c for c in suite_costs(suite)}
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "created": now(),
        "suite": {"name": suite.name, "path": suite.path, "description": suite.description, "dims": suite.dims},
        "train": dataclasses.asdict(suite.train),
        "corpus": {
            "root": corpus.root,
            "train_bytes": len(corpus.train),
            "validation_bytes": len(corpus.validation),
            "files": {"train": corpus.files[0], "validation": corpus.files[1]},
            "split": f"by file: SHA-1 of the path below the root, first byte < {VALIDATION_SHARE} x 256 -> validation",
            "tokens": "bytes (vocabulary 256); perplexity is per byte",
        },
        "environment": environment() | {"fingerprint": fingerprint()},
        "units": UNITS,
        "variants": [
            {
                "name": e.name,
                "variant": e.variant.name,
                "label": e.label,
                "ereg": e.variant.ereg,
                "config": e.config.as_dict(),
                "analytic": costs[e.name].to_json(),
                "train": dataclasses.asdict(e.train) if e.train else None,  # where it differs from the suite's
                "quality": r,
            }
            for e, r in zip(suite.entries, results, strict=True)
        ],
    }


class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class _Entropy(_Strict):
    per_head_nats: list[list[float]]
    per_head_fraction: list[list[float]]
    quarter_shares: dict[str, float]
    overload: float = Field(ge=0, le=1)
    collapse: float = Field(ge=0, le=1)


class _Quality(_Strict):
    steps: int = Field(ge=1)
    steps_done: int = Field(ge=0)
    tokens_per_step: int = Field(ge=1)
    train_curve: list[tuple[int, float]]
    nan_count: int = Field(ge=0)
    diverged: dict[str, Any] | None
    wall_s: float = Field(ge=0)
    val_loss: float | None
    val_ppl: float | None = Field(None, ge=1)
    entropy: _Entropy | None


class _Variant(_Strict):
    name: str
    variant: str
    label: str
    ereg: bool
    config: dict[str, Any]
    quality: _Quality


class _QualityRecord(_Strict):
    schema_version: int
    kind: str
    suite: dict[str, Any]
    train: dict[str, Any]
    corpus: dict[str, Any]
    variants: list[_Variant] = Field(min_length=1)


def validate_quality_record(record: Any, what: str) -> dict[str, Any]:
    """A `pibench train` record checked against its schema (and returned), or a one-line error."""
    if not isinstance(record, dict) or record.get("kind") != KIND:
        raise PibenchError(f"{what} is not a quality record (kind {KIND})")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise PibenchError(f"{what} is a quality record of another version; this pibench reads {SCHEMA_VERSION}")
    try:
        _QualityRecord.model_validate(record)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PibenchError(f"{what} is not a valid record: {where}: {first['msg']}") from None
    return record


# --- measured perplexity, matched to a run record's variants --------------------------------------


def _arch(config: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, v) for k, v in config.items() if k not in DIMENSIONS))


def dims_text(record: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in record["suite"]["dims"].items())


def measured_ppl(quality: Sequence[dict[str, Any]]) -> MeasuredPpl:
    """The quality records' validation perplexities per byte, by variant name and architecture (every
    field but the dimensions: the quality suite trains small, the run measures GPT-2 size); None where
    a variant diverged."""
    index = {}
    for record in quality:
        for v in record["variants"]:
            index[(v["name"], _arch(v["config"]))] = v["quality"]["val_ppl"]
    suites = sorted({q["suite"]["name"] for q in quality})
    return MeasuredPpl(lambda name, config: index.get((name, _arch(config))), suites)
