"""Settings of the CrypTen backend, as a suite's `crypten:` section. Defaults are CrypTen 0.4.1's own.

Every knob that changes cost or accuracy is here and is written into each result record. Importing
this module does not import CrypTen.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt
from pydantic.dataclasses import dataclass

STRICT = ConfigDict(extra="forbid")


@dataclass(frozen=True, config=STRICT)
class CrypTenFunctions:
    """`crypten.cfg.functions.*`: iterations and methods of the approximations of nonlinear functions."""

    max_method: Literal["log_reduction", "pairwise"] = "log_reduction"  # softmax's max
    exp_iterations: StrictInt = Field(8, ge=1)  # exp(x) ~ (1 + x/2^n)^(2^n)
    reciprocal_method: Literal["NR", "log"] = "NR"  # softmax's 1/sum
    reciprocal_nr_iters: StrictInt = Field(10, ge=1)
    reciprocal_log_iters: StrictInt = Field(1, ge=1)
    reciprocal_all_pos: StrictBool = False
    reciprocal_initial: StrictFloat | None = None
    sqrt_nr_iters: StrictInt = Field(3, ge=1)  # LayerNorm's 1/sqrt(var)
    sqrt_nr_initial: StrictFloat | None = None
    sigmoid_tanh_method: Literal["reciprocal", "chebyshev"] = "reciprocal"  # tanh-GELU
    sigmoid_tanh_terms: StrictInt = Field(32, ge=1)
    log_iterations: StrictInt = Field(2, ge=1)
    log_exp_iterations: StrictInt = Field(8, ge=1)
    log_order: StrictInt = Field(8, ge=1)
    trig_iterations: StrictInt = Field(10, ge=1)
    erf_iterations: StrictInt = Field(8, ge=1)  # erf-GELU


@dataclass(frozen=True, config=STRICT)
class CrypTenSettings:
    """provider: "TFP" (Beaver triples made locally, no traffic: online-phase bytes only) or "TTP"
    (a third process deals the triples; its traffic is counted too). precision_bits: fixed-point
    fraction bits. gelu: "tanh" (accurate through CrypTen's tanh) or "erf" (CrypTen's Taylor erf)."""

    provider: Literal["TFP", "TTP"] = "TFP"
    precision_bits: StrictInt = Field(16, ge=1, le=30)
    gelu: Literal["tanh", "erf"] = "tanh"
    functions: CrypTenFunctions = dataclasses.field(default_factory=CrypTenFunctions)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
