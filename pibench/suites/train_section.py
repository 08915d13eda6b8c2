"""The `train:` section of a suite: how `pibench train` trains each variant (validated with the suite).

train:
  tokens: 300000        # training tokens (bytes) per variant
  batch: 16             # sequences of T bytes per step
  lr: 0.003             # AdamW peak learning rate (betas 0.9, 0.95)
  warmup: 0.1           # share of steps with a linear warm-up; then cosine decay to min_lr
  min_lr: 0.1           # the cosine's floor, as a share of lr
  weight_decay: 0.1     # on matrices only (not gains, biases, scalars, thresholds)
  clip: 1.0             # gradient norm clipping
  eval_batches: 16      # validation batches (fixed windows) for perplexity and entropy
  seed: 0               # weights and batches (evaluation windows are the same for every seed)
  seeds: [0, 1, 2]      # train each variant once per seed (mean and spread reported); absent: [seed]
  blowup: 3.0           # a training loss above blowup x the first step's means divergence
  ereg_coefficient: 1.0e-5  # EReg's lambda, for variants trained with it (`Variant.ereg`)
  ereg_margin: 0.2      # EReg's tolerance margin gamma, a share of ln T
  corpus_bytes: null    # read at most this much training text (null: the whole library)
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, StrictFloat, StrictInt, field_validator
from pydantic.dataclasses import dataclass

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
Number = StrictFloat | StrictInt
MAX_SEEDS = 32
Seed = Annotated[StrictInt, Field(ge=0, le=2**62)]


@dataclass(frozen=True, config=STRICT)
class TrainSettings:
    tokens: StrictInt = Field(default=300_000, ge=1, le=10**10)
    batch: StrictInt = Field(default=16, ge=1, le=1024)
    lr: Number = Field(default=0.003, gt=0, le=1)
    warmup: Number = Field(default=0.1, ge=0, le=0.5)
    min_lr: Number = Field(default=0.1, ge=0, le=1)
    weight_decay: Number = Field(default=0.1, ge=0, le=1)
    clip: Number = Field(default=1.0, gt=0, le=1e6)
    eval_batches: StrictInt = Field(default=16, ge=1, le=10_000)
    seed: StrictInt = Field(default=0, ge=0, le=2**62)
    seeds: tuple[Seed, ...] | None = Field(default=None, min_length=1, max_length=MAX_SEEDS)
    blowup: Number = Field(default=3.0, gt=1, le=1e6)
    ereg_coefficient: Number = Field(default=1e-5, ge=0, le=1e3)
    ereg_margin: Number = Field(default=0.2, ge=0, le=1)
    corpus_bytes: StrictInt | None = Field(default=None, ge=10_000, le=10**10)

    @property
    def seed_list(self) -> tuple[int, ...]:
        """The seeds each variant trains with, in order (the first one's weights are the variant's checkpoint)."""
        return self.seeds if self.seeds else (self.seed,)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if seeds is not None and len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must differ from each other (got {list(seeds)})")
        return seeds
