"""What a party walks for one variant, from its configuration alone (no torch): the stages of a pass and
the decode steps after it. The party runs them (`pibench.measuring.party`); the runner counts them for
its progress bar, so that the bar's total is every step the parties report."""

from __future__ import annotations

from pibench.counting.sampling import layer_sample
from pibench.models.config import ModelConfig

Stage = tuple[str, int, int | str | None]  # (label, layers it stands for, what runs: `party._run`'s index)
HEAD_STAGES = ("embed", "logits", "argmax")  # end to end: what every pass runs on the same shapes


def sample_of(cfg: ModelConfig, full: bool) -> dict[int, int]:
    """The layers a run measures -> how many layers each stands for: every layer with `full`, else one
    per layer kind (`layer_sample`)."""
    return {i: 1 for i in range(cfg.L)} if full else layer_sample(cfg)


def stages(sample: dict[int, int], cfg: ModelConfig) -> list[Stage]:
    """(label, layers it stands for, what runs), in order: the input stage (None), each sampled layer
    (its index); end to end, the embedding lookup first, the logits and the argmax last."""
    layers: list[Stage] = [("input stage", 1, None)] + [(f"layer {i}", n, i) for i, n in sorted(sample.items())]
    if cfg.scope != "end_to_end":
        return layers
    return [("embedding", 1, "embed"), *layers, ("logits", 1, "logits"), ("argmax", 1, "argmax")]


def head_sample(cfg: ModelConfig) -> set[int]:
    """End to end, the decode steps a sampled run runs the head at (the embedding lookup, the logits
    and the argmax: one row each, the same shapes at every step, so the same bytes and rounds): the
    first and the last. The others count those figures; their layers run on the last embedded
    row, so a sampled run chooses no tokens of its own (`--full` runs the head at every step)."""
    if cfg.scope != "end_to_end":
        return set()
    return {j for j in (1, cfg.new_tokens - 1) if 1 <= j < cfg.new_tokens}


def reported_steps(cfg: ModelConfig, full: bool, passes: int) -> int:
    """The "step" events a party reports for one variant: every stage of the prompt's pass, `passes`
    times (the timed repeats), then one per decode step of a generation."""
    return passes * len(stages(sample_of(cfg, full), cfg)) + max(cfg.new_tokens - 1, 0)
