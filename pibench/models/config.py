"""The one configuration of the model definition: every variant is a value of `ModelConfig`.

Dimensions (L, H, d, T) come from a suite; the architecture fields come from a registered variant
(`pibench.models.variants`) and may be overridden per suite entry. Defaults describe GPT-2 small with
softmax attention, pre-LN LayerNorm and a GELU FFN: the papers' SM+LN+G baseline.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

Attention = Literal["softmax", "softmax_t", "shaped"]
Norm = Literal["pre_ln", "input_ln", "none"]
Activation = Literal["gelu", "relu", "identity"]
FFNForm = Literal["standard", "scaled", "scaled_fused"]
WeightParam = Literal["none", "weight_norm", "spectral_norm"]
Scope = Literal["layers", "end_to_end"]


BYTE_VOCAB = 256  # the byte-level language models `pibench train` trains (`pibench.suites.corpus`)


@dataclass(frozen=True, config=ConfigDict(extra="forbid", strict=True))
class ModelConfig:
    """A GPT-2-style causal decoder stack (d_ff = 4d), from input embeddings to hidden states.

    attention:  "softmax"   - softmax(QK^T/sqrt(d/H) + causal mask) V, then W_O
                "softmax_t" - as softmax, with a learnable inverse temperature per head and query
                              position multiplying the scores ("SM(t)"; the queries where d/H is
                              below the positions seen: equal, and the smaller secret product)
                "shaped"    - He & Hofmann's simplified block: W_V = W_O = identity, attention
                              A = a*I + b*softmax(.) - c*C (C: causal average), attention and FFN in
                              parallel, no skip connection (the identity term carries the input)
    norm:       "pre_ln"    - LayerNorm before attention and before the FFN (2 per layer)
                "input_ln"  - one LayerNorm on the stack's input (He & Hofmann as the papers count it)
                "none"
    activation: FFN nonlinearity; "identity" means none is applied.
    ffn:        "standard" (x W_in W_out), "scaled" (standard, each residual branch multiplied by a
                learnable per-layer scalar alpha (attention) / beta (FFN)), "scaled_fused" (scaled, and
                W_in W_out trained as one d x d matrix).
    ffn_blocks_kept: the first k layers keep their FFN; deeper FFN blocks are removed (None: all).
    activation_blocks: the first k layers' FFNs apply `activation`, deeper ones none (None: all).
    ffn_weight_param: weight or spectral normalisation of the FFN weights; a training-time
                reparametrisation, folded into plain weights for inference (no inference cost).
    bias:       linear layers carry a bias vector, as in GPT-2.
    new_tokens: tokens generated after the prompt of T: a prefill over T positions (which yields the
                first), then one decode step per further token over the KV cache
                (`pibench.models.definition.KVCache`); the last token is never fed back, so the
                context holds T + new_tokens - 1 positions (`context`). 0: the prefill alone.
    scope:      "layers" - input embeddings in, hidden states out: the stack alone (the papers' FLOP
                           convention)
                "end_to_end" - secret token ids in (one-hot rows times the server's token embedding,
                           plus its position embedding), then the stack, a final LayerNorm where the
                           variant normalises (pre_ln), the LM head tied to the token embedding on the
                           last position, and the next token chosen by argmax, as a one-hot row that
                           feeds the next step without being revealed (GPT-2's layout)
    vocab:      the vocabulary size of the end-to-end scope (GPT-2: 50257).
    """

    L: int = Field(default=12, ge=1)
    H: int = Field(default=12, ge=1)
    d: int = Field(default=768, ge=1)
    T: int = Field(default=128, ge=1)
    attention: Attention = "softmax"
    norm: Norm = "pre_ln"
    activation: Activation = "gelu"
    ffn: FFNForm = "standard"
    ffn_blocks_kept: int | None = Field(default=None, ge=0)
    activation_blocks: int | None = Field(default=None, ge=0)
    ffn_weight_param: WeightParam = "none"
    bias: bool = True
    new_tokens: int = Field(default=0, ge=0)
    scope: Scope = "layers"
    vocab: int = Field(default=50257, ge=2)

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.d % self.H:
            raise ValueError(f"d={self.d} is not divisible by H={self.H}")
        if self.ffn_blocks_kept is not None and self.ffn_blocks_kept > self.L:
            raise ValueError(f"ffn_blocks_kept={self.ffn_blocks_kept} exceeds L={self.L}")
        if self.activation_blocks is not None and self.activation_blocks > self.L:
            raise ValueError(f"activation_blocks={self.activation_blocks} exceeds L={self.L}")
        if self.ffn == "scaled_fused" and self.activation != "identity":
            raise ValueError("a fused FFN (one d x d matrix) cannot have an activation")
        return self

    @property
    def context(self) -> int:
        """Positions of the longest sequence: the prompt and every generated token."""
        return self.T + max(self.new_tokens - 1, 0)

    @property
    def d_ff(self) -> int:
        return 4 * self.d

    @property
    def d_head(self) -> int:
        return self.d // self.H

    @property
    def ffn_layers(self) -> int:
        """Number of layers that keep their FFN block (L_ffn)."""
        return self.L if self.ffn_blocks_kept is None else self.ffn_blocks_kept

    def has_ffn(self, layer: int) -> bool:
        return layer < self.ffn_layers

    def layer_runs(self) -> list[tuple[int, int]]:
        """The stack cut into runs [start, stop) of layers that every per-layer field treats alike.

        Per-layer fields act on the first k layers (`LAYER_CUTOFFS`), so the cuts are those k; a
        stack of any depth has at most len(LAYER_CUTOFFS) + 1 runs. Sampling and analytic costs
        trace one layer per run (`pibench.counting.sampling`), never every layer.
        """
        cuts = {0, self.L, *(k for f in LAYER_CUTOFFS if (k := getattr(self, f)) is not None)}
        ordered = sorted(cuts)
        return [(a, b) for a, b in itertools.pairwise(ordered) if a < b]

    def ffn_activation(self, layer: int) -> Activation:
        """The activation of layer `layer`'s FFN ("identity" past `activation_blocks`)."""
        kept = self.L if self.activation_blocks is None else self.activation_blocks
        return self.activation if layer < kept else "identity"

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with `changes` applied and validated."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))
# Fields that make layers differ: each applies to the first k layers. A new per-layer field belongs
# here (tests/test_sampling.py traces every layer of every variant to check that runs are uniform).
LAYER_CUTOFFS = ("ffn_blocks_kept", "activation_blocks")
DIMENSIONS = ("L", "H", "d", "T")
