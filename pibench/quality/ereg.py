"""EReg: the entropy regulariser of Jha & Reagen, "Entropy-Guided Attention for Private LLMs"
(arXiv 2501.03489), as their released code computes it.

For layer l, head h and query row i of a sequence, with E_max = ln T and a learnable threshold
fraction θ_lh (initialised to `THRESHOLD_INIT`):

    d_lhi  = H_lhi - θ_lh · E_max                       (H: the row's attention entropy, nats)
    pen_lhi = d_lhi²  if |d_lhi| > γ · E_max, else 0     (γ: the tolerance margin)
    L_EReg = λ · (1/L) Σ_l (1/H) Σ_h Σ_{b,i} pen_lhi     (summed over the batch's rows)

Defaults as in the authors' code: λ = 1e-5, γ = 0.20. Heads whose entropy stays within the margin
of their own threshold cost nothing; the threshold learns with the model, so each head settles on
its own entropy level instead of all drifting to the maximum (overload).
"""

from __future__ import annotations

import math

import torch

from pibench.quality.entropy import row_entropy

COEFFICIENT = 1e-5
MARGIN = 0.20
THRESHOLD_INIT = 0.5


def ereg_penalty(
    probs: torch.Tensor, thresholds: torch.Tensor, coefficient: float = COEFFICIENT, margin: float = MARGIN
) -> torch.Tensor:
    """Attention (B, L, H, T, T) and thresholds θ (L, H) -> the scalar penalty L_EReg."""
    e_max = math.log(probs.shape[-1])
    deviation = row_entropy(probs) - (thresholds * e_max)[None, :, :, None]
    outside = torch.where(deviation.abs() > margin * e_max, deviation, torch.zeros_like(deviation))
    per_layer_head = outside.square().sum(dim=(0, 3))  # (L, H)
    return coefficient * per_layer_head.mean()
