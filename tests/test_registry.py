"""One registry: decorator registration, duplicates refused, "did you mean" for unknown names."""

from __future__ import annotations

import pytest

from pibench.counting.cost import analyse
from pibench.models.config import ModelConfig
from pibench.models.registry import Registry
from pibench.models.variants import VARIANTS, variant
from pibench.suites.loader import load_suite
from pibench.util.errors import PibenchError


def test_duplicate_name_is_refused():
    reg: Registry[int] = Registry("widget")
    reg.register("a")(1)
    with pytest.raises(PibenchError, match="widget 'a' is already registered"):
        reg.register("a")(2)
    assert reg.get("a") == 1


def test_duplicate_variant_is_refused():
    with pytest.raises(
        PibenchError,
        match="variant 'sm_ln_g' clashes with the variant of that name built into pibench; choose another name",
    ):
        variant("sm_ln_g", "again")(lambda c: c)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(PibenchError, match=r"unknown variant 'sm_scfufn' \(did you mean 'sm_scfuffn'\?\)"):
        VARIANTS.get("sm_scfufn")
    with pytest.raises(PibenchError) as err:
        VARIANTS.get("zzzz")
    assert "did you mean" not in str(err.value)


@pytest.fixture
def relu_half():
    """The README's worked example: ReLU in the first half of the FFNs, no activation in the second."""

    @variant("test_relu_half", "SM + LN + R/-", note="test only")
    def _(c: ModelConfig) -> ModelConfig:
        return c.replace(activation="relu", activation_blocks=c.L // 2)

    yield
    VARIANTS.remove("test_relu_half")


def test_user_variant_end_to_end(tmp_path, relu_half):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {L: 12, H: 12, d: 768, T: 128}\nvariants: [sm_ln_g, test_relu_half]\n")
    entry = load_suite(path).entries[1]
    cost = analyse(entry.config, entry.name, entry.variant.label)
    # 6 ReLUs of 128 x 3072; all 12 FFNs and both LayerNorms per layer stay
    assert [(n.kind, n.count, n.shape) for n in cost.nonlinear] == [
        ("softmax", 144, (128, 128)),
        ("layernorm", 24, (128, 768)),
        ("relu", 6, (128, 3072)),
    ]
    assert cost.flops_ffn == 14_495_514_624  # 16 * 12 * 128 * 768^2, unchanged
