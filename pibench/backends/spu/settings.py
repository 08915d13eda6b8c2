"""Settings of the SPU backend, as a suite's `spu:` section. Importing this module does not import SPU.

Defaults and their sources:
- protocol CHEETAH, field FM64: SPU's two-party protocol that BumbleBee builds on, on SPU's 64-bit
  ring (the issue and the papers' setting);
- fxp_fraction_bits 18: SPU's own default for FM64 (its RuntimeConfig turns 0 into 18);
- exp_mode, exp_iters, log_mode, log_iters, div_goldschmidt_iters, sigmoid_mode,
  enable_lower_accuracy_rsqrt: SPU's defaults ("default" modes, 0 = SPU chooses the iterations);
- optimize_denominator_with_broadcast true: one reciprocal per softmax row, broadcast (SPU's compiler
  default is false; SPU's own LLM examples, flax_llama7b.py and flax_whisper.py, turn it on). At 128
  columns it moves 1,498 bytes per softmax element instead of 4,117 (measured here);
- gelu tanh: GPT-2's form, as pibench's other backends;
- weights private: the server's plaintext weights enter as its private input (BumbleBee's setting:
  Cheetah multiplies a party's plaintext matrix by a secret one with one round of HE), "secret"
  secret-shares them as well.
Nothing here is fitted to the published figures.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictInt
from pydantic.dataclasses import dataclass

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


@dataclass(frozen=True, config=STRICT)
class SPUSettings:
    protocol: Literal["CHEETAH", "SEMI2K"] = "CHEETAH"
    field: Literal["FM64", "FM128"] = "FM64"
    fxp_fraction_bits: StrictInt = Field(default=18, ge=1, le=60)
    exp_mode: Literal["default", "pade", "taylor", "prime"] = "default"
    exp_iters: StrictInt = Field(default=0, ge=0, le=64)
    log_mode: Literal["default", "pade", "newton", "minmax"] = "default"
    log_iters: StrictInt = Field(default=0, ge=0, le=64)
    div_goldschmidt_iters: StrictInt = Field(default=0, ge=0, le=64)
    sigmoid_mode: Literal["default", "mm1", "seg3", "real"] = "default"
    enable_lower_accuracy_rsqrt: StrictBool = False
    optimize_denominator_with_broadcast: StrictBool = True
    gelu: Literal["tanh", "erf"] = "tanh"
    weights: Literal["private", "secret"] = "private"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
