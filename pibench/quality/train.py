"""Train one variant as a byte-level language model and measure it.

The stack is the one model definition (`pibench.models.definition.forward`) on the plaintext interpreter; around
it, outside the cost model as in the papers, a byte embedding and a learned position embedding
(T x d) in front and a linear head to 256 logits behind (no final LayerNorm: a variant without
LayerNorm keeps none). A batch runs through `torch.vmap` over sequences, and every softmax's
probabilities (L, H, T, T per sequence) come out beside the logits, for EReg and for entropy.

Optimiser: AdamW (betas 0.9, 0.95; weight decay on matrices), linear warm-up then cosine decay to
`min_lr` x `lr`, gradient-norm clipping. A variant *diverges* when its loss or gradient norm is not
finite, or its training loss exceeds `blowup` x its first step's; training stops there, the variant
is reported as diverged (no perplexity) and the suite goes on.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pibench.models.config import ModelConfig
from pibench.models.definition import forward
from pibench.models.plaintext import TorchModel, TorchOps
from pibench.quality import entropy
from pibench.quality.ereg import THRESHOLD_INIT, ereg_penalty
from pibench.quality.training_record import Quality
from pibench.suites.corpus import EVAL_SEED, VOCAB, Corpus, batch
from pibench.suites.train_section import TrainSettings

CURVE_POINTS = 50  # training-loss samples kept per variant


class _RecordingOps(TorchOps):
    """Plaintext ops that keep every softmax's output (the attention probabilities); public constants
    on `device`."""

    def __init__(self, gelu: str, device: torch.device) -> None:
        super().__init__(gelu)
        self.device = device
        self.probs: list[torch.Tensor] = []

    def softmax(self, x: torch.Tensor) -> torch.Tensor:
        p = super().softmax(x)
        self.probs.append(p)
        return p


class LanguageModel(nn.Module):
    """Byte embedding + position embedding -> the variant's stack -> linear head to 256 logits."""

    def __init__(self, cfg: ModelConfig, seed: int, ereg: bool, gelu: str = "tanh") -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed + 1)
        self.cfg, self.gelu = cfg, gelu
        self.stack = TorchModel(cfg, seed, gelu)
        self.embed = nn.Parameter(torch.randn(VOCAB, cfg.d, generator=gen) * 0.02)
        self.pos = nn.Parameter(torch.randn(cfg.T, cfg.d, generator=gen) * 0.01)
        self.head = nn.Parameter(torch.randn(cfg.d, VOCAB, generator=gen) * 0.02)
        self.head_bias = nn.Parameter(torch.zeros(VOCAB))
        # EReg's learnable threshold per layer and head, as a share of ln T
        self.thresholds = nn.Parameter(torch.full((cfg.L, cfg.H), THRESHOLD_INIT)) if ereg else None

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bytes (B, T) -> logits (B, T, 256) and attention probabilities (B, L, H, T, T)."""
        weights, cfg, gelu, device = self.stack.effective_weights(), self.cfg, self.gelu, self.embed.device

        def one(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            ops = _RecordingOps(gelu, device)
            return forward(ops, weights, x, cfg), torch.stack(ops.probs)

        hidden, probs = torch.vmap(one)(self.embed[tokens] + self.pos)
        return hidden @ self.head + self.head_bias, probs


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "thresholds" not in name and "inv_temp" not in name else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def learning_rate(step: int, steps: int, s: TrainSettings) -> float:
    """Linear warm-up over `warmup` x steps, then cosine decay from lr to min_lr x lr."""
    warm = max(1, round(s.warmup * steps))
    if step < warm:
        return s.lr * (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return s.lr * (s.min_lr + (1 - s.min_lr) * 0.5 * (1 + math.cos(math.pi * progress)))


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


def train_variant(
    cfg: ModelConfig,
    ereg: bool,
    corpus: Corpus,
    s: TrainSettings,
    progress: Callable[[int, int, float], None] | None = None,
    device: str = "cpu",
    checkpoint: Path | None = None,
) -> Quality:
    """Train and evaluate one variant on `device`; the record's `quality` entry. `checkpoint`: where to
    save the trained weights (`save_trained`), unless training diverged."""
    torch.manual_seed(s.seed)
    model = LanguageModel(cfg, s.seed, ereg).to(device)
    opt = torch.optim.AdamW(_param_groups(model, s.weight_decay), lr=s.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(s.seed)
    steps = max(1, s.tokens // (s.batch * cfg.T))
    every = max(1, steps // CURVE_POINTS)
    curve, diverged, nan_count, first = [], None, 0, None
    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, s)
        window = batch(corpus.train, cfg.T, s.batch, gen).to(device)
        logits, probs = model(window[:, :-1])
        ce = _cross_entropy(logits, window[:, 1:])
        loss = ce
        if ereg:
            assert model.thresholds is not None  # a model trained with EReg has its thresholds
            loss = ce + ereg_penalty(probs, model.thresholds, s.ereg_coefficient, s.ereg_margin)
        first = first if first is not None else ce.item()
        if not torch.isfinite(loss):
            nan_count += 1
            diverged = {"step": step, "reason": "loss is not finite"}
            break
        if ce.item() > s.blowup * first:
            diverged = {"step": step, "reason": f"training loss {ce.item():.3g} above {s.blowup:g} x the first step's"}
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip)
        if not torch.isfinite(norm):
            nan_count += 1
            diverged = {"step": step, "reason": "gradient norm is not finite"}
            break
        opt.step()
        if step % every == 0 or step == steps - 1:
            curve.append([step, ce.item()])
        if progress:
            progress(step + 1, steps, ce.item())
    wall = time.perf_counter() - start
    out: dict[str, Any] = {
        "seed": s.seed,
        "steps": steps,
        "steps_done": (diverged or {}).get("step", steps),
        "tokens_per_step": s.batch * cfg.T,
        "train_curve": curve,
        "nan_count": nan_count,
        "diverged": diverged,
        "wall_s": wall,
    }
    if diverged:
        return Quality.model_validate(out | {"val_loss": None, "val_ppl": None, "entropy": None})
    saved = {"checkpoint": save_trained(model, checkpoint, s)} if checkpoint is not None else {}
    return Quality.model_validate(out | evaluate(model, corpus, s, device) | saved)


def save_trained(model: LanguageModel, path: Path, s: TrainSettings) -> dict[str, str]:
    """The trained stack's weights (folded reparametrisations, the definition's names: what `pibench run`
    loads with `weights: {checkpoint: PATH}` at `scope: layers`) as a pibench checkpoint, with the
    byte model around it under `lm.*` (embedding, positions, an untied head: not the end-to-end
    scope's tied head, so an end-to-end suite finds no wte and says so); the file and its SHA-256."""
    import hashlib
    import json

    from pibench.models.checkpoints import save_checkpoint

    with torch.no_grad():
        weights = {k: v.detach() for k, v in model.stack.effective_weights().items()}
        weights |= {f"lm.{n}": getattr(model, n) for n in ("embed", "pos", "head", "head_bias")}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model.cfg, weights, train=json.dumps(dataclasses.asdict(s), sort_keys=True))
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


@torch.no_grad()
def evaluate(model: LanguageModel, corpus: Corpus, s: TrainSettings, device: str = "cpu") -> dict[str, Any]:
    """Validation loss and perplexity per byte over `eval_batches` fixed windows, and the entropy of
    every attention head on them."""
    gen = torch.Generator().manual_seed(EVAL_SEED)  # the same windows for every variant and seed
    losses, probs_all = [], []
    for _ in range(s.eval_batches):
        window = batch(corpus.validation, model.cfg.T, s.batch, gen).to(device)
        logits, probs = model(window[:, :-1])
        losses.append(float(_cross_entropy(logits, window[:, 1:])))
        probs_all.append(probs.cpu())
    val = sum(losses) / len(losses)
    return {"val_loss": val, "val_ppl": math.exp(val), "entropy": entropy.summary(torch.cat(probs_all))}
