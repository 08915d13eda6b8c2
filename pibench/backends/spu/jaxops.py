"""The model definition on plain JAX arrays: what SPU compiles. `SpuOps` runs each of these calls as its
own SPU program (op by op); `program` traces a whole step through them into one program.

Public constants are numpy arrays (compiled in as constants).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pibench.models.ops import LAYERNORM_EPS, MASK_VALUE, Ops


class JaxOps(Ops):
    """`Ops` on jax arrays (traced by SPU's compiler). gelu: "tanh" or "erf"."""

    def __init__(self, gelu: str = "tanh") -> None:
        self.tanh = gelu == "tanh"

    def matmul(self, a: Any, b: Any, role: str) -> Any:
        return jnp.matmul(a, b)

    def add(self, a: Any, b: Any) -> Any:
        return jnp.add(a, b)

    def mul(self, a: Any, b: Any) -> Any:
        return jnp.multiply(a, b)

    def scale(self, a: Any, c: float) -> Any:
        return a * c

    def softmax(self, x: Any) -> Any:
        return jax.nn.softmax(x, axis=-1)

    def layernorm(self, x: Any, gain: Any, bias: Any) -> Any:
        centred = x - jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
        return centred * jax.lax.rsqrt(var + LAYERNORM_EPS) * gain + bias

    def gelu(self, x: Any) -> Any:
        return jax.nn.gelu(x, approximate=self.tanh)

    def relu(self, x: Any) -> Any:
        return jax.nn.relu(x)

    def argmax(self, x: Any) -> Any:
        return jax.nn.one_hot(jnp.argmax(x, axis=-1), x.shape[-1], dtype=x.dtype)

    def split_heads(self, x: Any, heads: int) -> Any:
        T, d = x.shape
        return x.reshape(T, heads, d // heads).transpose(1, 0, 2)

    def split(self, x: Any, parts: int) -> list[Any]:
        return list(jnp.split(x, parts, axis=-1))

    def merge_heads(self, x: Any) -> Any:
        H, T, dh = x.shape
        return x.transpose(1, 0, 2).reshape(T, H * dh)

    def transpose(self, x: Any) -> Any:
        return jnp.swapaxes(x, -1, -2)

    def concat(self, a: Any, b: Any) -> Any:
        return jnp.concatenate([a, b], axis=-2)

    def rows(self, x: Any, start: int, stop: int) -> Any:
        return x[..., start:stop, :]

    def causal_mask(self, n: int, t: int | None = None) -> Any:
        t = n if t is None else t
        return np.triu(np.full((n, t), MASK_VALUE, np.float32), t - n + 1)

    def causal_average(self, n: int, t: int | None = None) -> Any:
        t = n if t is None else t
        steps = np.arange(t - n + 1, t + 1, dtype=np.float32)[:, None]
        return (np.tril(np.ones((n, t), np.float32), t - n) / steps).astype(np.float32)

    def eye(self, n: int, t: int | None = None) -> Any:
        t = n if t is None else t
        return np.eye(n, t, t - n, dtype=np.float32)
