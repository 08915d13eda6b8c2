"""The registry of model variants: every architecture of the papers and the seed's ablations.

A variant is a function from a suite's dimensions (a `ModelConfig` with only L, H, d, T set) to the
variant's full config. To add your own, write one decorated block in a file of your own and give it to
pibench with `pibench --include FILE ...` (or ship it in a package's `pibench.variants` entry point;
`pibench.models.plugins`):

    @variant("sm_ln_r_half", "SM + LN + R/-", note="ReLU in the first half of the FFNs, none after")
    def _(c: ModelConfig) -> ModelConfig:
        return c.replace(activation="relu", activation_blocks=c.L // 2)

`label` is how tables print it; `paper_labels` are the exact labels of `published_costs.csv` rows
that describe this variant.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from pibench.models.config import ModelConfig
from pibench.models.registry import Registry
from pibench.util.errors import PibenchError

Build = Callable[[ModelConfig], ModelConfig]


@dataclass(frozen=True)
class Origin:
    """Where a variant's code comes from: pibench itself, a file given with --include (with its
    SHA-256), or an installed package's entry point."""

    source: str  # "built-in", "include" or "entry point"
    module: str
    file: str | None = None
    sha256: str | None = None
    distribution: str | None = None

    def describe(self) -> str:
        if self.source == "include":
            return f"from {self.file}"
        if self.source == "entry point":
            return f"from package {self.distribution} ({self.module})"
        return "built into pibench"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


BUILT_IN = Origin("built-in", __name__)
_loading = [BUILT_IN]  # the origin of variants registered now (`loading_from`)


@contextlib.contextmanager
def loading_from(origin: Origin) -> Iterator[None]:
    """While inside, `@variant` records `origin` as the variants' source."""
    _loading.append(origin)
    try:
        yield
    finally:
        _loading.pop()


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    build: Build
    paper_labels: tuple[str, ...] = ()
    note: str = ""
    ereg: bool = False  # trained with the entropy regulariser (`pibench.quality.ereg`); no inference cost
    origin: Origin = BUILT_IN

    def config(self, dims: Mapping[str, int], overrides: Mapping[str, object] | None = None) -> ModelConfig:
        """This variant at `dims` {L, H, d, T}, with suite `overrides` of architecture fields."""
        cfg = self.build(ModelConfig(L=dims["L"], H=dims["H"], d=dims["d"], T=dims["T"]))
        return cfg.replace(**overrides) if overrides else cfg


VARIANTS: Registry[Variant] = Registry(
    "variant", listing="`pibench list` shows the variants; one of your own file: `pibench --include FILE ...`"
)
BASELINE = "sm_ln_g"


def variant(
    name: str, label: str, *, paper_labels: tuple[str, ...] = (), note: str = "", ereg: bool = False
) -> Callable[[Build], Build]:
    """Register the decorated `ModelConfig -> ModelConfig` function as variant `name` (`ereg`: trained
    with the entropy regulariser)."""

    def deco(build: Build) -> Build:
        origin = _loading[-1]
        if name in VARIANTS:
            there = VARIANTS.get(name).origin
            mine = "" if origin.source == "built-in" else f" {origin.describe()}"
            raise PibenchError(
                f"variant '{name}'{mine} clashes with the variant of that name {there.describe()}; choose another name"
            )
        VARIANTS.add(name, Variant(name, label, build, paper_labels, note, ereg, origin))
        return build

    return deco


def resolve(name: str, dims: Mapping[str, int], overrides: Mapping[str, object] | None = None) -> ModelConfig:
    """The config of registered variant `name`; a bad override is a one-line `PibenchError`."""
    try:
        return VARIANTS.get(name).config(dims, overrides)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PibenchError(f"variant '{name}': {where + ': ' if where else ''}{first['msg']}") from None


SOFTMAX_ONLY = {"norm": "none", "activation": "identity"}

# --- the papers' architectures (published_costs.csv) ---------------------------------------------


@variant("sm_ln_g", "SM + LN + G", paper_labels=("SM+LN+G",), note="GPT-2 baseline")
def _(c: ModelConfig) -> ModelConfig:
    return c


@variant("sm_ln_r", "SM + LN + R", paper_labels=("SM+LN+R",))
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(activation="relu")


@variant("sm_scffn", "SM + ScFFN", paper_labels=("SM+ScFFN",), note="softmax-only, scaled FFN")
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(**SOFTMAX_ONLY, ffn="scaled")


@variant("sm_scfuffn", "SM + ScFuFFN", paper_labels=("SM+ScFuFFN",), note="softmax-only, scaled fused FFN")
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(**SOFTMAX_ONLY, ffn="scaled_fused")


@variant(
    "ereg_smt_scfuffn",
    "EReg(SM(t) + ScFuFFN)",
    paper_labels=("EReg(SM(t)+ScFuFFN)",),
    note="entropy-regularised training, learnable softmax temperature",
    ereg=True,
)
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(**SOFTMAX_ONLY, ffn="scaled_fused", attention="softmax_t")


@variant(
    "sm_scfuffn_pruned",
    "SM + ScFuFFN pruned",
    paper_labels=("SM+ScFuFFN pruned",),
    note="deeper FFNs removed; keeps L//2 by default (override ffn_blocks_kept)",
)
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(**SOFTMAX_ONLY, ffn="scaled_fused", ffn_blocks_kept=c.L // 2)


@variant(
    "ereg_smt_scfuffn_pruned",
    "EReg(SM(t) + ScFuFFN) pruned",
    paper_labels=("EReg(SM(t)+ScFuFFN) pruned",),
    note="keeps L//2 FFNs by default (override ffn_blocks_kept)",
    ereg=True,
)
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(**SOFTMAX_ONLY, ffn="scaled_fused", attention="softmax_t", ffn_blocks_kept=c.L // 2)


HE_HOFMANN = {"attention": "shaped", "norm": "input_ln", "activation": "identity"}


@variant(
    "hehofmann_scffn",
    "HeHofmann ScFFN",
    # The papers' "HeHofmann (unspecified FFN)" rows give no FFN cells; their attention FLOPs and
    # nonlinear counts do not depend on the FFN form, so this variant stands in for them.
    paper_labels=("HeHofmann ScFFN", "HeHofmann (unspecified FFN)"),
    note="He & Hofmann simplified block, one LayerNorm (LN:1 as the papers count it)",
)
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(**HE_HOFMANN, ffn="scaled")


@variant("hehofmann_scfuffn", "HeHofmann ScFuFFN", paper_labels=("HeHofmann ScFuFFN",))
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(**HE_HOFMANN, ffn="scaled_fused")


@variant(
    "hehofmann_scfuffn_pruned",
    "HeHofmann ScFuFFN pruned",
    paper_labels=("HeHofmann ScFuFFN pruned",),
    note="keeps 2L/3 FFNs by default (override ffn_blocks_kept)",
)
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(**HE_HOFMANN, ffn="scaled_fused", ffn_blocks_kept=2 * c.L // 3)


# --- the seed's ablations ------------------------------------------------------------------------


@variant("sm_ln", "SM + LN", note="no FFN activation")
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(activation="identity")


@variant("sm_g", "SM + G", note="no LayerNorm")
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(norm="none")


@variant("sm_r", "SM + R", note="no LayerNorm, ReLU FFN")
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(norm="none", activation="relu")


@variant("sm", "SM", note="softmax-only: no LayerNorm, no FFN activation")
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(**SOFTMAX_ONLY)


@variant("sm_wnffn", "SM + WNorm FFN", note="softmax-only, weight-normalised FFN (training-time only)")
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(**SOFTMAX_ONLY, ffn_weight_param="weight_norm")


@variant("sm_snffn", "SM + SNorm FFN", note="softmax-only, spectrally normalised FFN (training-time only)")
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(**SOFTMAX_ONLY, ffn_weight_param="spectral_norm")
