"""Attention entropy, as the seed measures it.

For a causal attention row i (0-based; it attends to i + 1 positions) with probabilities p_ij,
the entropy is H_i = -Σ_j p_ij ln p_ij (natural log), at most ln(i + 1). A head's entropy is the mean
over its query rows (and over validation sequences); its *fraction of the maximum* is the mean over
rows i ≥ 1 of H_i / ln(i + 1) (row 0 has one choice and no entropy).

The seed sorts heads into quarters of that fraction: [0, 1/4), [1/4, 1/2), [1/2, 3/4), [3/4, 1].
Here a head is *overloaded* when it is in the top quarter (attention spread nearly uniformly: the
head does not select) and *collapsed* when it is in the bottom quarter (attention on nearly one
position). The fractions of heads in each are what the tables report.
"""

from __future__ import annotations

import math

import torch

from pibench.quality import QUARTERS

EPS = 1e-9


def row_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of each row of `probs` (..., T, T) in nats: (..., T)."""
    return -(probs * torch.log(probs + EPS)).sum(-1)


def max_entropy(T: int) -> torch.Tensor:
    """ln(i + 1) for causal rows i = 0..T-1: (T,)."""
    return torch.log(torch.arange(1, T + 1, dtype=torch.float64))


def head_fractions(probs: torch.Tensor) -> torch.Tensor:
    """Attention (B, L, H, T, T) -> each head's entropy as a fraction of the maximum: (L, H)."""
    T = probs.shape[-1]
    frac = row_entropy(probs.double())[..., 1:] / max_entropy(T)[1:]
    return frac.mean(dim=(0, -1))


def head_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Attention (B, L, H, T, T) -> each head's mean row entropy in nats: (L, H)."""
    return row_entropy(probs.double()).mean(dim=(0, -1))


def quarter_shares(fractions: torch.Tensor) -> list[float]:
    """Share of heads in each quarter of the maximum (sums to 1)."""
    bins = torch.clamp((fractions * 4).floor().long(), 0, 3).flatten()
    return [float((bins == q).sum()) / bins.numel() for q in range(4)]


def summary(probs: torch.Tensor) -> dict[str, object]:
    """Per-head entropy (nats and fraction of the maximum), quarter shares, overload and collapse."""
    frac = head_fractions(probs)
    shares = quarter_shares(frac)
    T = probs.shape[-1]
    return {
        "per_head_nats": head_entropy(probs).tolist(),
        "per_head_fraction": frac.tolist(),
        "quarter_shares": dict(zip(QUARTERS, shares, strict=True)),
        "overload": shares[3],
        "collapse": shares[0],
        "max_nats": math.log(T),
    }
