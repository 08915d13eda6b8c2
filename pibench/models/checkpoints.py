"""Weights from files, for any command that runs the model: pibench checkpoints and local Hugging Face
GPT-2 directories. Nothing is downloaded: a path on this machine, or an error.

- A pibench checkpoint is one safetensors file (no pickle) holding the model definition's weights by
  their names (`pibench.models.definition.param_specs`), with the variant's `ModelConfig` in its
  metadata (`save_checkpoint`); it loads only into a variant of the same architecture and shapes.
- A Hugging Face GPT-2 directory holds config.json and model.safetensors (or pytorch_model.bin, read
  with torch's weights-only loader). Its tensors map into the one definition as SM + LN + G: wte,
  wpe, h.N.ln_1, attn.c_attn (Q, K, V in one (d, 3d) matrix, as pibench's), attn.c_proj, ln_2,
  mlp.c_fc, mlp.c_proj, ln_f. GPT-2's Conv1D weights are (in, out), as `ParamSpec`s are; its LM head
  is tied to wte, as pibench's.

Whatever the source, every weight the definition reads must be there with its shape: a mismatch is
one line naming the file and the tensor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from pibench.models.config import BYTE_VOCAB, ModelConfig
from pibench.models.definition import param_specs
from pibench.util.errors import PibenchError

CONFIG_KEY = "pibench.config"  # the safetensors metadata key of a checkpoint's ModelConfig (JSON)
# what GPT-2 is, as a variant: every other architecture field must be ModelConfig's default
GPT2 = {
    "attention": "softmax",
    "norm": "pre_ln",
    "activation": "gelu",
    "ffn": "standard",
    "bias": True,
    "ffn_blocks_kept": None,
    "activation_blocks": None,
}
GELU_FORMS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "erf"}
_LAYER_NAMES = {  # pibench's names in layer i -> GPT-2's in block i
    "ln1.g": "ln_1.weight",
    "ln1.b": "ln_1.bias",
    "attn.qkv.w": "attn.c_attn.weight",
    "attn.qkv.b": "attn.c_attn.bias",
    "attn.o.w": "attn.c_proj.weight",
    "attn.o.b": "attn.c_proj.bias",
    "ln2.g": "ln_2.weight",
    "ln2.b": "ln_2.bias",
    "ffn.in.w": "mlp.c_fc.weight",
    "ffn.in.b": "mlp.c_fc.bias",
    "ffn.out.w": "mlp.c_proj.weight",
    "ffn.out.b": "mlp.c_proj.bias",
}
_HEAD_NAMES = {"wte": "wte.weight", "wpe": "wpe.weight", "ln_f.g": "ln_f.weight", "ln_f.b": "ln_f.bias"}


def save_checkpoint(path: str | Path, cfg: ModelConfig, weights: Mapping[str, torch.Tensor], **meta: str) -> None:
    """`weights` (the definition's names) as one safetensors file at `path`, with `cfg` and `meta`
    (strings: e.g. the training record's digest) in its metadata; written atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tensors = {n: w.detach().to(torch.float32).contiguous().cpu() for n, w in weights.items()}
    try:
        save_file(tensors, str(tmp), metadata={CONFIG_KEY: json.dumps(cfg.as_dict()), **meta})
        os.replace(tmp, path)  # whole or not at all
    finally:
        tmp.unlink(missing_ok=True)


def load_weights(kind: str, path: str | Path, cfg: ModelConfig, names: Collection[str]) -> dict[str, torch.Tensor]:
    """The weights `names` of variant `cfg` from a checkpoint ("checkpoint") or a Hugging Face GPT-2
    directory ("huggingface"), as float32 tensors of the definition's shapes."""
    return _select(_Source(kind, Path(path)), cfg, names)


def check_weights(kind: str, path: str | Path, cfgs: Collection[ModelConfig], language_model: bool = False) -> None:
    """That every weight of each variant in `cfgs` is in the file, with its shape (the file read once);
    with `language_model`, the byte model around the stack too (`load_language_model`)."""
    source = _Source(kind, Path(path))
    for cfg in cfgs:
        _select(source, cfg, param_specs(cfg))
        if language_model:
            _language_model(source, cfg)


def load_language_model(path: str | Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Every weight of a `pibench train` checkpoint: the stack's (the definition's names) and the byte
    model's around it (`LM_NAMES`: embedding (vocab, d), positions cut to the suite's T (T, d), head
    (d, vocab) and its bias (vocab,)), what an accuracy pass runs (`pibench.measuring.accuracy`)."""
    source = _Source("checkpoint", Path(path))
    return _select(source, cfg, param_specs(cfg)) | _language_model(source, cfg)


LM_NAMES = ("lm.embed", "lm.pos", "lm.head", "lm.head_bias")  # the byte model `pibench train` keeps


def language_model_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shapes of the byte model around the stack (`LM_NAMES`) as a run uses it: positions cut to T."""
    d, v = cfg.d, BYTE_VOCAB
    return {"lm.embed": (v, d), "lm.pos": (cfg.T, d), "lm.head": (d, v), "lm.head_bias": (v,)}


def _language_model(source: _Source, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    t = source.tensors
    if missing := [n for n in LM_NAMES if n not in t]:
        raise PibenchError(
            f"{source.what} has no '{missing[0]}': not a `pibench train` language model, so no accuracy on "
            "real text (the suite's 'accuracy: {windows: 0}' runs its weights without)"
        )
    want = {name: shape for name, shape in language_model_shapes(cfg).items() if name != "lm.pos"}
    for name, shape in want.items():
        if tuple(t[name].shape) != shape:
            raise PibenchError(f"{source.what}: '{name}' is {tuple(t[name].shape)}, the variant needs {shape}")
    pos = t["lm.pos"]
    if pos.dim() != 2 or pos.shape[1] != cfg.d or pos.shape[0] < cfg.T:
        raise PibenchError(
            f"{source.what}: 'lm.pos' is {tuple(pos.shape)}, the suite needs at least ({cfg.T}, {cfg.d})"
        )
    out = {name: t[name].to(torch.float32) for name in want}
    return out | {"lm.pos": pos[: cfg.T].to(torch.float32)}


class _Source:
    """A file's tensors (as stored) and what describes them (a checkpoint's metadata, a GPT-2's
    config.json), read once."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind, self.what = kind, f"{kind} '{path}'"
        self.about: Mapping[str, Any]
        if kind == "checkpoint":
            self.tensors, self.about = _read_safetensors(path, self.what)
        else:
            self.about, self.tensors = _read_huggingface(path, self.what)

    def fit(self, cfg: ModelConfig) -> dict[str, torch.Tensor]:
        """The tensors under the definition's names, once `cfg` is checked against the file."""
        return _checkpoint(self, cfg) if self.kind == "checkpoint" else _huggingface(self, cfg)


def _select(source: _Source, cfg: ModelConfig, names: Collection[str]) -> dict[str, torch.Tensor]:
    tensors, specs, out = source.fit(cfg), param_specs(cfg), {}
    for name in names:
        if name not in tensors:
            raise PibenchError(f"{source.what} has no weight '{name}' of shape {specs[name].shape}")
        w = tensors[name]
        if tuple(w.shape) != specs[name].shape:
            raise PibenchError(f"{source.what}: '{name}' is {tuple(w.shape)}, the variant needs {specs[name].shape}")
        out[name] = w.to(torch.float32)
    return out


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


def _read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except FileNotFoundError:
        hint = " (`pibench train SUITE` writes a suite's checkpoints)" if path.suffix == ".safetensors" else ""
        raise PibenchError(f"{what}: no such file{hint}") from None
    except Exception as err:  # safetensors' own error type is not exported
        raise PibenchError(f"{what} is not a readable safetensors file ({_first_line(err)})") from None


def _checkpoint(source: _Source, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    what, meta = source.what, source.about
    if CONFIG_KEY not in meta:
        raise PibenchError(f"{what} is not a pibench checkpoint (no '{CONFIG_KEY}' in its metadata)")
    try:
        saved = ModelConfig(**json.loads(meta[CONFIG_KEY]))
    except Exception:  # any malformed metadata: the same one line
        raise PibenchError(f"{what}: its '{CONFIG_KEY}' metadata is not a model configuration") from None
    # what shapes the weights: the architecture and L, H, d (not T or generation, which weights allow)
    mine = replace(cfg, T=saved.T, new_tokens=saved.new_tokens, scope=saved.scope, vocab=saved.vocab)
    if saved != mine:
        differ = [k for k, v in saved.as_dict().items() if mine.as_dict().get(k) != v]
        said = ", ".join(f"{k}={saved.as_dict()[k]!r} (variant: {mine.as_dict()[k]!r})" for k in differ[:4])
        raise PibenchError(f"{what} holds another architecture: {said}")
    return source.tensors


def _read_huggingface(directory: Path, what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """config.json and the state dict (names without GPT2LMHeadModel's "transformer." prefix)."""
    try:
        hf = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PibenchError(f"{what}: no config.json there (a Hugging Face GPT-2 directory has one)") from None
    except (OSError, ValueError) as err:
        raise PibenchError(f"{what}: config.json is not readable JSON ({str(err)[:100]})") from None
    if not isinstance(hf, dict) or hf.get("model_type") != "gpt2":
        kind = hf.get("model_type") if isinstance(hf, dict) else None
        raise PibenchError(f"{what}: config.json is not a GPT-2's (model_type {kind!r})")
    if GELU_FORMS.get(hf.get("activation_function", "gelu_new")) is None:
        raise PibenchError(f"{what}: activation_function {hf.get('activation_function')!r} is not a GELU")
    safe, pickle = directory / "model.safetensors", directory / "pytorch_model.bin"
    if safe.exists():
        state, _ = _read_safetensors(safe, f"{what}: model.safetensors")
    elif pickle.exists():
        try:
            state = torch.load(pickle, map_location="cpu", weights_only=True)  # tensors only: no code runs
        except Exception as err:  # a truncated or foreign file: one line
            raise PibenchError(f"{what}: pytorch_model.bin is not readable ({_first_line(err)})") from None
    else:
        raise PibenchError(f"{what}: neither model.safetensors nor pytorch_model.bin is there")
    return hf, {k.removeprefix("transformer."): v for k, v in state.items()}


def _huggingface(source: _Source, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    what, hf, state = source.what, source.about, source.tensors
    other = {k: getattr(cfg, k) for k, v in GPT2.items() if getattr(cfg, k) != v}
    if other:
        raise PibenchError(f"{what} is GPT-2 (SM + LN + G); the variant differs: {other}")
    dims = {"L": "n_layer", "H": "n_head", "d": "n_embd"}
    dims |= {"vocab": "vocab_size"} if cfg.scope == "end_to_end" else {}
    for mine, theirs in dims.items():
        if hf.get(theirs) != getattr(cfg, mine):
            raise PibenchError(f"{what}: {theirs} is {hf.get(theirs)}, the suite's {mine} is {getattr(cfg, mine)}")
    if cfg.context > int(hf.get("n_positions", 0)):
        raise PibenchError(f"{what}: n_positions {hf.get('n_positions')} is below the suite's {cfg.context} positions")
    names = dict(_HEAD_NAMES)
    for i in range(cfg.L):
        names |= {f"h{i}.{mine}": f"h.{i}.{theirs}" for mine, theirs in _LAYER_NAMES.items()}
    out = {mine: state[theirs] for mine, theirs in names.items() if theirs in state}
    if "wpe" in out:
        out["wpe"] = out["wpe"][: cfg.context]  # the positions a run uses
    return out
