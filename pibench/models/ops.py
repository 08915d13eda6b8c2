"""The operations interface the model definition is written against.

Shapes: T tokens, d width, H heads, dh = d/H. A "tensor" is whatever the interpreter uses (a
shape-only `SymTensor`, a torch tensor, a CrypTen shared tensor). Weights are secret (server's),
activations are secret (client's input), constants from `causal_mask`/`causal_average`/`eye`
are public.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

Tensor = Any

# Additive causal mask value. CrypTen's exp is a limit approximation, (1 + x/2^8)^(2^8), that
# diverges below about -256, so -1e4 or -inf would wreck an MPC softmax; exp(-40) ~ 4e-18 is
# already negligible next to the unmasked terms. Every interpreter uses the same value so that
# plaintext and MPC outputs are comparable.
MASK_VALUE = -40.0
LAYERNORM_EPS = 1e-5

# Roles of matrix products; the FLOP conventions (`pibench.counting.cost`) weigh them and split FFN/attention.
MATMUL_ROLES = (
    "attn.proj",  # (T,d) x (d,3d): Q, K, V in one product (d,2d: Q, K in shaped attention); (T,d) x (d,d): O
    "attn.scores",  # (H,T,dh) x (H,dh,T): Q K^T
    "attn.values",  # (H,T,T) x (H,T,dh): softmax(.) V
    "attn.shaped_scores",  # as attn.scores, in He & Hofmann's shaped attention
    "attn.shaped_values",  # (H,T,T) x (H,T,dh): A X, the shaped attention applied to the input
    "attn.shaped_average",  # (T,T) x (H,T,dh): C X, the causal average of the input (public x secret)
    "ffn.in",  # (T,d) x (d,4d)
    "ffn.out",  # (T,4d) x (4d,d)
    "ffn.fused",  # (T,d) x (d,d)
    "head.embedding",  # (n,vocab) x (vocab,d): secret one-hot token rows times the token embedding
    "head.lm_head",  # (1,d) x (d,vocab): the LM head, tied to the token embedding
)
LINEAR_ROLES = ("attn.proj", "ffn.in", "ffn.out", "ffn.fused")  # products with a weight matrix


class Ops(ABC):
    """Tensor operations of the model definition. Every method is abstract: an interpreter that
    misses one cannot be instantiated, so no operation goes uncounted or unexecuted."""

    # -- linear ------------------------------------------------------------------------------
    @abstractmethod
    def matmul(self, a: Tensor, b: Tensor, role: str) -> Tensor:
        """(..., m, k) x (..., k, n) -> (..., m, n), leading dims broadcast; `role` in MATMUL_ROLES."""

    @abstractmethod
    def add(self, a: Tensor, b: Tensor) -> Tensor:
        """Elementwise a + b with broadcasting."""

    @abstractmethod
    def mul(self, a: Tensor, b: Tensor) -> Tensor:
        """Elementwise a * b with broadcasting (secret x secret when both are secret)."""

    @abstractmethod
    def scale(self, a: Tensor, c: float) -> Tensor:
        """a * c for a public Python scalar c."""

    # -- nonlinear ---------------------------------------------------------------------------
    @abstractmethod
    def softmax(self, x: Tensor) -> Tensor:
        """Softmax over the last dim; (..., rows, cols) counts prod(...) softmaxes of rows x cols."""

    @abstractmethod
    def layernorm(self, x: Tensor, gain: Tensor, bias: Tensor) -> Tensor:
        """LayerNorm over the last dim (eps = LAYERNORM_EPS); x (T,d), gain and bias (d,)."""

    @abstractmethod
    def gelu(self, x: Tensor) -> Tensor:
        """GELU, elementwise."""

    @abstractmethod
    def relu(self, x: Tensor) -> Tensor:
        """ReLU, elementwise."""

    @abstractmethod
    def argmax(self, x: Tensor) -> Tensor:
        """(..., n) -> (..., n): a one-hot row marking each row's largest element (the next token,
        still secret). Ties: the first in plaintext; MPC backends may break them otherwise."""

    # -- layout (free) -----------------------------------------------------------------------
    @abstractmethod
    def split_heads(self, x: Tensor, heads: int) -> Tensor:
        """(T, d) -> (H, T, d/H)."""

    @abstractmethod
    def split(self, x: Tensor, parts: int) -> list[Tensor]:
        """(..., parts*k) -> `parts` tensors (..., k), in order."""

    @abstractmethod
    def merge_heads(self, x: Tensor) -> Tensor:
        """(H, T, dh) -> (T, H*dh)."""

    @abstractmethod
    def transpose(self, x: Tensor) -> Tensor:
        """Swap the last two dims."""

    @abstractmethod
    def concat(self, a: Tensor, b: Tensor) -> Tensor:
        """(..., m, k) and (..., n, k) -> (..., m+n, k): positions appended (a KV cache growing)."""

    @abstractmethod
    def rows(self, x: Tensor, start: int, stop: int) -> Tensor:
        """(..., m, k) -> (..., stop-start, k): rows start..stop-1 of the last-but-one dim."""

    # -- public constants: the last n rows of a (t, t) matrix, for n new positions of t seen ------
    @abstractmethod
    def causal_mask(self, n: int, t: int | None = None) -> Tensor:
        """(n, t) additive mask (t = n by default): row i is query position t-n+i; 0 where key
        j <= t-n+i, MASK_VALUE after it."""

    @abstractmethod
    def causal_average(self, n: int, t: int | None = None) -> Tensor:
        """(n, t) rows of C, C[p, j] = 1/(p+1) for j <= p, else 0 (uniform causal attention)."""

    @abstractmethod
    def eye(self, n: int, t: int | None = None) -> Tensor:
        """(n, t) rows of the (t, t) identity."""
