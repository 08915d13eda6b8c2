"""Calibrated cost model: predict bytes, rounds, round trips and seconds of a variant under a backend
without running it.

A calibration maps every call of the symbolic tally (`Tally.calls`, kinds and signatures from
`pibench.models.opkinds.CALLS`) to bytes, rounds, round trips and seconds. How a call's traffic follows
from its signature is its cost form (`CostForm`: features with a constant first, a per-call cost; the
backend's own form where its algorithm gives one, CrypTen's log-reduction softmax and argmax), and the
backend says which model its counts take (`Backend.count_model`):

    exact         integer coefficients of the form's features, reproducing every calibration sample
                  (CrypTen: its counts are deterministic); exact past the calibrated sizes where the
                  form holds, and said so
    fitted        non-negative coefficients minimising the relative error over the samples (SPU's
                  products), with the largest relative error of any sample kept as the model's spread
    interpolated  the samples' means at their sizes, interpolated on log scales between them (SPU's
                  other kinds: neither constant nor proportional at small sizes), the widest spread between
                  repeats of one size kept; per element beyond the largest

Where a backend refills pools in lumps in whichever call empties them (SPU's oblivious transfers), the
models are of a call's own traffic, and the refills its consumption costs are a model of their own
(`CallModel.refills`: their mean per call, interpolated), predicted as the kind "refills", as runs book
them (`pibench.backends.spu.session.own_and_refills`).

Seconds are fitted (non-negative least squares) per kind on features (calls, bytes, rounds, MACs or
elements), so they hold for the machine the file names. A prediction past a model's largest calibrated
size, or from a model with a spread, says so (`Predicted.notes`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from pibench.backends import BACKENDS
from pibench.counting.cost import GenerationCost, VariantCost
from pibench.counting.network import NetworkProfile, project
from pibench.measuring.measured import Count, Seconds, Strict
from pibench.models.opkinds import CALLS, CostForm
from pibench.models.symbolic import Tally
from pibench.util.errors import PibenchError, validated
from pibench.util.files import CALIBRATION, expect, read_json
from pibench.util.machine import TIME_SETTINGS, Machine, fingerprint, same_machine

# Settings that do not change what one operation costs: a calibration measures every operation on
# operands shared for it, so each product is a weight's first use, where reused and fresh masks move
# the same bytes in the same round (`pibench.backends.crypten.masks`).
ONE_OP_SETTINGS = ("weight_masks",)

SCHEMA_VERSION = 3


class PredictedKind(Strict):
    bytes: Count
    rounds: Count
    round_trips: Count
    wall_s: Seconds


class PredictedStep(Strict):
    """One pass of a generation, predicted: the prefill (context T) or decode step j (context T+j)."""

    context: Count
    bytes: Count
    rounds: Count
    round_trips: Count
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
    round_trips: Count  # what a network's RTT is multiplied by (CrypTen: round trips; SPU: its messages)
    wall_s: Seconds
    minutes: dict[str, Seconds]
    by_kind: dict[str, PredictedKind]
    calibration: str
    time_model: str  # "this machine", or which other machine the seconds were fitted on
    notes: list[str]  # what the prediction stands on beyond what was measured: extrapolations, spreads
    generation: PredictedGeneration | None = None  # a suite that generates: every pass (the prefill is the above)


MAX_FILE_BYTES = 16 * 2**20
FITS = ("exact", "fitted", "interpolated")


def time_features(call: str, sig: tuple[int, ...], byts: float, rounds: float) -> list[float]:
    """Features of one call that its seconds are a non-negative combination of."""
    return [1.0, byts, rounds, float(CALLS[call].size(sig))]


class Knot(Strict):
    """One calibrated size of an interpolated model: the mean of its repeats (`microbench.POOL_BYTES`)."""

    size: Annotated[int, Field(ge=1)]
    bytes: Annotated[float, Field(ge=0)]
    rounds: Annotated[float, Field(ge=0)]
    round_trips: Annotated[float, Field(ge=0)]


class CallModel(Strict):
    """The calibrated cost of one call kind (the module's docstring): `form` names the cost form whose
    features `bytes`, `rounds` and `round_trips` are coefficients of (exact, fitted), or `knots` the sizes
    it is interpolated between; `largest` the largest size calibrated (`CostForm.size`); `spread` how far
    a call's bytes and rounds may be from the model (relative; 0 where exact); seconds always fitted
    (`time_features`)."""

    fit: Literal["exact", "fitted", "interpolated"]
    form: str
    bytes: list[float] = Field(default_factory=list)
    rounds: list[float] = Field(default_factory=list)
    round_trips: list[float] = Field(default_factory=list)
    knots: list[Knot] = Field(default_factory=list)
    largest: Annotated[int, Field(ge=1)]
    spread: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)  # "bytes", "rounds"
    # where the backend refills pools in lumps inside whichever call empties them (SPU), booked apart as the
    # kind "refills": their mean per call by size (`microbench.POOL_BYTES`), interpolated as `knots` are, and
    # the most bytes of refills one calibrated call held
    refills: list[Knot] = Field(default_factory=list)
    lump: Annotated[float, Field(ge=0)] = 0.0
    wall_s: list[float]
    comm_s: list[float]
    measured: str | None = None  # when and where, for a model measured apart from the file's (`--extend`)


class CalibrationFile(Strict):
    """A calibration as `pibench calibrate` writes it."""

    schema_version: Literal[3]
    kind: Literal["pibench.calibration"]
    backend: str
    created: str
    settings: dict[str, Any]
    environment: Machine
    fingerprint: dict[str, Any]
    quick: bool
    models: dict[str, CallModel]
    units: dict[str, str]


@dataclass(frozen=True)
class CallCost:
    """One call's predicted figures, and what the prediction stands on beyond what was measured."""

    bytes: int
    rounds: int
    round_trips: int
    wall_s: float
    comm_s: float
    notes: tuple[str, ...] = ()
    refills: tuple[int, int, int] = (0, 0, 0)  # bytes, rounds, round trips of the pools' refills it costs


def combine(coef: Sequence[float], feats: Sequence[float]) -> float:
    """A model's value: its coefficients times the cost form's features, summed."""
    return sum(c * f for c, f in zip(coef, feats, strict=True))


def _interpolate(knots: Sequence[Knot], size: int, what: str) -> float:
    """`what` ("bytes", "rounds", "round_trips") at `size`: between two knots linear on log scales; below
    the first, along the first two knots' log-log slope, held between 0 (a per-call cost) and 1 (a cost
    per element); the last knot's per unit of size beyond it."""
    first, last = knots[0], knots[-1]
    if size < first.size and len(knots) > 1 and float(getattr(first, what)) > 0:
        second = float(getattr(knots[1], what))
        slope = math.log(second / float(getattr(first, what))) / math.log(knots[1].size / first.size) if second else 0
        return float(getattr(first, what)) * (size / first.size) ** min(max(slope, 0.0), 1.0)
    if size <= first.size:
        return float(getattr(first, what))
    if size >= last.size:
        return float(getattr(last, what)) * size / last.size
    for a, b in itertools.pairwise(knots):
        if a.size <= size <= b.size:
            ya, yb = float(getattr(a, what)), float(getattr(b, what))
            if ya <= 0 or yb <= 0:
                return ya + (yb - ya) * (size - a.size) / (b.size - a.size)
            t = math.log(size / a.size) / math.log(b.size / a.size)
            return math.exp(math.log(ya) + t * (math.log(yb) - math.log(ya)))
    raise AssertionError("knots are sorted by size")


@dataclass
class Calibration:
    """A fitted cost model: the file's content, typed, and where it was read from."""

    file: CalibrationFile
    path: str = ""
    forms: dict[str, CostForm] = field(default_factory=dict)  # the backend's, by call

    def __post_init__(self) -> None:
        impl = BACKENDS.get(self.file.backend)
        self.forms = {name: impl.cost_form(call) for name, call in CALLS.items()}
        for name, model in self.file.models.items():
            if name in self.forms and model.form != self.forms[name].name:
                raise PibenchError(
                    f"calibration '{self.path}': its model of {name} is of the cost form {model.form}, and this "
                    f"pibench's is {self.forms[name].name}; `pibench calibrate` makes one for this pibench"
                )

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

    def op(self, call: str, sig: tuple[int, ...]) -> CallCost:
        """One call's predicted figures."""
        name = CALLS[call].model
        if name not in self.file.models:
            raise PibenchError(
                f"calibration '{self.path}' has no model for '{name}' (made before pibench calibrated it); "
                f"`pibench calibrate --extend {self.path}` measures what it lacks"
            )
        m, form = self.file.models[name], self.forms[name]
        if m.fit == "interpolated":
            size = max(form.size(sig), 1)
            byts, rounds, trips = (_interpolate(m.knots, size, w) for w in ("bytes", "rounds", "round_trips"))
        else:
            byts = combine(m.bytes, form.bytes(sig))
            rounds, trips = combine(m.rounds, form.rounds(sig)), combine(m.round_trips, form.round_trips(sig))
        refills = [0.0, 0.0, 0.0]
        if m.refills:
            refills = [_interpolate(m.refills, max(form.size(sig), 1), w) for w in ("bytes", "rounds", "round_trips")]
        if not any(sig):  # a call that moves nothing (an empty operand) costs nothing
            byts = rounds = trips = 0.0
            refills = [0.0, 0.0, 0.0]
        notes = []
        if form.size(sig) > m.largest and (byts or rounds):  # a call that exchanges nothing has nothing to extrapolate
            how = "exact where its form holds" if m.fit == "exact" else "per element beyond it"
            notes.append(f"{name} beyond the calibrated {m.largest:,} ({form.name}): extrapolated, {how}")
        if refills[0]:
            notes.append(f"{LUMPY}: {name}'s (lumps to {m.lump / 1e6:.1f} MB)")
        for what, spread in m.spread.items():
            if spread <= 0.005:
                continue
            if m.fit == "exact":  # only round trips of calls whose smallest exchange is one or two elements miss
                if form.payload(sig) in (1, 2):
                    notes.append(
                        f"{name}'s round trips within ±{spread:.0%} where an exchange carries one or two elements"
                    )
            else:
                notes.append(f"{name}'s {what} within ±{spread:.0%} (repeated calls of one size differed so)")
        feats = time_features(call, sig, byts, rounds)
        wall = combine(m.wall_s, feats)
        comm = combine(m.comm_s, feats)
        own = (round(byts), round(rounds), round(trips))
        return CallCost(
            *own, wall, min(comm, wall), tuple(notes), (round(refills[0]), round(refills[1]), round(refills[2]))
        )

    def predict(self, tally: Tally) -> dict[str, Any]:
        """Predicted totals of one forward pass from its symbolic tally, with the notes of its calls."""
        out: dict[str, Any] = {"bytes": 0, "rounds": 0, "round_trips": 0, "wall_s": 0.0, "comm_s": 0.0}
        out |= {"by_kind": {}, "notes": []}
        for (call, sig), n in sorted(tally.calls.items()):
            cost = self.op(call, sig)
            k = out["by_kind"].setdefault(CALLS[call].bucket, _zero())
            for target in (out, k):
                target["bytes"] += n * cost.bytes
                target["rounds"] += n * cost.rounds
                target["round_trips"] += n * cost.round_trips
                target["wall_s"] += n * cost.wall_s
            if any(cost.refills):  # the pools' refills its consumption costs, booked apart as a run books them
                r = out["by_kind"].setdefault("refills", _zero())
                for target in (out, r):
                    target["bytes"] += n * cost.refills[0]
                    target["rounds"] += n * cost.refills[1]
                    target["round_trips"] += n * cost.refills[2]
            out["comm_s"] += n * cost.comm_s
            out["notes"] += [note for note in cost.notes if note not in out["notes"]]
        return out


def _zero() -> dict[str, Any]:
    """One kind's predicted totals before any call."""
    return {"bytes": 0, "rounds": 0, "round_trips": 0, "wall_s": 0.0}


LUMPY = (
    "refills predicted as the mean that calls' consumption costs, where the backend refills pools (oblivious "
    "transfers, triples) in lumps in whichever call empties them, so a run books 0 or more whole lumps"
)


def merge_notes(notes: Iterable[str]) -> list[str]:
    """Notes in order, once each, those that share a head ("head: item") as one: "head: item, item"."""
    merged: dict[str, list[str]] = {}
    for note in notes:
        head, _, item = note.partition(": ")
        key = head if item and head == LUMPY else note
        items = merged.setdefault(key, [])
        if item and key == head and item not in items:
            items.append(item)
    return [f"{key}: {', '.join(items)}" if items else key for key, items in merged.items()]


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


def integer_fit(rows: list[tuple[list[float], float]]) -> list[float]:
    """Integer coefficients of the fewest leading features that reproduce every sample (`rows`: features,
    value), else of all of them, nearest: a constant fitted as a constant, not spread over features that
    happen to be constant among the samples too."""
    import numpy as np

    x = np.array([f for f, _ in rows], dtype=float).reshape(len(rows), -1)
    y = np.array([v for _, v in rows], dtype=float)
    width = x.shape[1]
    coef = np.zeros(width)
    for used in range(1, width + 1):
        coef = np.zeros(width)
        coef[:used] = np.round(np.linalg.lstsq(x[:, :used], y, rcond=None)[0])
        if np.array_equal(x @ coef, y):
            break
    return [float(c) + 0.0 for c in coef]  # + 0.0: no "-0.0" in a file


def exact_fit(kind: str, rows: list[tuple[list[float], float]]) -> list[float]:
    """Integer coefficients reproducing every sample exactly (`integer_fit`), or an error."""
    coef = integer_fit(rows)
    for feats, value in rows:
        if combine(coef, feats) != value:
            raise PibenchError(f"the counts of {kind} are not the linear function of {len(coef)} features expected")
    return coef


def nnls_fit(rows: list[tuple[list[float], float]], relative: bool = False) -> list[float]:
    """Non-negative least squares on column-scaled features; `relative`: each sample weighted by the
    inverse of its value, so that a small call's error counts as much as a large one's."""
    import numpy as np
    from scipy.optimize import nnls

    x = np.array([f for f, _ in rows], dtype=float)
    y = np.array([t for _, t in rows], dtype=float)
    if relative:
        weight = 1 / np.maximum(np.abs(y), 1e-12)
        x, y = x * weight[:, None], y * weight
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1
    coef, _ = nnls(x / scale, y)
    return [float(c) for c in coef / scale]


def predict_cost(
    cal: Calibration, tally: Tally, profiles: Sequence[NetworkProfile] = (), settings: dict[str, Any] | None = None
) -> Predicted:
    """Predicted bytes, rounds, round trips, GB and minutes of one variant; minutes also under `profiles`
    (the two parties send equal halves of the bytes; round trips x `Backend.rtt_per_round` RTTs, as
    measured records are projected)."""
    totals = cal.predict(tally)
    minutes = {"loopback": totals["wall_s"] / 60}
    trips = totals["round_trips"] * BACKENDS.get(cal.file.backend).rtt_per_round
    for prof in profiles:
        minutes[prof.name] = project(totals["wall_s"], totals["comm_s"], trips, totals["bytes"] // 2, prof) / 60
    return Predicted(
        bytes=int(totals["bytes"]),
        gb=totals["bytes"] / 1e9,
        rounds=int(totals["rounds"]),
        round_trips=int(totals["round_trips"]),
        wall_s=totals["wall_s"],
        minutes=minutes,
        by_kind={
            k: PredictedKind(
                bytes=int(v["bytes"]), rounds=int(v["rounds"]), round_trips=int(v["round_trips"]), wall_s=v["wall_s"]
            )
            for k, v in totals["by_kind"].items()
        },
        calibration=cal.path,
        time_model=cal.time_model(cal.file.settings if settings is None else settings),
        notes=totals["notes"],
    )


def predict_generation(
    cal: Calibration,
    gen: GenerationCost,
    profiles: Sequence[NetworkProfile] = (),
    settings: dict[str, Any] | None = None,
) -> tuple[PredictedGeneration, list[str]]:
    """Every pass of `gen` predicted (`predict_cost`), and its set-up: under reused weight masks, every
    weight that products use opened once (`GenerationCost.setup_elements`), 16 bytes an element as the
    first product with it opens it; and the notes of every pass."""
    passes = [(gen.prefill.config.T, gen.prefill), *((c.config.T + j, c) for j, c in enumerate(gen.decode, 1))]
    steps, notes = [], []
    for context, cost in passes:
        p = predict_cost(cal, cost.tally, profiles, settings)
        steps.append(
            PredictedStep(
                context=context,
                **p.model_dump(include={"bytes", "rounds", "round_trips", "wall_s", "minutes"}),
                by_kind=p.by_kind,
            )
        )
        notes += [note for note in p.notes if note not in notes]
    setup = cal.op("linear", (0, gen.setup_elements, 0, 0)).bytes if gen.masks == "reuse" else None
    return PredictedGeneration(steps=steps, setup_bytes=setup), notes


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
        with_gen = []
        for p, g in zip(out, gens, strict=True):
            generation, notes = predict_generation(cal, g, profiles, settings)
            merged = [*p.notes, *(n for n in notes if n not in p.notes)]
            with_gen.append(p.model_copy(update={"generation": generation, "notes": merged}))
        out = with_gen
    return out
