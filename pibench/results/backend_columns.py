"""Columns of other backends beside a record's own: one suite's costs under several protocols.

A report's main record gives the measured columns of its backend. For every other backend asked for,
the columns come from a record of that backend for the same suite where one is given (measured),
else from that backend's shipped calibration applied to each variant's symbolic trace (predicted),
and always say which. Savings are each backend's own, against the same baseline variant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pibench.backends import BACKENDS
from pibench.counting.cost import trace
from pibench.models.config import ModelConfig
from pibench.results.records import Record
from pibench.util.errors import PibenchError


@dataclass
class BackendColumns:
    """Comm./Lat./Savings of one backend, per variant name; None where it has no figure."""

    label: str  # column tag: "SPU" (measured) or "SPU pred."
    about: str  # the footer line
    comm_gb: dict[str, float | None]
    lat_min: dict[str, float | None]
    save_comm: dict[str, float | None]
    save_lat: dict[str, float | None]
    by_kind: dict[str, dict[str, int] | None]  # bytes per operation kind (measured, or predicted)
    # measured on real text with trained weights (`measured.accuracy`): perplexity per byte from the MPC
    # logits and top-1 agreement with plaintext; empty where predicted
    ppl_mpc: dict[str, float | None] = field(default_factory=dict)
    agreement: dict[str, float | None] = field(default_factory=dict)


def _savings(values: dict[str, float | None], base: str | None) -> dict[str, float | None]:
    b = values.get(base) if base else None
    return {n: (b / v if b and v else None) for n, v in values.items()}


def _same_suite(a: Record, b: Record) -> bool:
    return a.same_suite(b)


def measured_columns(main: Record, other: Record, base: str | None, about: str) -> BackendColumns:
    """The columns of `other` (a record of another backend), matched to `main`'s variants by name and
    configuration."""
    theirs = {v.name: v for v in other.variants}
    comm: dict[str, float | None] = {}
    lat: dict[str, float | None] = {}
    kinds: dict[str, dict[str, int] | None] = {}
    ppl: dict[str, float | None] = {}
    agree: dict[str, float | None] = {}
    for v in main.variants:
        t = theirs.get(v.name)
        if t is not None and t.config == v.config:
            comm[v.name], lat[v.name] = t.measured.bytes / 1e9, t.measured.wall_s / 60
            kinds[v.name] = {k: c.bytes for k, c in t.measured.by_kind.items()}
            acc, mine = t.measured.accuracy, v.measured.accuracy
            # beside the main record's PPL [plaintext] only where it is over the same text
            same = acc and mine and (acc.windows, acc.source) == (mine.windows, mine.source)
            ppl[v.name], agree[v.name] = (acc.ppl_mpc, acc.agreement) if acc and same else (None, None)
        else:
            comm[v.name] = lat[v.name] = kinds[v.name] = ppl[v.name] = agree[v.name] = None
    label = other.backend.label
    return BackendColumns(label, about, comm, lat, _savings(comm, base), _savings(lat, base), kinds, ppl, agree)


def predicted_columns(main: Record, backend: str, base: str | None) -> BackendColumns:
    """`backend`'s shipped calibration applied to each variant of `main` (its default settings)."""
    from pibench.calibration.fit import predict_cost, shipped_calibration

    impl = BACKENDS.get(backend)
    cal = shipped_calibration(backend)
    cal.check_settings(backend, BACKENDS.get(backend).default_settings().as_dict(), "its defaults")
    comm: dict[str, float | None] = {}
    lat: dict[str, float | None] = {}
    kinds: dict[str, dict[str, int] | None] = {}
    for v in main.variants:
        try:
            p = predict_cost(cal, trace(ModelConfig(**v.config)))
            comm[v.name], lat[v.name] = p.gb, p.minutes["loopback"]
            kinds[v.name] = {k: c.bytes for k, c in p.by_kind.items()}
        except PibenchError:  # a shape outside the calibration
            comm[v.name] = lat[v.name] = kinds[v.name] = None
    about = f"predicted, not measured: {cal.describe(impl)}"
    label = f"{impl.label} pred."
    return BackendColumns(label, about, comm, lat, _savings(comm, base), _savings(lat, base), kinds)


def other_backends(
    main: Record, others: Sequence[Record], backends: Sequence[str], base: str | None, about: Callable[[Record], str]
) -> list[BackendColumns]:
    """Columns for each backend in `backends` other than `main`'s: measured from a record in `others`
    of the same suite, else predicted. `about(record)` describes a measured record."""
    out = []
    for name in dict.fromkeys(backends):
        if name == main.backend.name:
            continue
        BACKENDS.get(name)  # an unknown name is an error with "did you mean"
        record = next((r for r in others if r.backend.name == name and _same_suite(main, r)), None)
        if record:
            out.append(measured_columns(main, record, base, about(record)))
        else:
            out.append(predicted_columns(main, name, base))
    return out
