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
  seed: 0               # weights, batches and evaluation windows
  blowup: 3.0           # a training loss above blowup x the first step's means divergence
  ereg_coefficient: 1.0e-5  # EReg's lambda, for variants trained with it (`Variant.ereg`)
  ereg_margin: 0.2      # EReg's tolerance margin gamma, a share of ln T
  corpus_bytes: null    # read at most this much training text (null: the whole library)
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, StrictFloat, StrictInt
from pydantic.dataclasses import dataclass

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
Number = StrictFloat | StrictInt


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
    blowup: Number = Field(default=3.0, gt=1, le=1e6)
    ereg_coefficient: Number = Field(default=1e-5, ge=0, le=1e3)
    ereg_margin: Number = Field(default=0.2, ge=0, le=1)
    corpus_bytes: StrictInt | None = Field(default=None, ge=10_000, le=10**10)
