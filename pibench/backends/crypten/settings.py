"""Settings of the CrypTen backend, as a suite's `crypten:` section. Defaults are CrypTen 0.4.1's own,
except `softmax` (pibench's max-only softmax; see README) and the local products (see `matmul`).

Every knob that changes cost or accuracy is here and is written into each result record. Importing
this module does not import CrypTen. Non-finite numbers are refused (a NaN iteration start would
only fail inside the parties).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, model_validator
from pydantic.dataclasses import dataclass

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
TREE_MAX_METHODS = ("log_reduction", "double_log_reduction", "accelerated_cascade")


@dataclass(frozen=True, config=STRICT)
class CrypTenFunctions:
    """`crypten.cfg.functions.*`: iterations and methods of the approximations of nonlinear functions."""

    max_method: Literal["log_reduction", "double_log_reduction", "accelerated_cascade", "pairwise"] = (
        "log_reduction"  # softmax's max
    )
    exp_iterations: StrictInt = Field(default=8, ge=1, le=64)  # exp(x) ~ (1 + x/2^n)^(2^n)
    reciprocal_method: Literal["NR", "log"] = "NR"  # softmax's 1/sum
    reciprocal_nr_iters: StrictInt = Field(default=10, ge=1, le=1000)
    reciprocal_log_iters: StrictInt = Field(default=1, ge=1, le=1000)
    reciprocal_all_pos: StrictBool = False
    reciprocal_initial: StrictFloat | None = None
    sqrt_nr_iters: StrictInt = Field(default=3, ge=1, le=1000)  # LayerNorm's 1/sqrt(var)
    sqrt_nr_initial: StrictFloat | None = None
    sigmoid_tanh_method: Literal["reciprocal", "chebyshev"] = "reciprocal"  # tanh-GELU
    sigmoid_tanh_terms: StrictInt = Field(default=32, ge=1, le=1000)
    log_iterations: StrictInt = Field(default=2, ge=1, le=1000)
    log_exp_iterations: StrictInt = Field(default=8, ge=1, le=64)
    log_order: StrictInt = Field(default=8, ge=1, le=1000)
    trig_iterations: StrictInt = Field(default=10, ge=1, le=1000)
    erf_iterations: StrictInt = Field(default=8, ge=1, le=1000)  # erf-GELU


@dataclass(frozen=True, config=STRICT)
class CrypTenSettings:
    """provider: "TFP" (Beaver triples made locally, no traffic: online-phase bytes only) or "TTP"
    (a third process deals the triples; its traffic is counted apart, as dealer traffic).
    precision_bits: fixed-point fraction bits. gelu: "tanh" (accurate through CrypTen's tanh) or
    "erf" (CrypTen's Taylor erf). softmax: "max_only" (the row maximum by CrypTen's tree reduction,
    then CrypTen's exp and reciprocal) or "crypten" (CrypTen's own `softmax`, which also computes an
    argmax with random tie-breaking and discards it). local_products: how a party multiplies its
    int64 shares on the CPU (`pibench.backends.crypten.products`): "int64" (torch's int64 matmul, as
    CrypTen does), "blocks" (exact 16-bit limbs through float64 BLAS, as CrypTen's CUDA backend does),
    "auto" (per shape, whichever is faster on this machine; bit-identical either way). device: where
    the parties' tensors live ("cuda": both parties on the machine's first GPU, CrypTen's own CUDA
    path). weight_masks: "reuse" (each weight's Beaver mask W - B opened once and reused for every
    later product with that weight, as a deployment with fixed weights does;
    `pibench.backends.crypten.masks`; TFP only, TTP keeps CrypTen's products) or "fresh" (CrypTen's
    own: a fresh triple, and the weight opened again, per product). A measured step opens each weight
    it uses once either way, so a prefill costs the same bytes and rounds under both."""

    provider: Literal["TFP", "TTP"] = "TFP"
    precision_bits: StrictInt = Field(default=16, ge=1, le=30)
    gelu: Literal["tanh", "erf"] = "tanh"
    softmax: Literal["max_only", "crypten"] = "max_only"
    local_products: Literal["auto", "int64", "blocks"] = "auto"
    weight_masks: Literal["reuse", "fresh"] = "reuse"
    device: Literal["cpu", "cuda"] = "cpu"
    functions: CrypTenFunctions = dataclasses.field(default_factory=CrypTenFunctions)

    @model_validator(mode="after")
    def _consistent(self) -> CrypTenSettings:
        if self.softmax == "max_only" and self.functions.max_method not in TREE_MAX_METHODS:
            raise ValueError(
                f"softmax: max_only needs a tree max_method ({', '.join(TREE_MAX_METHODS)}), "
                f"not {self.functions.max_method!r}; or use softmax: crypten"
            )
        return self

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def weight_masks(settings: Any) -> str:
    """What a product with a weight opens under these settings (a suite's section as a dict):
    "reuse" where the weights' masks are reused (TFP only), else CrypTen's "fresh"."""
    return "reuse" if settings.get("weight_masks") == "reuse" and settings.get("provider") == "TFP" else "fresh"
