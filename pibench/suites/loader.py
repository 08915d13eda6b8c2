"""Suites: YAML files naming a model size and the variants to cost or run, validated on load.

    name: gpt2_t128                   # optional, defaults to the file's stem; [A-Za-z0-9._-]
    description: GPT-2 small at T=128
    model: {L: 12, H: 12, d: 768, T: 128}
    variants:
      - sm_ln_g                       # a registry name ...
      - variant: sm_scfuffn_pruned    # ... or a mapping with architecture overrides
        overrides: {ffn_blocks_kept: 6}
        name: pruned6                 # optional key in results (default: the variant name)
        label: SM + ScFuFFN (6 blocks) # optional row label (default: the variant's, plus the name if renamed)
    seed: 0                           # synthetic weights and input of MPC runs
    repeats: 3                        # runs of each measured step (default: the backend's)
    backend: crypten                  # pibench.backends; default crypten
    crypten:                          # that backend's settings (its settings schema), defaults if absent
      provider: TFP
      functions: {exp_iterations: 8}
    network:                          # pibench.counting.network profiles
      emulate: paper-wan              # default of `pibench run --emulate` (absent: loopback)
      project: [lan, paper-wan]       # projected latencies the report shows (this is the default)

Every problem is a `PibenchError` naming the file, the line and the key; YAML never runs code. What
is read is bounded: a regular file of at most `MAX_BYTES`, at most `MAX_NODES` YAML nodes once
aliases are expanded, nesting at most `MAX_DEPTH` deep, dimensions at most `MAX_DIM`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as schema

from pibench.backends import BACKENDS, DEFAULT_BACKEND
from pibench.counting.network import DEFAULT_PROJECTIONS, NetworkProfile, parse_profile
from pibench.models.config import DIMENSIONS, FIELDS, ModelConfig, Scope
from pibench.models.variants import VARIANTS, Variant
from pibench.suites.train_section import TrainSettings
from pibench.util.errors import PibenchError, did_you_mean, shorten
from pibench.util.files import SUITE, expect

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)  # fields are Strict*: no "12" -> 12 coercion
MAX_BYTES = 256 * 1024
MAX_NODES = 20_000
MAX_DEPTH = 32
MAX_DIM = 2**31 - 1
MAX_SEED = 2**62
MAX_REPEATS = 100  # the parties seed torch generators with seed and seed + 1
MAX_NEW_TOKENS = 4096
MAX_VOCAB = 1_000_000
MAX_WINDOWS = 4096
DEFAULT_WINDOWS = 8  # accuracy windows per variant where trained weights make it the default
# config fields a suite sets for every entry at once, and where
SUITE_LEVEL = {
    "new_tokens": "set the tokens to generate under 'generate'",
    "scope": "set 'scope' at the top of the suite (every variant runs in one scope)",
    "vocab": "set 'vocab' at the top of the suite, beside 'scope: end_to_end'",
}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # a file-name part: no '/', no leading '.', no NUL

Name = Annotated[StrictStr, Field(pattern=NAME_PATTERN)]
Dim = Annotated[StrictInt, Field(ge=1, le=MAX_DIM)]


@schema(frozen=True, config=STRICT)
class Dims:
    """The model's size; with `weights:`, the ones left out are taken from the weights' own description
    (`pibench.models.weight_files`: a GPT-2's config.json gives L, H and d, a checkpoint also T)."""

    L: Dim | None = None
    H: Dim | None = None
    d: Dim | None = None
    T: Dim | None = None


@schema(frozen=True, config=STRICT)
class GenerateSpec:
    """What to generate after the prompt of T tokens (`ModelConfig.new_tokens`)."""

    new_tokens: StrictInt = Field(ge=1, le=MAX_NEW_TOKENS)


@schema(frozen=True, config=STRICT)
class EntrySpec:
    variant: StrictStr
    overrides: dict[StrictStr, Any] = Field(default_factory=dict)
    name: Name | None = None
    label: StrictStr | None = Field(default=None, min_length=1, max_length=60)  # its row in tables and plots
    train: dict[StrictStr, Any] = Field(default_factory=dict)  # this entry's changes to the suite's `train:`


@schema(frozen=True, config=STRICT)
class NetworkSpec:
    """emulate: the link `pibench run` emulates by default (None: loopback); project: the profiles
    whose projected latency the report shows."""

    emulate: StrictStr | None = None
    project: list[StrictStr] = Field(default_factory=lambda: list(DEFAULT_PROJECTIONS), max_length=16)


@schema(frozen=True, config=STRICT)
class WeightsSpec:
    """Where the server's weights come from (`pibench.models.checkpoints`); absent: synthetic, drawn
    from the suite's seed. One of: a pibench checkpoint file, a local Hugging Face GPT-2 directory;
    a relative path is the suite file's folder's."""

    checkpoint: StrictStr | None = Field(default=None, min_length=1, max_length=4096)
    huggingface: StrictStr | None = Field(default=None, min_length=1, max_length=4096)


@schema(frozen=True, config=STRICT)
class AccuracySpec:
    """Accuracy under MPC on real text (`pibench.measuring.accuracy`): `windows` windows of T + 1 bytes
    (0: none), from `text` (a file; a relative path is the suite file's folder's) or, absent, from the
    quality corpus's validation split (the windows `pibench train` evaluates first)."""

    windows: StrictInt = Field(default=DEFAULT_WINDOWS, ge=0, le=MAX_WINDOWS)
    text: StrictStr | None = Field(default=None, min_length=1, max_length=4096)


@dataclass(frozen=True)
class Accuracy:
    """A suite's resolved accuracy pass: windows per variant, and the text file (None: the corpus)."""

    windows: int
    text: str | None = None


def _entry_shorthand(value: object) -> object:
    return {"variant": value} if isinstance(value, str) else value


@schema(frozen=True, config=STRICT)
class SuiteSpec:
    model: Dims
    variants: list[Annotated[EntrySpec, BeforeValidator(_entry_shorthand)]] = Field(min_length=1, max_length=256)
    name: Name | None = None
    description: StrictStr = Field(default="", max_length=1000)
    seed: StrictInt = Field(default=0, ge=0, le=MAX_SEED)
    repeats: StrictInt | None = Field(default=None, ge=1, le=MAX_REPEATS)
    generate: GenerateSpec | None = None  # absent: the prefill alone
    scope: Scope = "layers"  # `ModelConfig.scope`: the stack alone, or from token to token
    vocab: StrictInt | None = Field(default=None, ge=2, le=MAX_VOCAB)  # end_to_end only (default: GPT-2's)
    backend: StrictStr = DEFAULT_BACKEND
    network: NetworkSpec = dataclasses.field(default_factory=NetworkSpec)
    train: TrainSettings = dataclasses.field(default_factory=TrainSettings)  # `pibench train`
    weights: WeightsSpec | None = None  # absent: synthetic weights from `seed`
    accuracy: AccuracySpec | None = None  # absent: on with a pibench checkpoint (DEFAULT_WINDOWS), else off


def _field_names(cls: type) -> set[str]:
    """Field names of a (pydantic) dataclass and of the dataclasses its defaults nest."""
    names = set()
    for f in dataclasses.fields(cls):
        names.add(f.name)
        if dataclasses.is_dataclass(f.default_factory):
            names |= _field_names(f.default_factory)
    return names


KNOWN_KEYS = {
    *(
        name
        for cls in (SuiteSpec, EntrySpec, NetworkSpec, Dims, GenerateSpec, TrainSettings, WeightsSpec, AccuracySpec)
        for name in _field_names(cls)
    ),
    *FIELDS,
    *BACKENDS.names(),
    *(name for entry in BACKENDS for name in _field_names(entry.value.settings_type)),
}


@dataclass(frozen=True)
class SuiteEntry:
    """One resolved variant of a suite: its result key, registry entry, full config and the label of
    its row in tables (the suite's `label:`; else the registry's, with the entry's own name added
    where the entry renames the variant)."""

    name: str
    variant: Variant
    config: ModelConfig
    label: str = ""
    train: TrainSettings | None = None  # `pibench train` settings where the entry changes the suite's


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    description: str
    dims: dict[str, int]
    entries: tuple[SuiteEntry, ...]
    source: dict[str, Any]  # the YAML as loaded, for result records
    text: str  # the file's text as read (parties get this, never the file again)
    seed: int = 0  # of the synthetic weights and inputs of MPC runs
    repeats: int | None = None  # runs of each measured step (None: the backend's default)
    backend: str = DEFAULT_BACKEND
    settings: Any = None  # the backend's settings (its `settings_type`)
    emulate: NetworkProfile | None = None
    project: tuple[NetworkProfile, ...] = ()
    train: TrainSettings = dataclasses.field(default_factory=TrainSettings)
    weights: tuple[str, str] | None = None  # (kind, path): "checkpoint" or "huggingface"; None: synthetic
    accuracy: Accuracy | None = None  # accuracy under MPC on real text after each variant's costs

    @property
    def checkpoint_dir(self) -> str | None:
        """The folder of per-variant checkpoints the suite names (`weights: {checkpoint: DIR}`: a folder, or
        a path not ending in .safetensors), where `pibench train` writes and `pibench run` reads."""
        if self.weights is None or self.weights[0] != "checkpoint":
            return None
        path = Path(self.weights[1])
        return str(path) if path.is_dir() or path.suffix != ".safetensors" else None

    def weights_of(self, entry: str) -> tuple[str, str] | None:
        """(kind, path) of entry `entry`'s weights: in a checkpoint folder (`checkpoint_dir`) its own file,
        NAME.safetensors; any other source serves every entry."""
        folder = self.checkpoint_dir
        return ("checkpoint", str(Path(folder) / f"{entry}.safetensors")) if folder else self.weights

    @property
    def new_tokens(self) -> int:
        """Tokens generated after the prompt (0: the prefill alone; every entry generates as many)."""
        return self.entries[0].config.new_tokens

    @property
    def scope(self) -> str:
        """`ModelConfig.scope` of every entry: "layers" or "end_to_end"."""
        return self.entries[0].config.scope

    @property
    def settings_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.settings)

    @property
    def digest(self) -> str:
        """SHA-256 of what a run of this suite depends on (dimensions, entries, seed, backend and its
        settings): parties on two hosts compare it before running."""
        what = {
            "dims": self.dims,
            "seed": self.seed,
            "repeats": self.repeats,
            "backend": self.backend,
            "settings": self.settings_dict,
            "entries": [(e.name, e.variant.name, e.config.as_dict()) for e in self.entries],
            "weights": self.source.get("weights"),  # as written: hosts may hold the suite in other folders
            "accuracy": self.accuracy and self.accuracy.windows,
        }
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at path `loc`, or of its deepest existing parent."""
    line = node.start_mark.line + 1 if node else None
    for key in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if getattr(k, "value", None) == str(key):
                    line, child = k.start_mark.line + 1, v
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


# Names a user may write for a dimension, each with the key it means (`model: {heads: 12}` -> H)
DIMENSION_SYNONYMS = {
    **dict.fromkeys(("layers", "n_layer", "n_layers", "num_layers", "num_hidden_layers", "depth"), "L"),
    **dict.fromkeys(("heads", "n_head", "n_heads", "num_heads", "num_attention_heads"), "H"),
    **dict.fromkeys(("d_model", "hidden", "hidden_size", "n_embd", "width", "dim"), "d"),
    **dict.fromkeys(("tokens", "seq_len", "sequence_length", "length", "context", "prompt", "n_positions"), "T"),
}


def _sections() -> dict[str, set[str]]:
    """Each section of a suite and the keys it takes ("": the top level)."""
    out = {
        "": {f.name for f in dataclasses.fields(SuiteSpec)} | set(BACKENDS.names()),
        "model": set(DIMENSIONS),
        "variants[]": {f.name for f in dataclasses.fields(EntrySpec)},
        "variants[].overrides": set(FIELDS) - set(DIMENSIONS) - set(SUITE_LEVEL),
        "train": _field_names(TrainSettings),
        "network": {f.name for f in dataclasses.fields(NetworkSpec)},
        "generate": {f.name for f in dataclasses.fields(GenerateSpec)},
        "weights": {f.name for f in dataclasses.fields(WeightsSpec)},
        "accuracy": {f.name for f in dataclasses.fields(AccuracySpec)},
    }
    return out | {entry.name: _field_names(entry.value.settings_type) for entry in BACKENDS}


def _section(loc: tuple[Any, ...]) -> str:
    """The section a key at path `loc` (the key last) is in: "model", "variants[].overrides", ..."""
    parts = [str(p) for p in loc[:-1] if not isinstance(p, int)]
    if parts[:1] == ["variants"]:
        return "variants[]" + "".join(f".{p}" for p in parts[1:2])
    return parts[0] if parts else ""


def _unknown_key(loc: tuple[Any, ...]) -> str:
    """The message for an unknown key at `loc`: a suggestion from its own section (never the key itself,
    a dimension's other names too), else the section where that key belongs."""
    key = str(loc[-1]) if loc else ""
    sections = _sections()
    here = _section(loc)
    own = sections.get(here, KNOWN_KEYS)
    if here == "model" and key.lower() in DIMENSION_SYNONYMS:
        return f"unknown key {shorten(key)} (did you mean '{DIMENSION_SYNONYMS[key.lower()]}'?)"
    suggestion = did_you_mean(key[:100], own)
    if suggestion:
        return f"unknown key {shorten(key)}{suggestion}"
    homes = [name for name, keys in sections.items() if key in keys and name != here]
    if homes:
        where = " or ".join(f"'{h}'" if h else "the top level" for h in homes[:3])
        return f"unknown key {shorten(key)} here; it belongs under {where}"
    return f"unknown key {shorten(key)}{did_you_mean(key[:100], KNOWN_KEYS)}"


def _describe(err: Any, where: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], str]:
    """The key path and a one-line message for one pydantic error (`where`: the path of what was
    validated, for the section an unknown key is in)."""
    loc = tuple(p for p in err["loc"] if p not in ("function-before",))
    kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
    key = str(loc[-1]) if loc else ""
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return loc, _unknown_key((*where, *loc))
    if kind in ("missing", "missing_argument"):
        return loc, f"missing required key '{key}'"
    if kind == "string_pattern_mismatch":
        msg = "must be 1 to 64 of A-Z a-z 0-9 . _ - starting with a letter or digit"
    if "input" in err and kind != "value_error":
        msg = f"{msg} (got {shorten(err['input'])})"
    return loc, msg.splitlines()[0]


def _most_telling(err: ValidationError) -> Any:
    """An unknown key first: a misspelt key also shows up as the correct key missing."""
    errors = err.errors()
    extra = [e for e in errors if e["type"] in ("extra_forbidden", "unexpected_keyword_argument")]
    return (extra or errors)[0]


class _SuiteFile:
    """Error reporting bound to one file and its YAML node tree."""

    def __init__(self, path: Path, root: yaml.Node | None) -> None:
        self.path, self.root = path, root

    def error(self, loc: tuple[Any, ...], msg: str) -> PibenchError:
        line = _line_of(self.root, loc)
        where = ".".join(f"[{p}]" if isinstance(p, int) else str(p)[:40] for p in loc).replace(".[", "[")
        return PibenchError(f"{self.path}{f':{line}' if line else ''}: {where + ': ' if where else ''}{msg}")


def read_suite_text(path: Path) -> str:
    """The file's text: a regular file (not a FIFO or a device) of at most MAX_BYTES, UTF-8."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise PibenchError(f"suite file '{path}' is not a regular file")
        if info.st_size > MAX_BYTES:
            raise PibenchError(f"suite file '{path}' is {info.st_size} bytes; suites are at most {MAX_BYTES}")
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise PibenchError(f"suite file '{path}' not found") from None
    except OSError as err:
        raise PibenchError(f"suite file '{path}' cannot be read: {err.strerror or err}") from None
    if len(data) > MAX_BYTES:
        raise PibenchError(f"suite file '{path}' is over {MAX_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PibenchError(f"suite file '{path}' is not UTF-8 text") from None


def _check_size(path: Path, root: yaml.Node | None) -> None:
    """Refuse documents that nest too deep or expand (through aliases) to too many nodes, before
    anything walks them: a few lines of aliases can stand for billions of nodes."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        line = node.start_mark.line + 1
        if depth > MAX_DEPTH:
            raise PibenchError(f"{path}:{line}: nested more than {MAX_DEPTH} levels deep")
        if id(node) in open_nodes:
            raise PibenchError(f"{path}:{line}: an alias refers to a node that contains it")
        if id(node) in sizes:
            return sizes[id(node)]
        open_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            n = 1 + sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            n = 1 + sum(size(v, depth + 1) for v in node.value)
        else:
            n = 1
        if n > MAX_NODES:
            raise PibenchError(f"{path}:{line}: expands to more than {MAX_NODES} YAML nodes")
        open_nodes.discard(id(node))
        sizes[id(node)] = n
        return n

    if root is not None:
        size(root, 0)


def _check_duplicates(path: Path, root: yaml.Node | None) -> None:
    """Refuse a key given twice in one mapping (YAML loaders keep the last one silently)."""
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[str, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    line = key.start_mark.line + 1
                    if key.value in lines:
                        first = lines[key.value]
                        where = f"on line {line}" if first == line else f"(lines {first} and {line})"
                        raise PibenchError(f"{path}:{line}: key {shorten(key.value)} given twice {where}")
                    lines[key.value] = line
                stack += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


def _parse(path: Path, text: str) -> tuple[yaml.Node | None, Any]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_size(path, root)
        _check_duplicates(path, root)
        return root, yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PibenchError(f"{path}{line}: invalid YAML: {problem}") from None
    except RecursionError:
        raise PibenchError(f"{path}: nested too deep to read") from None


def _backend_settings(file: _SuiteFile, data: dict[str, Any], backend: str) -> Any:
    """Every backend section present is validated (a typo in another backend's section is still an
    error); the chosen backend's settings, its defaults where the section is absent."""
    if backend not in BACKENDS:
        raise file.error(
            ("backend",),
            f"unknown backend '{backend}'{did_you_mean(backend, BACKENDS.names())}; "
            f"known: {', '.join(BACKENDS.names())}",
        )
    chosen = None
    for entry in BACKENDS:
        impl = entry.value
        section = data.get(entry.name)
        try:
            settings: Any = TypeAdapter(impl.settings_type).validate_python({} if section is None else section)
        except ValidationError as err:
            loc, msg = _describe(_most_telling(err), (entry.name,))
            raise file.error((entry.name, *loc), msg) from None
        if entry.name == backend:
            chosen = settings
    return chosen


def _entries(file: _SuiteFile, data: dict[str, Any], spec: SuiteSpec, dims: dict[str, int]) -> tuple[SuiteEntry, ...]:
    entries: list[SuiteEntry] = []
    for i, item in enumerate(spec.variants):
        loc: tuple[Any, ...] = ("variants", i) if isinstance(data["variants"][i], str) else ("variants", i, "variant")
        if item.variant not in VARIANTS:
            msg = (
                f"unknown variant {shorten(item.variant)}{did_you_mean(item.variant, VARIANTS.names())}; "
                "`pibench list` shows them; one of your own file: `pibench --include FILE ...`"
            )
            raise file.error(loc, msg)
        for key in item.overrides:
            if key in DIMENSIONS:
                raise file.error(("variants", i, "overrides", key), f"'{key}' is a dimension; set it under 'model'")
            if key in SUITE_LEVEL:
                raise file.error(("variants", i, "overrides", key), SUITE_LEVEL[key])
        variant = VARIANTS.get(item.variant)
        try:
            cfg = variant.config(dims, item.overrides)
            if spec.generate:
                cfg = cfg.replace(new_tokens=spec.generate.new_tokens)
            cfg = cfg.replace(scope=spec.scope, **({"vocab": spec.vocab} if spec.vocab else {}))
        except ValidationError as err:
            sub, msg = _describe(_most_telling(err), ("variants", i, "overrides"))
            raise file.error(("variants", i, "overrides", *sub), msg) from None
        name = item.name or item.variant
        if any(e.name == name for e in entries):
            raise file.error(("variants", i), f"'{name}' appears twice; give one entry a distinct 'name'")
        label = item.label or (variant.label if name == item.variant else f"{variant.label} ({name})")
        if any(e.label == label for e in entries):
            raise file.error(("variants", i), f"label '{label}' appears twice; give one entry a distinct 'label'")
        entries.append(SuiteEntry(name, variant, cfg, label, _entry_train(file, spec, item, i)))
    return tuple(entries)


def _entry_train(file: _SuiteFile, spec: SuiteSpec, item: EntrySpec, i: int) -> TrainSettings | None:
    if not item.train:
        return None
    try:
        return TypeAdapter(TrainSettings).validate_python(dataclasses.asdict(spec.train) | item.train)
    except ValidationError as err:
        sub, msg = _describe(_most_telling(err), ("variants", i, "train"))
        raise file.error(("variants", i, "train", *sub), msg) from None


def _profiles(file: _SuiteFile, spec: SuiteSpec) -> tuple[NetworkProfile | None, tuple[NetworkProfile, ...]]:
    try:
        emulate = parse_profile(spec.network.emulate) if spec.network.emulate is not None else None
    except PibenchError as err:
        raise file.error(("network", "emulate"), str(err)) from None
    project = []
    for i, text in enumerate(spec.network.project):
        try:
            project.append(parse_profile(text))
        except PibenchError as err:
            raise file.error(("network", "project", i), str(err)) from None
    return emulate, tuple(project)


def load_suite(
    path: str | Path,
    text: str | None = None,
    backend: str | None = None,
    device: str | None = None,
    repeats: int | None = None,
) -> Suite:
    """Read, validate and resolve a suite file (or `text` said to come from `path`), run by its
    `backend:` or by `backend` (a command line's --backend), on `device` where given (--device, for a
    backend whose settings have one); any problem is a one-line `PibenchError`."""
    path = Path(path)
    text = read_suite_text(path) if text is None else text
    root, data = _parse(path, text)
    file = _SuiteFile(path, root)
    expect(data, path, SUITE)
    if not isinstance(data, dict):
        raise file.error((), "a suite must be a mapping with keys 'model' and 'variants'")
    if bad := [k for k in data if not isinstance(k, str)]:
        raise file.error((), f"keys must be text, not {shorten(bad[0])}")
    try:
        spec = TypeAdapter(SuiteSpec).validate_python({k: v for k, v in data.items() if k not in BACKENDS})
    except ValidationError as err:
        raise file.error(*_describe(_most_telling(err))) from None
    if spec.vocab is not None and spec.scope != "end_to_end":
        raise file.error(("vocab",), "'vocab' is the end-to-end scope's; add 'scope: end_to_end' or remove it")
    if backend is not None and backend not in BACKENDS:
        known = ", ".join(BACKENDS.names())
        raise PibenchError(
            f"--backend: unknown backend '{backend}'{did_you_mean(backend, BACKENDS.names())}; known: {known}"
        )
    backend = backend or spec.backend
    settings = _backend_settings(file, data, backend)
    if device is not None:
        if not hasattr(settings, "device"):
            raise PibenchError(f"--device: backend {backend} has no device setting (it runs on the CPU)")
        if device not in ("cpu", "cuda"):
            raise PibenchError(f"--device must be cpu or cuda, not '{device[:20]}'")
        settings = dataclasses.replace(settings, device=device)
    weights = None
    if spec.weights is not None:
        given = [(k, v) for k, v in dataclasses.asdict(spec.weights).items() if v is not None]
        if len(given) != 1:
            raise file.error(("weights",), "name one source: 'checkpoint: FILE' or 'huggingface: DIRECTORY'")
        kind, where = given[0]
        weights = (kind, str(path.parent / Path(where).expanduser()))
    dims, vocab = _dims(file, spec, data, weights)
    try:
        ModelConfig(L=dims["L"], H=dims["H"], d=dims["d"], T=dims["T"])
    except ValidationError as err:
        raise file.error(("model",), _describe(err.errors()[0])[1]) from None
    if vocab is not None and spec.vocab is None and spec.scope == "end_to_end":
        spec = dataclasses.replace(spec, vocab=vocab)
    entries = _entries(file, data, spec, dims)
    emulate, project = _profiles(file, spec)
    accuracy = _accuracy(file, spec, path, weights)
    return Suite(
        spec.name or _stem_name(path),
        str(path),
        spec.description,
        dims,
        entries,
        data,
        text,
        spec.seed,
        repeats or spec.repeats,
        backend,
        settings,
        emulate,
        project,
        spec.train,
        weights,
        accuracy,
    )


def _dims(
    file: _SuiteFile, spec: SuiteSpec, data: dict[str, Any], weights: tuple[str, str] | None
) -> tuple[dict[str, int], int | None]:
    """The model's dimensions: as the suite gives them, the ones it leaves out taken from its weights'
    description (`pibench.models.weight_files.read_info`), with the vocabulary those weights fix (a GPT-2's;
    None elsewhere). A dimension neither gives is an error naming it."""
    given = {k: getattr(spec.model, k) for k in DIMENSIONS}
    left = [k for k, v in given.items() if v is None]
    if not left:
        return {k: int(v) for k, v in given.items()}, _weights_vocab(weights)
    if weights is None:
        raise file.error(("model", left[0]), f"missing required key '{left[0]}'")
    from pibench.models.weight_files import read_info

    kind, where = weights
    source = where
    if kind == "checkpoint" and (Path(where).is_dir() or Path(where).suffix != ".safetensors"):
        first = data["variants"][0]
        name = first if isinstance(first, str) else first.get("name") or first.get("variant")
        source = str(Path(where) / f"{name}.safetensors")
    try:
        found = read_info(kind, source).dims()
    except PibenchError as err:
        raise file.error(("model", left[0]), f"not given, and the weights cannot say it: {err}") from None
    if missing := [k for k in left if k not in found]:
        gives = ", ".join(k for k in DIMENSIONS if k in found)
        raise file.error(("model", missing[0]), f"missing required key '{missing[0]}' (the weights give {gives})")
    return {k: int(given[k] if given[k] is not None else found[k]) for k in DIMENSIONS}, found.get("vocab")


def _weights_vocab(weights: tuple[str, str] | None) -> int | None:
    """A GPT-2 folder's vocabulary (None: no weights, a checkpoint, or a folder that cannot be read: the
    check before a run says why)."""
    if weights is None or weights[0] != "huggingface":
        return None
    from pibench.models.weight_files import read_info

    try:
        return read_info(*weights).dims().get("vocab")
    except PibenchError:
        return None


def _accuracy(file: _SuiteFile, spec: SuiteSpec, path: Path, weights: tuple[str, str] | None) -> Accuracy | None:
    """The accuracy pass the suite asks for: its `accuracy:` section, else DEFAULT_WINDOWS windows where the
    weights are a pibench checkpoint (a trained byte model); refused where there is no byte model to run."""
    given = spec.accuracy
    if given is None:
        on = weights is not None and weights[0] == "checkpoint" and spec.scope == "layers"
        return Accuracy(DEFAULT_WINDOWS) if on else None
    if given.windows == 0:
        return None
    if weights is None or weights[0] != "checkpoint":
        why = (
            "a Hugging Face GPT-2 needs tokenised text, which pibench does not make"
            if weights
            else "synthetic weights predict nothing"
        )
        raise file.error(("accuracy",), f"needs trained weights, 'weights: {{checkpoint: ...}}' ({why})")
    if spec.scope != "layers":
        raise file.error(("accuracy",), "runs the byte model `pibench train` keeps, at 'scope: layers'")
    text = str(path.parent / Path(given.text).expanduser()) if given.text else None
    return Accuracy(given.windows, text)


def _stem_name(path: Path) -> str:
    """The file's stem as a suite name, checked like a `name:` key (it names the record file)."""
    try:
        return TypeAdapter(Name).validate_python(path.stem)
    except ValidationError:
        raise PibenchError(
            f"{path}: the file name '{shorten(path.stem)}' cannot name results; add a 'name:' key "
            "(1 to 64 of A-Z a-z 0-9 . _ -)"
        ) from None
