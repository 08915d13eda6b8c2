"""Suites: YAML files naming a model size and the variants to cost or run, validated on load.

    name: gpt2_t128                   # optional, defaults to the file's stem
    description: GPT-2 small at T=128
    model: {L: 12, H: 12, d: 768, T: 128}
    variants:
      - sm_ln_g                       # a registry name ...
      - variant: sm_scfuffn_pruned    # ... or a mapping with architecture overrides
        overrides: {ffn_blocks_kept: 6}
        name: pruned6                 # optional key in results (default: the variant name)
    seed: 0                           # synthetic weights and input of MPC runs
    crypten:                          # backend settings (pibench.mpc.settings), CrypTen's defaults
      provider: TFP
      precision_bits: 16
      gelu: tanh
      functions: {exp_iterations: 8}
    network:                          # pibench.network profiles
      emulate: paper-wan              # default of `pibench run --emulate` (absent: loopback)
      project: [lan, paper-wan]       # projected latencies the report shows (this is the default)

Every problem is a `PibenchError` naming the file, the line and the key; YAML never runs code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as schema

from pibench.config import DIMENSIONS, FIELDS, ModelConfig
from pibench.errors import PibenchError, did_you_mean
from pibench.mpc.settings import CrypTenFunctions, CrypTenSettings
from pibench.network import DEFAULT_PROJECTIONS, NetworkProfile, parse_profile
from pibench.variants import VARIANTS, Variant

STRICT = ConfigDict(extra="forbid")  # fields are Strict*: no "12" -> 12 coercion


@schema(frozen=True, config=STRICT)
class Dims:
    L: StrictInt = Field(ge=1)
    H: StrictInt = Field(ge=1)
    d: StrictInt = Field(ge=1)
    T: StrictInt = Field(ge=1)


@schema(frozen=True, config=STRICT)
class EntrySpec:
    variant: StrictStr
    overrides: dict[StrictStr, Any] = Field(default_factory=dict)
    name: StrictStr | None = None


@schema(frozen=True, config=STRICT)
class NetworkSpec:
    """emulate: the link `pibench run` emulates by default (None: loopback); project: the profiles
    whose projected latency the report shows."""

    emulate: StrictStr | None = None
    project: list[StrictStr] = Field(default_factory=lambda: list(DEFAULT_PROJECTIONS))


def _entry_shorthand(value: object) -> object:
    return {"variant": value} if isinstance(value, str) else value


@schema(frozen=True, config=STRICT)
class SuiteSpec:
    model: Dims
    variants: list[Annotated[EntrySpec, BeforeValidator(_entry_shorthand)]] = Field(min_length=1)
    name: StrictStr | None = None
    description: StrictStr = ""
    seed: StrictInt = 0
    crypten: CrypTenSettings = dataclasses.field(default_factory=CrypTenSettings)
    network: NetworkSpec = dataclasses.field(default_factory=NetworkSpec)


KNOWN_KEYS = {
    *(
        f.name
        for cls in (SuiteSpec, EntrySpec, CrypTenSettings, CrypTenFunctions, NetworkSpec)
        for f in dataclasses.fields(cls)
    ),
    *FIELDS,
}


@dataclass(frozen=True)
class SuiteEntry:
    """One resolved variant of a suite: its result key, registry entry and full config."""

    name: str
    variant: Variant
    config: ModelConfig


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    description: str
    dims: dict[str, int]
    entries: tuple[SuiteEntry, ...]
    source: dict[str, Any]  # the YAML as loaded, for result records
    seed: int = 0  # of the synthetic weights and inputs of MPC runs
    crypten: CrypTenSettings = dataclasses.field(default_factory=CrypTenSettings)
    emulate: NetworkProfile | None = None
    project: tuple[NetworkProfile, ...] = ()


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at path `loc`, or of its deepest existing parent."""
    line = node.start_mark.line + 1 if node else None
    for key in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    line, child = k.start_mark.line + 1, v
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _describe(err: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    """The key path and a one-line message for one pydantic error."""
    loc = tuple(p for p in err["loc"] if p not in ("function-before",))
    kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
    key = str(loc[-1]) if loc else ""
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return loc, f"unknown key '{key}'{did_you_mean(key, KNOWN_KEYS)}"
    if kind in ("missing", "missing_argument"):
        return loc, f"missing required key '{key}'"
    if "input" in err and kind != "value_error":
        msg = f"{msg} (got {err['input']!r})"
    return loc, msg


def _most_telling(err: ValidationError) -> dict[str, Any]:
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
        where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
        return PibenchError(f"{self.path}{f':{line}' if line else ''}: {where + ': ' if where else ''}{msg}")


def load_suite(path: str | Path) -> Suite:
    """Read, validate and resolve a suite file; any problem is a one-line `PibenchError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PibenchError(f"suite file '{path}' not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PibenchError(f"suite file '{path}' cannot be read: {err}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PibenchError(f"{path}{line}: invalid YAML: {problem}") from None
    file = _SuiteFile(path, root)
    if not isinstance(data, dict):
        raise file.error((), "a suite must be a mapping with keys 'model' and 'variants'")
    try:
        spec = TypeAdapter(SuiteSpec).validate_python(data)
    except ValidationError as err:
        raise file.error(*_describe(_most_telling(err))) from None

    dims = {k: getattr(spec.model, k) for k in DIMENSIONS}
    try:
        ModelConfig(**dims)
    except ValidationError as err:
        raise file.error(("model",), _describe(err.errors()[0])[1]) from None
    entries: list[SuiteEntry] = []
    for i, item in enumerate(spec.variants):
        loc: tuple[Any, ...] = ("variants", i) if isinstance(data["variants"][i], str) else ("variants", i, "variant")
        if item.variant not in VARIANTS:
            raise file.error(loc, f"unknown variant '{item.variant}'{did_you_mean(item.variant, VARIANTS.names())}")
        for key in item.overrides:
            if key in DIMENSIONS:
                raise file.error(("variants", i, "overrides", key), f"'{key}' is a dimension; set it under 'model'")
        variant = VARIANTS.get(item.variant)
        try:
            cfg = variant.config(dims, item.overrides)
        except ValidationError as err:
            sub, msg = _describe(_most_telling(err))
            raise file.error(("variants", i, "overrides", *sub), msg) from None
        name = item.name or item.variant
        if any(e.name == name for e in entries):
            raise file.error(("variants", i), f"'{name}' appears twice; give one entry a distinct 'name'")
        entries.append(SuiteEntry(name, variant, cfg))
    profiles = []
    for loc, text in [(("network", "emulate"), spec.network.emulate)] + [
        (("network", "project", i), t) for i, t in enumerate(spec.network.project)
    ]:
        try:
            profiles.append(parse_profile(text) if text is not None else None)
        except PibenchError as err:
            raise file.error(loc, str(err)) from None
    return Suite(
        spec.name or path.stem,
        str(path),
        spec.description,
        dims,
        tuple(entries),
        data,
        spec.seed,
        spec.crypten,
        profiles[0],
        tuple(profiles[1:]),
    )
