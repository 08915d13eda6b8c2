"""Calibrated cost model: predict bytes, rounds and seconds of a variant under a backend without running it.

A calibration maps every call of the symbolic tally (`Tally.calls`, kinds and signatures from
`pibench.models.opkinds.CALLS`) to bytes, rounds and seconds. For a backend whose counts are deterministic
(CrypTen) the byte and round models are exact:

    kind                 signature                     bytes (both parties)            rounds
    gelu, relu           (elements,)                   a * elements                    constant
    layernorm            (rows, cols)                  a*rows*cols + b*rows + c*cols   constant
    linear, attn_matmul  (elems a, elems b, MACs)      a * (elems a + elems b)         constant
    mul                  (elems a, elems b)            a * (elems a + elems b)         constant
    softmax              (rows, row length n)          rows * g[n]                     h[n]

Bytes and rounds are deterministic, so their fits must be exact (integer coefficients reproducing
every sample) or calibration fails; softmax's dependence on n is tabulated for every n up to
`max_row_length`. For a backend whose traffic varies a little between identical runs (SPU: its OT
and HE engines refill buffers as they go) bytes and rounds are fitted like seconds, by non-negative
least squares on `Call.fitted_features` (a constant, elements in and out, multiply-accumulates).
Seconds are fitted (non-negative least squares) per kind on features (calls, bytes,
rounds, MACs or elements) from GPT-2-sized samples, so they hold for the machine the file names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from pibench.backends import BACKENDS
from pibench.counting.cost import GenerationCost, VariantCost
from pibench.counting.network import NetworkProfile, project
from pibench.measuring.measured import Count, Seconds, Strict
from pibench.models.opkinds import CALLS
from pibench.models.symbolic import Tally
from pibench.util.errors import PibenchError, validated
from pibench.util.files import CALIBRATION, expect, read_json
from pibench.util.machine import TIME_SETTINGS, Machine, fingerprint, same_machine

# Settings that do not change what one operation costs: a calibration measures every operation on
# operands shared for it, so each product is a weight's first use, where reused and fresh masks move
# the same bytes in the same round (`pibench.backends.crypten.masks`).
ONE_OP_SETTINGS = ("weight_masks",)

SCHEMA_VERSION = 2


class PredictedKind(Strict):
    bytes: Count
    rounds: Count
    wall_s: Seconds


class PredictedStep(Strict):
    """One pass of a generation, predicted: the prefill (context T) or decode step j (context T+j)."""

    context: Count
    bytes: Count
    rounds: Count
    wall_s: Seconds
    minutes: dict[str, Seconds]
    by_kind: dict[str, PredictedKind]


class PredictedGeneration(Strict):
    """Every pass of a generation, predicted, and the set-up's bytes (both parties): each weight's mask
    opened once where the backend reuses them (`Backend.weight_masks`), else None."""

    steps: list[PredictedStep] = Field(min_length=1)
    setup_bytes: Count | None


class Predicted(Strict):
    """What the calibrated model predicts for one variant (a record keeps it beside the measurement)."""

    bytes: Count
    gb: Annotated[float, Field(ge=0)]
    rounds: Count
    wall_s: Seconds
    minutes: dict[str, Seconds]
    by_kind: dict[str, PredictedKind]
    calibration: str
    time_model: str  # "this machine", or which other machine the seconds were fitted on
    generation: PredictedGeneration | None = None  # a suite that generates: every pass (the prefill is the above)


MAX_FILE_BYTES = 16 * 2**20


def time_features(call: str, sig: tuple[int, ...], byts: float, rounds: float) -> list[float]:
    """Features of one call that its seconds are a non-negative combination of."""
    return [1.0, byts, rounds, float(CALLS[call].size(sig))]


class CallModel(Strict):
    """The fitted cost of one call kind: bytes and rounds exact (integer coefficients of
    `Call.byte_features`; softmax tabulated per row length in `per_row_bytes` and `rounds`) or fitted
    (`fit: nnls`, coefficients of `Call.fitted_features`); seconds always fitted (`time_features`)."""

    fit: Literal["exact", "nnls"] = "exact"
    bytes: list[int] | list[float] | None = None
    rounds: int | list[int] | list[float]
    per_row_bytes: list[int] | None = None
    lengths: list[int] | None = None  # argmax: the row lengths `per_row_bytes` and `rounds` hold, in order
    wall_s: list[float]
    comm_s: list[float]
    measured: str | None = None  # when and where, for a model measured apart from the file's (`--extend`)


class CalibrationFile(Strict):
    """A calibration as `pibench calibrate` writes it."""

    schema_version: Literal[2]
    kind: Literal["pibench.calibration"]
    backend: str
    created: str
    settings: dict[str, Any]
    environment: Machine
    fingerprint: dict[str, Any]
    quick: bool
    max_row_length: Annotated[int, Field(ge=1)]
    models: dict[str, CallModel]
    units: dict[str, str]


@dataclass
class Calibration:
    """A fitted cost model: the file's content, typed, and where it was read from."""

    file: CalibrationFile
    path: str = ""

    @property
    def backend(self) -> str:
        return self.file.backend

    def describe(self, impl: Any) -> str:
        """Which backend and settings, measured when and on what: for footers of predicted columns."""
        env = self.file.environment
        apart = "".join(f"; {name} {m.measured}" for name, m in self.file.models.items() if m.measured)
        return (
            f"{impl.describe(self.file.settings, env.packages.get(impl.package))}, calibration '{self.path}' "
            f"(measured {self.file.created} on {env.cpu_count} cores of {env.cpu_model}{apart})"
        )

    def time_model(self, settings: dict[str, Any]) -> str:
        """Where its seconds were fitted, for a run under `settings`: "this machine", or what differs
        (another machine, or this one computing another way), with the remedy."""
        remedy = "seconds may be far off here; `pibench calibrate --quick [--suite SUITE]` refits them on this machine"
        recorded = self.file.fingerprint
        if not same_machine(recorded):
            env = self.file.environment
            cpu = f"{env.cpu_model}, {env.cpu_count} cores"
            return f"another machine ({cpu}): {remedy}"
        here = fingerprint(settings)
        differ = [f"{k} {recorded.get(k)} there, {here[k]} here" for k in TIME_SETTINGS if recorded.get(k) != here[k]]
        return f"this machine under other settings ({'; '.join(differ)}): {remedy}" if differ else "this machine"

    def check_settings(self, backend: str, settings: dict[str, Any], what: str) -> None:
        """Refuse a calibration whose counts do not hold for `settings` (`TIME_SETTINGS` change only
        seconds, which `time_model` reports; `ONE_OP_SETTINGS` nothing one operation costs)."""
        if backend != self.backend:
            raise PibenchError(f"calibration '{self.path}' is of backend {self.backend}, not {backend} as {what}")
        ours = self.file.settings
        diff = sorted(
            k
            for k in settings.keys() | ours.keys()
            if ours.get(k) != settings.get(k) and k not in TIME_SETTINGS + ONE_OP_SETTINGS
        )
        if diff:
            raise PibenchError(
                f"calibration '{self.path}' was measured under other {backend} settings than {what} "
                f"(differ: {', '.join(diff)}); run `pibench calibrate --suite SUITE` for them"
            )

    def op(self, call: str, sig: tuple[int, ...]) -> tuple[int, int, float, float]:
        """(bytes, rounds, wall seconds, comm seconds) of one call."""
        models, call = self.file.models, CALLS[call].model
        if call not in models:
            raise PibenchError(
                f"calibration '{self.path}' has no model for '{call}' (made before pibench calibrated it); "
                f"`pibench calibrate --extend {self.path}` measures what it lacks"
            )
        m = models[call]
        byts, rounds = _bytes_rounds(m, call, sig, self.path)
        feats = time_features(call, sig, byts, rounds)
        wall = sum(c * f for c, f in zip(m.wall_s, feats, strict=True))
        comm = sum(c * f for c, f in zip(m.comm_s, feats, strict=True))
        return byts, rounds, wall, min(comm, wall)

    def predict(self, tally: Tally) -> dict[str, Any]:
        """Predicted totals of one forward pass from its symbolic tally."""
        out: dict[str, Any] = {"bytes": 0, "rounds": 0, "wall_s": 0.0, "comm_s": 0.0, "by_kind": {}}
        for (call, sig), n in sorted(tally.calls.items()):
            byts, rounds, wall, comm = self.op(call, sig)
            k = out["by_kind"].setdefault(CALLS[call].bucket, {"bytes": 0, "rounds": 0, "wall_s": 0.0})
            for target in (out, k):
                target["bytes"] += n * byts
                target["rounds"] += n * rounds
                target["wall_s"] += n * wall
            out["comm_s"] += n * comm
        return out


def _bytes_rounds(m: CallModel, call: str, sig: tuple[int, ...], path: str) -> tuple[int, int]:
    """Bytes and rounds of one call: exact models (integer coefficients, softmax tabulated), or fitted
    ones (`fit: nnls`, for backends whose traffic varies between identical runs)."""
    if m.fit == "nnls":
        feats = CALLS[call].fitted_features(sig)
        byts = sum(c * f for c, f in zip(m.bytes or [], feats, strict=True))
        rounds = m.rounds if isinstance(m.rounds, list) else [m.rounds]
        return round(byts), round(sum(c * f for c, f in zip(rounds, feats, strict=True)))
    if m.lengths is not None:  # tabulated at some row lengths (argmax: vocabulary sizes)
        n = sig[1]
        if n not in m.lengths:
            raise PibenchError(
                f"{call} over rows of {n} is not in calibration '{path}' (it has {', '.join(map(str, m.lengths))}); "
                f"`pibench calibrate --extend {path} --suite SUITE` measures the argmax at that suite's vocabulary"
            )
        i = m.lengths.index(n)
        assert isinstance(m.rounds, list) and m.per_row_bytes is not None
        return sig[0] * m.per_row_bytes[i], int(m.rounds[i])
    features = CALLS[call].byte_features
    if features is None:  # tabulated per row length
        n, table = sig[1], m.per_row_bytes or []
        if n > len(table):
            raise PibenchError(
                f"softmax rows of length {n} exceed the {len(table)} calibrated in '{path}'; "
                f"run `pibench calibrate --max-row-length {n}`"
            )
        assert isinstance(m.rounds, list)
        return sig[0] * table[n - 1], int(m.rounds[n - 1])
    assert isinstance(m.rounds, int)
    return int(sum(c * f for c, f in zip(m.bytes or [], features(sig), strict=True))), m.rounds


def load_calibration(path: str | Path) -> Calibration:
    path = Path(path)
    data = read_json(path, "calibration", MAX_FILE_BYTES, f"; `pibench calibrate --out {path}` makes one")
    expect(data, path, CALIBRATION)
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise PibenchError(f"calibration '{path}' is not a pibench calibration of schema {SCHEMA_VERSION}; recalibrate")
    file = validated(CalibrationFile, data, f"calibration '{path}' is not a valid calibration")
    if file.backend not in BACKENDS:
        raise PibenchError(
            f"calibration '{path}' is of backend '{file.backend[:40]}', which this pibench does not have"
        )
    return Calibration(file, str(path))


def shipped_calibration(backend: str) -> Calibration:
    """The calibration shipped (as package data) for `backend`'s default settings."""
    path = BACKENDS.get(backend).shipped_calibration
    if path is None:
        raise PibenchError(f"no calibration ships for backend {backend}; run `pibench calibrate --backend {backend}`")
    return load_calibration(path)


def exact_fit(kind: str, rows: list[tuple[list[int], int]]) -> list[int]:
    """Integer coefficients reproducing every sample's bytes exactly, or an error."""
    import numpy as np

    x = np.array([f for f, _ in rows], dtype=float)
    y = np.array([b for _, b in rows], dtype=float)
    coef = [round(c) for c in np.linalg.lstsq(x, y, rcond=None)[0]]
    for feats, byts in rows:
        if sum(c * f for c, f in zip(coef, feats, strict=True)) != byts:
            raise PibenchError(f"the bytes of {kind} are not the linear function of {len(coef)} features expected")
    return coef


def nnls_fit(rows: list[tuple[list[float], float]]) -> list[float]:
    """Non-negative least squares on column-scaled features."""
    import numpy as np
    from scipy.optimize import nnls

    x = np.array([f for f, _ in rows])
    y = np.array([t for _, t in rows])
    scale = x.max(axis=0)
    scale[scale == 0] = 1
    coef, _ = nnls(x / scale, y)
    return [float(c) for c in coef / scale]


def predict_cost(
    cal: Calibration, tally: Tally, profiles: Sequence[NetworkProfile] = (), settings: dict[str, Any] | None = None
) -> Predicted:
    """Predicted bytes, rounds, GB and minutes of one variant; minutes also under `profiles` (the two
    parties send equal halves of the bytes; rounds x `Backend.rtt_per_round` RTTs, as measured records
    are projected, though the calibration counts rounds, not CrypTen's round trips)."""
    totals = cal.predict(tally)
    minutes = {"loopback": totals["wall_s"] / 60}
    rounds = totals["rounds"] * BACKENDS.get(cal.file.backend).rtt_per_round
    for prof in profiles:
        minutes[prof.name] = project(totals["wall_s"], totals["comm_s"], rounds, totals["bytes"] // 2, prof) / 60
    return Predicted(
        bytes=int(totals["bytes"]),
        gb=totals["bytes"] / 1e9,
        rounds=int(totals["rounds"]),
        wall_s=totals["wall_s"],
        minutes=minutes,
        by_kind={
            k: PredictedKind(bytes=int(v["bytes"]), rounds=int(v["rounds"]), wall_s=v["wall_s"])
            for k, v in totals["by_kind"].items()
        },
        calibration=cal.path,
        time_model=cal.time_model(cal.file.settings if settings is None else settings),
    )


def predict_generation(
    cal: Calibration,
    gen: GenerationCost,
    profiles: Sequence[NetworkProfile] = (),
    settings: dict[str, Any] | None = None,
) -> PredictedGeneration:
    """Every pass of `gen` predicted (`predict_cost`), and its set-up: under reused weight masks, every
    weight that products use opened once (`GenerationCost.setup_elements`), 16 bytes an element as the
    first product with it opens it."""
    passes = [(gen.prefill.config.T, gen.prefill), *((c.config.T + j, c) for j, c in enumerate(gen.decode, 1))]
    steps = []
    for context, cost in passes:
        p = predict_cost(cal, cost.tally, profiles, settings)
        steps.append(
            PredictedStep(
                context=context, **p.model_dump(include={"bytes", "rounds", "wall_s", "minutes"}), by_kind=p.by_kind
            )
        )
    setup = cal.op("linear", (0, gen.setup_elements, 0, 0))[0] if gen.masks == "reuse" else None
    return PredictedGeneration(steps=steps, setup_bytes=setup)


def predictions_for(
    backend: str,
    settings: dict[str, Any],
    costs: Sequence[VariantCost],
    profiles: Sequence[NetworkProfile],
    gens: Sequence[GenerationCost] = (),
) -> list[Predicted | None]:
    """The shipped calibration's predictions for a run's record (with every pass of a generation,
    `gens` by variant), where its settings match; None elsewhere (the record then holds no
    prediction, and reports show '-')."""
    try:
        cal = shipped_calibration(backend)
        cal.check_settings(backend, settings, "this run")
        return list(predicted(cal, costs, profiles, settings, gens))
    except PibenchError:
        return [None] * len(costs)


def predicted(
    cal: Calibration,
    costs: Sequence[VariantCost],
    profiles: Sequence[NetworkProfile],
    settings: dict[str, Any],
    gens: Sequence[GenerationCost] = (),
) -> Sequence[Predicted]:
    """Each variant's prediction, with its generation's where `gens` has one per variant."""
    out = [predict_cost(cal, c.tally, profiles, settings) for c in costs]
    if gens:
        out = [
            p.model_copy(update={"generation": predict_generation(cal, g, profiles, settings)})
            for p, g in zip(out, gens, strict=True)
        ]
    return out
