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

Whatever the source, what the file says of its model is checked first (`pibench.models.weight_files`:
its architecture and dimensions; every field of a GPT-2's config.json honoured, ignored for a stated
reason, or refused), then every weight the definition reads must be there with its shape: a mismatch
is one line naming the file and the tensor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path

import torch

from pibench.models.config import BYTE_VOCAB, ModelConfig
from pibench.models.definition import param_specs
from pibench.models.weight_files import CONFIG_KEY, WeightsInfo, first_line, read_info
from pibench.util.errors import PibenchError

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


def check_weights(
    kind: str, path: str | Path, cfgs: Collection[ModelConfig], language_model: bool = False, gelu: str | None = None
) -> None:
    """That every weight of each variant in `cfgs` is in the file, with its shape (the file read once),
    and that the file's description fits the run (`WeightsInfo.check`; `gelu`: the form the backend
    computes); with `language_model`, the byte model around the stack too (`load_language_model`)."""
    source = _Source(kind, Path(path))
    for cfg in cfgs:
        _select(source, cfg, param_specs(cfg), gelu)
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
    """A file's description of its model (`WeightsInfo`, read first) and its tensors (as stored, read once
    when first needed)."""

    def __init__(self, kind: str, path: Path) -> None:
        self.info = read_info(kind, path)
        self.what = self.info.what
        self._tensors: dict[str, torch.Tensor] | None = None

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            info = self.info
            self._tensors = _read_safetensors(info.path, self.what) if info.kind == "checkpoint" else _hf_state(info)
        return self._tensors

    def fit(self, cfg: ModelConfig, gelu: str | None = None) -> dict[str, torch.Tensor]:
        """The tensors under the definition's names, once `cfg` is checked against the file (`WeightsInfo.check`)."""
        self.info.check(cfg, gelu)
        return self.tensors if self.info.kind == "checkpoint" else _huggingface(self, cfg)


def _select(
    source: _Source, cfg: ModelConfig, names: Collection[str], gelu: str | None = None
) -> dict[str, torch.Tensor]:
    tensors, specs, out = source.fit(cfg, gelu), param_specs(cfg), {}
    for name in names:
        if name not in tensors:
            raise PibenchError(f"{source.what} has no weight '{name}' of shape {specs[name].shape}")
        w = tensors[name]
        if tuple(w.shape) != specs[name].shape:
            raise PibenchError(f"{source.what}: '{name}' is {tuple(w.shape)}, the variant needs {specs[name].shape}")
        out[name] = w.to(torch.float32)
    return out


def _read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        hint = " (`pibench train SUITE` writes a suite's checkpoints)" if path.suffix == ".safetensors" else ""
        raise PibenchError(f"{what}: no such file{hint}") from None
    except Exception as err:  # safetensors' own error type is not exported
        raise PibenchError(f"{what} is not a readable safetensors file ({first_line(err)})") from None


def _hf_state(info: WeightsInfo) -> dict[str, torch.Tensor]:
    """A GPT-2 folder's state dict (names without GPT2LMHeadModel's "transformer." prefix)."""
    what, directory = info.what, info.path
    safe, pickle = directory / "model.safetensors", directory / "pytorch_model.bin"
    if safe.exists():
        state = _read_safetensors(safe, f"{what}: model.safetensors")
    elif pickle.exists():
        try:
            state = torch.load(pickle, map_location="cpu", weights_only=True)  # tensors only: no code runs
        except Exception as err:  # a truncated or foreign file, or a pickle that would run code: one line
            if "weights_only" in str(err) or "Unpickl" in str(err):
                raise PibenchError(
                    f"{what}: pytorch_model.bin is a pickle holding more than tensors, and pibench refuses pickled "
                    "checkpoints (loading one can run code); where you trust the file, convert it to safetensors: "
                    "transformers' GPT2LMHeadModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)"
                ) from None
            raise PibenchError(f"{what}: pytorch_model.bin is not readable ({first_line(err)})") from None
    else:
        raise PibenchError(f"{what}: neither model.safetensors nor pytorch_model.bin is there")
    return {k.removeprefix("transformer."): v for k, v in state.items()}


def _huggingface(source: _Source, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A GPT-2's tensors under the definition's names (`cfg` checked against its config already)."""
    state = source.tensors
    names = dict(_HEAD_NAMES)
    for i in range(cfg.L):
        names |= {f"h{i}.{mine}": f"h.{i}.{theirs}" for mine, theirs in _LAYER_NAMES.items()}
    out = {mine: state[theirs] for mine, theirs in names.items() if theirs in state}
    if "wpe" in out:
        out["wpe"] = out["wpe"][: cfg.context]  # the positions a run uses
    return out
