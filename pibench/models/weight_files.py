"""What a weights file says of its model, read without its tensors and without torch: a pibench
checkpoint's metadata (its `ModelConfig`) or a Hugging Face GPT-2's config.json, every field of which
pibench honours, ignores for a stated reason, or refuses (`HONOURED`, `IGNORED`; docs/weights.md).

`pibench cost` prices a suite from this alone (taking the dimensions a suite leaves out, and refusing
weights of another size or architecture); `pibench run` checks it the same way before any party starts,
then reads the tensors (`pibench.models.checkpoints`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pibench.models.config import ModelConfig
from pibench.models.ops import LAYERNORM_EPS
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
# Every field of a GPT-2's config.json, and what pibench does with it (docs/weights.md lists them).
# `HONOURED`: each changes the output and is taken into the run (a value pibench cannot run is refused,
# one line, before any party starts: `_check_gpt2_config`); `IGNORED`: each leaves the logits of a greedy
# forward pass as they are. A field in neither is refused: pibench cannot tell what it changes.
HONOURED = {
    "model_type": "must be gpt2",
    "n_layer": "L (a suite may leave it out: taken from here)",
    "n_head": "H (likewise)",
    "n_embd": "d (likewise)",
    "vocab_size": "vocab, end to end (likewise)",
    "n_positions": "must hold the run's context (prompt and generated tokens)",
    "n_ctx": "as n_positions (older configurations)",
    "n_inner": "the FFN's width: must be absent, null or 4 x n_embd (pibench's d_ff)",
    "activation_function": "gelu_new or gelu_pytorch_tanh (tanh form), gelu (erf form): must be the GELU form the "
    "backend computes (crypten.gelu, spu.gelu)",
    "layer_norm_epsilon": f"must be {1e-5:g} (pibench's LayerNorm epsilon)",
    "scale_attn_weights": "must be true (scores divided by the square root of the head width)",
    "scale_attn_by_inverse_layer_idx": "must be false",
    "tie_word_embeddings": "end to end, must be true (the LM head is wte; an untied head is refused); "
    "the stack alone (scope: layers) runs no head",
    "add_cross_attention": "must be false (a decoder alone)",
    "is_encoder_decoder": "must be false",
    "pruned_heads": "must be empty",
}
IGNORED = {
    **dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"), "dropout: off at inference"),
    **dict.fromkeys(
        ("summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels"),
        "GPT2DoubleHeadsModel's classification head, which a language model does not run",
    ),
    **dict.fromkeys(("initializer_range", "gradient_checkpointing", "use_bfloat16"), "training only"),
    "reorder_and_upcast_attn": "float32 already: pibench computes in float32 (plaintext) or fixed point (MPC)",
    "chunk_size_feed_forward": "computing the FFN in chunks gives the same result",
    **dict.fromkeys(("dtype", "torch_dtype"), "weights are read as float32"),
    **dict.fromkeys(
        ("use_cache", "output_past", "output_hidden_states", "output_attentions", "return_dict", "use_return_dict"),
        "what transformers returns, not what it computes",
    ),
    **dict.fromkeys(
        ("bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id"),
        "token ids: pibench's prompt is synthetic token ids and it generates greedily, never stopping early",
    ),
    **dict.fromkeys(
        (
            "task_specific_params",
            "max_length",
            "min_length",
            "do_sample",
            "early_stopping",
            "num_beams",
            "num_beam_groups",
            "diversity_penalty",
            "temperature",
            "top_k",
            "top_p",
            "typical_p",
            "repetition_penalty",
            "length_penalty",
            "no_repeat_ngram_size",
            "encoder_no_repeat_ngram_size",
            "bad_words_ids",
            "num_return_sequences",
            "output_scores",
            "return_dict_in_generate",
            "forced_bos_token_id",
            "forced_eos_token_id",
            "remove_invalid_values",
            "exponential_decay_length_penalty",
            "suppress_tokens",
            "begin_suppress_tokens",
        ),
        "generation settings of transformers' generate: pibench chooses each token by argmax (greedy)",
    ),
    **dict.fromkeys(
        (
            "architectures",
            "transformers_version",
            "_name_or_path",
            "_commit_hash",
            "_num_labels",
            "id2label",
            "label2id",
            "problem_type",
            "finetuning_task",
            "tokenizer_class",
            "prefix",
            "torchscript",
            "tf_legacy_loss",
            "is_decoder",
            "tie_encoder_decoder",
            "cross_attention_hidden_size",
            "_attn_implementation",
            "attn_implementation",
            "_attn_implementation_autoset",
        ),
        "metadata, labels of other heads, or how transformers runs it (not what it computes)",
    ),
}


@dataclass(frozen=True)
class WeightsInfo:
    """A weights file's description of its model (`read_info`): a checkpoint's metadata, or a GPT-2's
    config.json (validated: `_check_gpt2_config`)."""

    kind: str  # "checkpoint" or "huggingface"
    path: Path
    about: Mapping[str, Any]

    @property
    def what(self) -> str:
        return f"{self.kind} '{self.path}'"

    def saved(self) -> ModelConfig:
        """A checkpoint's `ModelConfig` (one line where its metadata is not one)."""
        if CONFIG_KEY not in self.about:
            raise PibenchError(f"{self.what} is not a pibench checkpoint (no '{CONFIG_KEY}' in its metadata)")
        try:
            return ModelConfig(**json.loads(self.about[CONFIG_KEY]))
        except Exception:  # any malformed metadata: the same one line
            raise PibenchError(f"{self.what}: its '{CONFIG_KEY}' metadata is not a model configuration") from None

    def dims(self) -> dict[str, int]:
        """The dimensions the file fixes: L, H, d (a checkpoint also its training T), and the vocabulary
        of a GPT-2 (`vocab`)."""
        if self.kind == "checkpoint":
            saved = self.saved()
            return {"L": saved.L, "H": saved.H, "d": saved.d, "T": saved.T}
        hf = self.about
        return {"L": hf["n_layer"], "H": hf["n_head"], "d": hf["n_embd"], "vocab": hf.get("vocab_size", 50257)}

    def check(self, cfg: ModelConfig, gelu: str | None = None) -> None:
        """That the file holds `cfg`'s model: its architecture and the dimensions that shape its weights
        (not T or what is generated, which weights allow), and for a GPT-2 its positions, head and (given
        `gelu`, the form the backend computes) its GELU; one line otherwise."""
        if self.kind == "checkpoint":
            saved = self.saved()
            mine = replace(cfg, T=saved.T, new_tokens=saved.new_tokens, scope=saved.scope, vocab=saved.vocab)
            if saved != mine:
                differ = [k for k, v in saved.as_dict().items() if mine.as_dict().get(k) != v]
                said = ", ".join(f"{k}={saved.as_dict()[k]!r} (variant: {mine.as_dict()[k]!r})" for k in differ[:4])
                raise PibenchError(f"{self.what} holds another architecture: {said}")
            return
        _check_gpt2_run(self, cfg, gelu)


def read_info(kind: str, path: str | Path) -> WeightsInfo:
    """What the weights at `path` say of their model ("checkpoint": a safetensors file's metadata, its
    header alone; "huggingface": DIR/config.json), or one line saying why it cannot be read."""
    path = Path(path)
    what = f"{kind} '{path}'"
    if kind == "checkpoint":
        return WeightsInfo(kind, path, read_metadata(path, what))
    try:
        hf = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PibenchError(f"{what}: no config.json there (a Hugging Face GPT-2 directory has one)") from None
    except (OSError, ValueError) as err:
        raise PibenchError(f"{what}: config.json is not readable JSON ({str(err)[:100]})") from None
    _check_gpt2_config(hf, what)
    return WeightsInfo(kind, path, hf)


def read_metadata(path: Path, what: str) -> dict[str, str]:
    """A safetensors file's metadata, read from its header (no tensor is loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        hint = " (`pibench train SUITE` writes a suite's checkpoints)" if path.suffix == ".safetensors" else ""
        raise PibenchError(f"{what}: no such file{hint}") from None
    except Exception as err:  # safetensors' own error type is not exported
        raise PibenchError(f"{what} is not a readable safetensors file ({first_line(err)})") from None


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


def _check_gpt2_config(hf: Any, what: str) -> None:
    """A GPT-2's config.json, each field honoured or ignored (`HONOURED`, `IGNORED`); a value pibench
    cannot run, or a field it does not know, is one line naming it."""
    if not isinstance(hf, dict) or hf.get("model_type") != "gpt2":
        kind = hf.get("model_type") if isinstance(hf, dict) else None
        raise PibenchError(f"{what}: config.json is not a GPT-2's (model_type {kind!r})")
    unknown = sorted(k for k in hf if k not in HONOURED and k not in IGNORED)
    if unknown:
        raise PibenchError(
            f"{what}: config.json has {', '.join(repr(k) for k in unknown[:3])}, which pibench does not know for "
            "GPT-2 and so cannot say it leaves the output as it is (docs/weights.md lists the fields it reads)"
        )
    act = hf.get("activation_function", "gelu_new")
    if GELU_FORMS.get(act) is None:
        raise PibenchError(f"{what}: activation_function {act!r} is not a GELU pibench runs (gelu_new, gelu)")
    width = hf.get("n_inner")
    if width is not None and width != 4 * hf.get("n_embd", 0):
        raise PibenchError(f"{what}: n_inner {width!r} is not 4 x n_embd; pibench's FFN is 4 d wide")
    if hf.get("layer_norm_epsilon", LAYERNORM_EPS) != LAYERNORM_EPS:
        raise PibenchError(
            f"{what}: layer_norm_epsilon {hf.get('layer_norm_epsilon')!r} is not pibench's {LAYERNORM_EPS:g}; "
            "pibench's LayerNorm would compute another output"
        )
    must = {
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "add_cross_attention": False,
        "is_encoder_decoder": False,
    }
    for key, value in must.items():
        if hf.get(key, value) != value:
            raise PibenchError(f"{what}: {key} {hf[key]!r}: pibench runs GPT-2 with {key} {value!r}")
    if hf.get("pruned_heads"):
        raise PibenchError(f"{what}: pruned_heads {str(hf['pruned_heads'])[:40]}: pibench runs every head")


def hf_gelu(hf: Mapping[str, Any]) -> str:
    """The GELU form of a GPT-2's activation_function: "tanh" or "erf"."""
    return GELU_FORMS[hf.get("activation_function", "gelu_new")]


def _check_gpt2_run(info: WeightsInfo, cfg: ModelConfig, gelu: str | None) -> None:
    """A GPT-2 folder against the variant and suite that would run it."""
    what, hf = info.what, info.about
    other = {k: getattr(cfg, k) for k, v in GPT2.items() if getattr(cfg, k) != v}
    if other:
        raise PibenchError(f"{what} is GPT-2 (SM + LN + G); the variant differs: {other}")
    dims = {"L": "n_layer", "H": "n_head", "d": "n_embd"}
    dims |= {"vocab": "vocab_size"} if cfg.scope == "end_to_end" else {}
    for mine, theirs in dims.items():
        if hf.get(theirs, 50257 if theirs == "vocab_size" else None) != getattr(cfg, mine):
            raise PibenchError(f"{what}: {theirs} is {hf.get(theirs)}, the suite's {mine} is {getattr(cfg, mine)}")
    positions = hf.get("n_positions", hf.get("n_ctx", 1024))
    if cfg.context > int(positions):
        raise PibenchError(f"{what}: n_positions {positions} is below the suite's {cfg.context} positions")
    if cfg.scope == "end_to_end" and not hf.get("tie_word_embeddings", True):
        raise PibenchError(
            f"{what}: tie_word_embeddings false: its LM head is its own matrix, and pibench's end-to-end GPT-2 "
            "ties the head to wte (scope: layers runs the stack alone, without a head)"
        )
    form = hf_gelu(hf)
    if gelu is not None and form != gelu:
        act = hf.get("activation_function", "gelu_new")
        raise PibenchError(
            f"{what}: activation_function {act!r} is GELU's {form} form, and the backend computes the {gelu} form; "
            f"set its gelu setting to {form} (e.g. crypten: {{gelu: {form}}})"
        )
