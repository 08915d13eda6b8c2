"""The analytic path of a whole suite: symbolic counts for each entry. Imports neither torch nor CrypTen."""

from __future__ import annotations

from pibench.backends import BACKENDS
from pibench.counting.cost import GenerationCost, VariantCost, analyse, generation_cost
from pibench.suites.loader import Suite


def suite_masks(suite: Suite) -> str:
    """What products with a weight open under the suite's backend and settings (`Backend.weight_masks`)."""
    return BACKENDS.get(suite.backend).weight_masks(suite.settings_dict)


def suite_costs(suite: Suite, flops: str = "paper") -> list[VariantCost]:
    """Analytic cost of every entry of `suite` (its prefill, where it generates), in suite order."""
    return [analyse(e.config, e.name, e.label, flops, masks=suite_masks(suite)) for e in suite.entries]


def suite_generations(suite: Suite, flops: str = "paper") -> list[GenerationCost]:
    """Every pass of every entry's generation, in suite order (none where the suite does not generate)."""
    if not suite.new_tokens:
        return []
    return [generation_cost(e.config, e.name, e.label, flops, suite_masks(suite)) for e in suite.entries]


def check_described_weights(suite: Suite) -> list[str]:
    """That the weights a suite names describe its variants' model (`WeightsInfo.check`, from the files'
    description alone: no tensor is read), else one line; notes for a checkpoint folder's files that do
    not exist yet (`pibench train` writes them), whose costs are then the suite's dimensions'."""
    if suite.weights is None:
        return []
    from pathlib import Path

    from pibench.models.weight_files import read_info

    gelu = BACKENDS.get(suite.backend).reference_gelu(suite.settings)
    notes = []
    for entry in suite.entries:
        kind, path = suite.weights_of(entry.name) or suite.weights
        if suite.checkpoint_dir is not None and not Path(path).exists():
            notes.append(f"{entry.name}: '{path}' is not there yet (pibench train writes it); not checked")
            continue
        read_info(kind, path).check(entry.config, gelu)
    return notes
