"""The versioned record of `pibench train`: every setting that produced it, and per variant its
training curve, validation perplexity per byte and attention entropy (`pibench.quality.entropy`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, types

from pibench.measuring.measured import Strict
from pibench.models.config import DIMENSIONS, ModelConfig
from pibench.results.records import Analytic, Environment
from pibench.results.report import MeasuredPpl
from pibench.suites.analytic import suite_costs
from pibench.suites.loader import Suite
from pibench.suites.train_section import TrainSettings
from pibench.util.errors import PibenchError, validated
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
    "other_seeds": "the same variant trained with the settings' other seeds (`quality` is the first seed's)",
}


def build_quality_record(suite: Suite, corpus: Any, results: Sequence[Sequence[Quality]]) -> QualityRecord:
    """`corpus`: the `pibench.suites.corpus.Corpus` trained on; `results`: `train_variant`'s, per entry
    one per seed (`TrainSettings.seed_list`: the first seed's first)."""
    from pibench.suites.corpus import VALIDATION_SHARE

    costs = {c.variant: c for c in suite_costs(suite)}
    return validate_quality_record(_assemble(suite, corpus, results, costs, VALIDATION_SHARE), "the quality record")


def _assemble(suite: Suite, corpus: Any, results: Any, costs: Any, share: float) -> dict[str, Any]:
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
            "split": f"by file: SHA-1 of the path below the root, first byte < {share} x 256 -> validation",
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
                "quality": r[0].model_dump(mode="json"),
                "other_seeds": [q.model_dump(mode="json") for q in r[1:]],
            }
            for e, r in zip(suite.entries, results, strict=True)
        ],
    }


class Entropy(Strict):
    per_head_nats: list[list[float]]
    per_head_fraction: list[list[float]]
    quarter_shares: dict[str, float]
    overload: float = Field(ge=0, le=1)
    collapse: float = Field(ge=0, le=1)
    max_nats: float | None = None  # ln T: the most a row's entropy can be


class Divergence(Strict):
    step: int = Field(ge=0)
    reason: str


class Checkpoint(Strict):
    """A trained variant's weights (`pibench.models.checkpoints`): the file and its SHA-256."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Quality(Strict):
    """What training one variant gave (`pibench.quality.train.train_variant`)."""

    steps: int = Field(ge=1)
    steps_done: int = Field(ge=0)
    tokens_per_step: int = Field(ge=1)
    train_curve: list[Annotated[tuple[int, float], types.Strict(False)]]  # [step, loss] (JSON arrays)
    nan_count: int = Field(ge=0)
    diverged: Divergence | None
    wall_s: float = Field(ge=0)
    val_loss: float | None
    val_ppl: float | None = Field(default=None, ge=1)
    entropy: Entropy | None
    checkpoint: Checkpoint | None = None  # the stack's trained weights (none where training diverged)
    seed: int | None = Field(default=None, ge=0)  # the training seed (a record older than seeds: the suite's)


class TrainedVariant(Strict):
    name: str
    variant: str
    label: str
    ereg: bool
    config: dict[str, Any]
    analytic: Analytic
    train: dict[str, Any] | None  # the entry's own training settings, where they differ from the suite's
    quality: Quality  # the first seed's
    other_seeds: list[Quality] = Field(default_factory=list)  # the other seeds', in order

    @property
    def runs(self) -> list[Quality]:
        """Every seed's training of this variant, the first seed's first."""
        return [self.quality, *self.other_seeds]

    @property
    def ppls(self) -> list[float]:
        """The validation perplexities of the seeds that did not diverge."""
        return [q.val_ppl for q in self.runs if q.val_ppl is not None]

    @property
    def mean_ppl(self) -> float | None:
        """The mean validation perplexity over the seeds that did not diverge (None: every seed diverged)."""
        ppls = self.ppls
        return sum(ppls) / len(ppls) if ppls else None


class QualitySuite(Strict):
    name: str
    path: str
    description: str
    dims: dict[str, int]


class Corpus(Strict):
    root: str
    train_bytes: int = Field(ge=0)
    validation_bytes: int = Field(ge=0)
    files: dict[str, int]
    split: str
    tokens: str


class QualityRecord(Strict):
    """The versioned record of `pibench train`."""

    schema_version: Literal[1]
    kind: Literal["pibench.quality"]
    created: str
    suite: QualitySuite
    train: TrainSettings
    corpus: Corpus
    environment: Environment
    units: dict[str, str]
    variants: list[TrainedVariant] = Field(min_length=1)

    @property
    def dims_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.suite.dims.items())


def validate_quality_record(record: Any, what: str) -> QualityRecord:
    """A `pibench train` record checked against its schema, typed, or a one-line error."""
    if not isinstance(record, dict) or record.get("kind") != KIND:
        raise PibenchError(f"{what} is not a quality record (kind {KIND})")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise PibenchError(f"{what} is a quality record of another version; this pibench reads {SCHEMA_VERSION}")
    return validated(QualityRecord, record, f"{what} is not a valid record")


# --- measured perplexity, matched to a run record's variants --------------------------------------


def _arch(config: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Every architecture field, defaults filled in (a record older than a field lacks it)."""
    full = ModelConfig(**config).as_dict()
    return tuple(sorted((k, v) for k, v in full.items() if k not in (*DIMENSIONS, "new_tokens")))


def measured_ppl(quality: Sequence[QualityRecord]) -> MeasuredPpl:
    """The quality records' validation perplexities per byte (the mean over seeds), by variant name and
    architecture (every field but the dimensions: the quality suite trains small, the run measures GPT-2
    size); None where every seed of a variant diverged."""
    index = {}
    for record in quality:
        for v in record.variants:
            index[(v.name, _arch(v.config))] = v.mean_ppl
    suites = sorted({q.suite.name for q in quality})
    return MeasuredPpl(lambda name, config: index.get((name, _arch(config))), suites)
