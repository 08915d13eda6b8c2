"""Accuracy under MPC on real text: a trained byte model's next-byte predictions, MPC against plaintext.

After a variant's costs, with trained weights (a `pibench train` checkpoint, `weights: {checkpoint:
...}`), the parties run the whole model on `windows` windows of T + 1 bytes of real text (the suite's
`accuracy.text`, else the quality corpus's validation split: the windows `pibench train` evaluates
first): the client shares each window's first T bytes as one-hot rows (T, vocab), the server its
weights; under MPC the byte embedding (a product with the one-hot rows) and the position embedding,
every layer of the stack, and the head (d, vocab) with its bias give the logits (T, vocab), revealed
to rank 0. Rank 0, which holds the weights, learns the windows' bytes (revealed too: they are public
text) and runs the plaintext interpreter on them, then reports (`AccuracyRecord`):

- top-1 agreement: the share of positions whose most likely next byte is the same under MPC and in plaintext;
- mean and largest absolute logit error;
- cross-entropy of the next byte (nats) and perplexity per byte from the MPC logits beside the plaintext ones;
- usable: the largest logit error within `USABLE_RELATIVE_ERROR` of the largest plaintext logit. Where
  it is not, the window with the largest error runs again with every intermediate revealed, and the
  first operation whose output misses its plaintext value by more than that share of its largest
  magnitude is named (`first_unusable_op`, e.g. "layer 2 softmax").

None of this is counted in the variant's costs: the cost measurement is over before.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pibench.backends.base import Emit, Session
from pibench.measuring.measured import USABLE_RELATIVE_ERROR, AccuracyRecord
from pibench.models.checkpoints import language_model_shapes, load_language_model
from pibench.models.config import ModelConfig
from pibench.models.definition import forward, input_stage, layer, param_specs
from pibench.models.plaintext import TorchOps
from pibench.suites.corpus import VOCAB
from pibench.suites.loader import Accuracy, Suite, SuiteEntry
from pibench.util.errors import PibenchError

TRACED = ("matmul", "add", "mul", "scale", "softmax", "layernorm", "gelu", "relu")  # what a diagnosis compares
MAX_TEXT_BYTES = 64 * 1024 * 1024


@functools.lru_cache(maxsize=4)  # the same windows for every variant of a run: the corpus is read once
def windows(acc: Accuracy, T: int, corpus_bytes: int | None) -> torch.Tensor:
    """The windows (n, T + 1) of byte values: from the text file, else from the quality corpus's
    validation split, at offsets drawn as `pibench train` draws its first evaluation batch."""
    from pibench.suites.corpus import EVAL_SEED, batch, load_corpus

    if acc.text is None:
        tokens, what = load_corpus(max_bytes=corpus_bytes).validation, "the corpus's validation split"
    else:
        path = Path(acc.text)
        try:
            if path.stat().st_size > MAX_TEXT_BYTES:
                raise PibenchError(f"accuracy text '{path}' is over {MAX_TEXT_BYTES} bytes")
            data = path.read_bytes()
        except OSError as err:
            raise PibenchError(f"accuracy text '{path}' cannot be read: {err.strerror or err}") from None
        tokens, what = torch.frombuffer(bytearray(data), dtype=torch.uint8).long(), f"'{path}'"
    if len(tokens) < T + 2:
        raise PibenchError(f"accuracy: {what} holds {len(tokens)} bytes; a window needs {T + 2}")
    return batch(tokens, T, acc.windows, torch.Generator().manual_seed(EVAL_SEED))  # (n, T + 1)


def lm_logits(ops: Any, weights: Mapping[str, Any], onehot: Any, cfg: ModelConfig, trace: Any = None) -> Any:
    """One-hot bytes (T, vocab) -> logits (T, vocab): embedding and positions, every layer, the head;
    with `trace` (a `_Trace` around `ops`), every traced call's output kept, labelled by where it ran."""
    ops_ = trace or ops
    if trace:
        trace.where = "embedding"
    x = ops_.add(ops_.matmul(onehot, weights["lm.embed"], "head.embedding"), weights["lm.pos"])
    if trace is None:
        h = forward(ops, weights, x, cfg)
    else:
        trace.where = "input stage"
        h = input_stage(trace, weights, x, cfg)
        for i in range(cfg.L):
            trace.where = f"layer {i}"
            h = layer(trace, weights, h, cfg, i)
        trace.where = "head"
    return ops_.add(ops_.matmul(h, weights["lm.head"], "head.lm_head"), weights["lm.head_bias"])


class _Trace:
    """An `Ops` that passes every call on and keeps each traced call's output, labelled with where in the
    model it ran ("layer 2 softmax"), for a diagnosis."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.where = inner, ""
        self.outputs: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if name not in TRACED:
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            y = method(*args, **kwargs)
            self.outputs.append((f"{self.where} {name}", y))
            return y

        return call


def _window(ops: Any, weights: Mapping[str, Any], x: Any, cfg: ModelConfig, i: int, traced: bool = False) -> Any:
    """Window `i`'s logits (T, vocab) from the shared one-hot rows of every window's T + 1 bytes
    (n (T + 1), vocab); `traced`: every traced intermediate, [(label, value), ...], the logits last."""
    onehot = ops.rows(x, i * (cfg.T + 1), i * (cfg.T + 1) + cfg.T)
    if not traced:
        return lm_logits(ops, weights, onehot, cfg)
    trace = _Trace(ops)
    lm_logits(ops, weights, onehot, cfg, trace)
    return trace.outputs


def _plain(value: Any) -> bool:
    """A public value (a constant every party computes alike): nothing to reveal or compare."""
    return isinstance(value, (torch.Tensor, np.ndarray))


def _first_beyond(mpc: list[torch.Tensor | None], plain: list[tuple[str, torch.Tensor]]) -> str | None:
    """The label of the first traced output whose error exceeds the usable share of its scale."""
    for got, (label, want) in zip(mpc, plain, strict=True):
        if got is None:
            continue
        err = (got.double() - want.double()).abs().max().item()
        if not math.isfinite(err) or err > USABLE_RELATIVE_ERROR * max(want.abs().max().item(), 1e-6):
            return label.strip()
    return None


Exchange = Callable[[Any], list[Any]]  # every rank's JSON value, by rank (`Peers.exchange`)


def measure_accuracy(
    session: Session, suite: Suite, entry: SuiteEntry, rank: int, gelu: str, emit: Emit, exchange: Exchange
) -> AccuracyRecord | None:
    """Run the accuracy pass of `entry` as party `rank` (0: server, 1: client); rank 0's report, others None.
    `exchange`: pibench's channel between the parties, by which rank 0 says which window to diagnose."""
    acc, cfg, start = suite.accuracy, entry.config, time.perf_counter()
    assert acc is not None
    n, T = acc.windows, cfg.T
    plain_w, x_plain = None, None
    if rank == 0:
        where = suite.weights_of(entry.name)
        assert where is not None
        plain_w = load_language_model(where[1], cfg)
    if rank == 1:  # every window's T + 1 bytes: the model reads the first T, the last is the last one's target
        x_plain = one_hot(windows(acc, T, suite.train.corpus_bytes).reshape(-1))
    specs = {name: spec.shape for name, spec in param_specs(cfg).items()} | language_model_shapes(cfg)
    weights, x = session.share(plain_w, specs, x_plain, (n * (T + 1), VOCAB))
    mpc: list[torch.Tensor | None] = []
    for i in range(n):
        y, _ = session.measure(functools.partial(_window, cfg=cfg, i=i), weights, x)
        mpc.append(session.reveal(y, to=0))
        emit({"event": "accuracy", "variant": entry.name, "window": i + 1, "windows": n})
    revealed = session.reveal(x, to=0)  # the windows' bytes for rank 0's reference: public text
    report: dict[str, Any] | None = None
    worst = None
    if rank == 0:
        assert plain_w is not None and revealed is not None
        ids = revealed.reshape(n, T + 1, VOCAB).argmax(-1)
        got = torch.stack([m for m in mpc if m is not None]).to(torch.float64)
        with torch.no_grad():
            want = torch.stack([lm_logits(TorchOps(gelu), plain_w, one_hot(w[:-1]), cfg) for w in ids]).double()
        err = (got - want).abs()
        usable = bool(torch.isfinite(err).all()) and err.max().item() <= USABLE_RELATIVE_ERROR * want.abs().max().item()
        if not usable:  # the window with the largest error (a non-finite one first)
            worst = int(err.nan_to_num(float("inf")).flatten(1).amax(1).argmax())
        report = {
            "windows": n,
            "positions": n * T,
            "source": acc.text or "the quality corpus's validation split",
            "agreement": float((got.argmax(-1) == want.argmax(-1)).double().mean()),
            "mean_abs_logit_error": _finite(err.mean().item()),
            "max_abs_logit_error": _finite(err.max().item()),
            "max_abs_logit": float(want.abs().max()),
            "loss_mpc": _finite(_cross_entropy(got, ids)),
            "loss_plaintext": _cross_entropy(want, ids),
            "usable": usable,
        }
    told = exchange(worst)[0]  # rank 0's choice of window to diagnose (None: none)
    if told is not None and (not isinstance(told, int) or isinstance(told, bool) or not 0 <= told < n):
        raise PibenchError(f"party 0 named accuracy window {str(told)[:20]} to diagnose; there are {n}")
    first = _diagnose(session, weights, x, cfg, told, plain_w, revealed, gelu) if told is not None else None
    if report is None:
        return None
    return AccuracyRecord(**report, first_unusable_op=first, wall_s=time.perf_counter() - start)


def one_hot(ids: torch.Tensor) -> torch.Tensor:
    """Byte values (m,) -> one-hot rows (m, VOCAB), float32."""
    return torch.nn.functional.one_hot(ids, VOCAB).to(torch.float32)


def _cross_entropy(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """Mean cross-entropy (nats per byte) of the next byte at every position: logits (n, T, VOCAB)
    against each window's bytes 1..T (ids: (n, T + 1)), as `pibench train` evaluates."""
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1)))


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _diagnose(
    session: Session,
    weights: Any,
    x: Any,
    cfg: ModelConfig,
    window: int,
    plain_w: Mapping[str, torch.Tensor] | None,
    revealed: torch.Tensor | None,
    gelu: str,
) -> str | None:
    """Window `window` again under MPC with every traced intermediate revealed to rank 0, which compares
    each with the plaintext interpreter's: the first operation past the usable bound (rank 0; else None)."""
    outs, _ = session.measure(functools.partial(_window, cfg=cfg, i=window, traced=True), weights, x)
    got = [None if _plain(v) else session.reveal(v, to=0) for _, v in outs]
    if plain_w is None or revealed is None:
        return None
    T = cfg.T
    ids = revealed.reshape(-1, T + 1, VOCAB).argmax(-1)[window]
    trace = _Trace(TorchOps(gelu))
    with torch.no_grad():
        lm_logits(trace.inner, plain_w, one_hot(ids[:-1]), cfg, trace)
    return _first_beyond(got, trace.outputs)
