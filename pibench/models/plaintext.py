"""Plaintext interpreter: the model definition on torch tensors, with autograd.

`TorchModel(cfg)` is an `nn.Module` holding random weights (GPT-2 style init) for any variant;
weight- and spectral-normalised FFN weights are torch parametrisations, folded into plain tensors by
`effective_weights()` (what an inference backend receives). `TorchOps` is also the reference the MPC
interpreters are compared against.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrizations

from pibench.models.config import ModelConfig
from pibench.models.definition import ParamSpec, forward, param_specs
from pibench.models.ops import LAYERNORM_EPS, MASK_VALUE, Ops

Tensor = torch.Tensor


class TorchConstants:
    """The public constants of `Ops` as plain torch tensors on `device` (shared with the MPC
    interpreters, whose shares may live on a GPU)."""

    device: torch.device | str = "cpu"

    def causal_mask(self, n: int, t: int | None = None) -> Tensor:
        t = n if t is None else t
        return torch.full((n, t), MASK_VALUE, device=self.device).triu(t - n + 1)

    def causal_average(self, n: int, t: int | None = None) -> Tensor:
        t = n if t is None else t
        steps = torch.arange(t - n + 1, t + 1, dtype=torch.float32, device=self.device)
        return torch.ones(n, t, device=self.device).tril(t - n) / steps[:, None]

    def eye(self, n: int, t: int | None = None) -> Tensor:
        t = n if t is None else t
        return torch.eye(t, device=self.device)[t - n :]

    def rows(self, x: Tensor, start: int, stop: int) -> Tensor:
        return x[..., start:stop, :]


class TorchOps(TorchConstants, Ops):
    """`Ops` on torch tensors. gelu: "tanh" (default; the form MPC backends approximate well) or "erf"."""

    def __init__(self, gelu: str = "tanh") -> None:
        if gelu not in ("tanh", "erf"):
            raise ValueError(f"gelu must be 'tanh' or 'erf', not {gelu!r}")
        self.gelu_approximate = "tanh" if gelu == "tanh" else "none"

    def matmul(self, a: Tensor, b: Tensor, role: str) -> Tensor:
        return torch.matmul(a, b)

    def add(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def mul(self, a: Tensor, b: Tensor) -> Tensor:
        return a * b

    def concat(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([a, b], dim=-2)

    def scale(self, a: Tensor, c: float) -> Tensor:
        return a * c

    def softmax(self, x: Tensor) -> Tensor:
        return torch.softmax(x, dim=-1)

    def layernorm(self, x: Tensor, gain: Tensor, bias: Tensor) -> Tensor:
        return nn.functional.layer_norm(x, x.shape[-1:], gain, bias, LAYERNORM_EPS)

    def gelu(self, x: Tensor) -> Tensor:
        return nn.functional.gelu(x, approximate=self.gelu_approximate)

    def relu(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def argmax(self, x: Tensor) -> Tensor:
        return nn.functional.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype)

    def split_heads(self, x: Tensor, heads: int) -> Tensor:
        T, d = x.shape
        return x.reshape(T, heads, d // heads).transpose(0, 1)

    def split(self, x: Tensor, parts: int) -> list[Tensor]:
        return list(x.split(x.shape[-1] // parts, dim=-1))

    def merge_heads(self, x: Tensor) -> Tensor:
        H, T, dh = x.shape
        return x.transpose(0, 1).reshape(T, H * dh)

    def transpose(self, x: Tensor) -> Tensor:
        return x.transpose(-2, -1)


class _Weight(nn.Module):
    """Holds one weight so torch parametrisations (weight/spectral norm) can wrap it."""

    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(value)


def weight_seed(seed: int, name: str) -> int:
    """The generator seed of one weight: from the model's seed and the weight's name, so that a layer's
    weights are the same whether or not the other layers are built."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") >> 1


class TorchModel(nn.Module):
    """A trainable plaintext model of `cfg` with random weights; forward: (T, d) -> (T, d). With
    `only` (weights' specs, `pibench.models.definition.layer_weight_specs`), just those weights are built: a
    sampled MPC run of a deep model needs only the layers it measures, in time and memory independent of
    the depth."""

    def __init__(
        self, cfg: ModelConfig, seed: int = 0, gelu: str = "tanh", only: Mapping[str, ParamSpec] | None = None
    ) -> None:
        super().__init__()
        self.cfg, self.ops = cfg, TorchOps(gelu)
        specs = dict(only) if only is not None else param_specs(cfg)
        self.names = list(specs)
        self.weights = nn.ModuleList()
        for name, spec in specs.items():
            if spec.init == "normal":
                gen = torch.Generator().manual_seed(weight_seed(seed, name))
                value = torch.randn(spec.shape, generator=gen) * 0.02
                if name.endswith((".o.w", "ffn.out.w", "ffn.fused.w")):  # GPT-2: residual projections
                    value /= math.sqrt(2 * cfg.L)
            else:
                value = (torch.ones if spec.init == "ones" else torch.zeros)(spec.shape)
            holder: nn.Module = _Weight(value)
            if ".ffn." in name and name.endswith(".w") and cfg.ffn_weight_param != "none":
                if cfg.ffn_weight_param == "weight_norm":
                    holder = parametrizations.weight_norm(holder, dim=1)  # g per output column
                else:
                    holder = parametrizations.spectral_norm(holder)
            self.weights.append(holder)

    def effective_weights(self) -> dict[str, Tensor]:
        """Plain weight tensors by name, reparametrisations applied (what inference uses)."""
        return {name: holder.weight for name, holder in zip(self.names, self.weights, strict=True)}  # type: ignore[misc]

    def forward(self, x: Tensor) -> Tensor:
        return forward(self.ops, self.effective_weights(), x, self.cfg)
