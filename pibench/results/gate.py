"""Compare two run records variant by variant, each metric in its own direction.

Counted metrics (bytes, rounds, per operation kind; nonlinear elements; FLOPs; communication savings;
a generation's bytes and rounds in all, of its last decode step, "token.*", and of its set-up) are
deterministic for a given configuration and backend settings, so by default any change in the bad
direction fails. Every time-derived metric (`TIMED`: seconds, and savings of time) compares through
the spread of the repeated passes: the candidate at its most favourable against the baseline at its
least (`_compared`), so the noise of one machine between two runs is not a regression; the findings
carry the figures compared, not the medians. The MPC error compares loosely, as a ratio.
Records of different backends, backend settings or variant configurations are "not comparable",
never "regressed"; records of different networks (a local and a two-host run of one suite), machines
(`pibench.util.machine.fingerprint`) or settings that change only speed (`TIME_SETTINGS`: local products,
device) compare on counted metrics only, since these change time, not bytes. A variant of the baseline that
the candidate lacks, or whose output became unusable, is a regression. Records are validated when
read (`pibench.results.records`), so a damaged one never gets here.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pibench.backends import BACKENDS
from pibench.models.opkinds import KINDS, NONLINEAR, kinds_in
from pibench.models.variants import BASELINE
from pibench.results.records import Record, VariantRecord
from pibench.util.errors import PibenchError
from pibench.util.machine import TIME_SETTINGS

PASS, REGRESSION, NOT_COMPARABLE = 0, 1, 2
# Times measured as the median of repeated passes, with the fastest and slowest recorded, and what is
# derived from them: each compares the candidate's most favourable figure with the baseline's least.
SPREAD_METRICS = ("wall_s", "comm_s")
TIMED = (*SPREAD_METRICS, "time_savings")


@dataclass(frozen=True)
class Metric:
    name: str
    lower_is_better: bool
    tolerance: float  # allowed worsening, as a fraction of the baseline value (0: exact)
    counted: bool  # deterministic count, as opposed to a measured time or error


def _metrics() -> dict[str, Metric]:
    out = {
        "bytes": Metric("bytes", True, 0.0, True),
        "rounds": Metric("rounds", True, 0.0, True),
        "flops.ffn": Metric("flops.ffn", True, 0.0, True),
        "flops.attn": Metric("flops.attn", True, 0.0, True),
        "comm_savings": Metric("comm_savings", False, 0.0, True),
        "wall_s": Metric("wall_s", True, 0.25, False),
        "comm_s": Metric("comm_s", True, 0.25, False),
        "time_savings": Metric("time_savings", False, 0.33, False),
        "max_abs_error": Metric("max_abs_error", True, 1.0, False),
    }
    for kind in (k for k, spec in KINDS.items() if not spec.by_chance):
        out[f"bytes.{kind}"] = Metric(f"bytes.{kind}", True, 0.0, True)
        out[f"rounds.{kind}"] = Metric(f"rounds.{kind}", True, 0.0, True)
    for kind in NONLINEAR:
        out[f"nonlinear.{kind}"] = Metric(f"nonlinear.{kind}", True, 0.0, True)
    out["unusable"] = Metric("unusable", True, 0.0, True)  # 1 when the MPC output is unusable
    # a generation: every pass together, its last decode step (the dearest token), the one-off set-up
    for name in GENERATION_COUNTED:
        out[name] = Metric(name, True, 0.0, True)
    out["token.wall_s"] = Metric("token.wall_s", True, 0.4, False)  # timed once: a looser tolerance
    return out


GENERATION_COUNTED = ("generation.bytes", "generation.rounds", "token.bytes", "token.rounds", "setup.bytes")


METRICS = _metrics()


def values(variant: VariantRecord, base: VariantRecord | None) -> Iterator[tuple[str, float]]:
    """Every metric of one variant of a record (`base`: the record's baseline variant)."""
    m, a = variant.measured, variant.analytic
    yield "bytes", m.bytes
    yield "rounds", m.rounds
    yield "wall_s", m.wall_s
    yield "comm_s", m.comm_s
    yield "unusable", 0.0 if m.usable else 1.0
    if m.max_abs_error is not None:
        yield "max_abs_error", m.max_abs_error
    kinds = kinds_in(variant.config["scope"])
    for kind in (k for k in kinds if not KINDS[k].by_chance):
        yield f"bytes.{kind}", m.by_kind[kind].bytes
        yield f"rounds.{kind}", m.by_kind[kind].rounds
    for kind in NONLINEAR:
        if kind in kinds:
            yield f"nonlinear.{kind}", a.nonlinear[kind].elements if kind in a.nonlinear else 0
    yield "flops.ffn", a.flops.ffn
    yield "flops.attn", a.flops.attn
    if (gen := m.generation) is not None:
        last = gen.steps[-1]
        yield "generation.bytes", gen.bytes
        yield "generation.rounds", sum(s.rounds for s in gen.steps)
        yield "token.bytes", last.bytes
        yield "token.rounds", last.rounds
        yield "token.wall_s", last.wall_s
        if gen.setup is not None:
            yield "setup.bytes", gen.setup.bytes
    if base is not None:
        yield "comm_savings", base.measured.bytes / m.bytes
        yield "time_savings", base.measured.wall_s / m.wall_s


def parse_fail_on(specs: Sequence[str]) -> dict[str, float]:
    """`METRIC:+X%` (a lower-is-better metric may grow X%) or `METRIC:-X%` (a higher-is-better one
    may shrink X%); METRIC may be a pattern such as 'bytes.*'."""
    out = {}
    for spec in specs:
        match = re.fullmatch(r"([\w.*?]+):([+-])(\d+(?:\.\d+)?)%", spec)
        if not match:
            raise PibenchError(f"--fail-on '{spec}' is not of the form METRIC:+X% or METRIC:-X%")
        pattern, sign, pct = match.groups()
        names = fnmatch.filter(METRICS, pattern)
        if not names:
            raise PibenchError(f"--fail-on '{spec}': no metric matches '{pattern}'; metrics: {', '.join(METRICS)}")
        for name in names:
            if (sign == "+") != METRICS[name].lower_is_better:
                better = "lower" if METRICS[name].lower_is_better else "higher"
                want = "+" if METRICS[name].lower_is_better else "-"
                raise PibenchError(f"--fail-on '{spec}': {name} is better {better}; write {name}:{want}{pct}%")
            out[name] = float(pct) / 100
    return out


@dataclass(frozen=True)
class Finding:
    variant: str
    metric: str
    baseline: float  # the figures compared (for a timed metric: through the spread, see `basis`)
    candidate: float
    allowed: float  # fraction
    basis: str = ""  # what the figures are, where they are not the metric's recorded value

    @property
    def change(self) -> float:
        return (self.candidate - self.baseline) / self.baseline if self.baseline else float("inf")

    def to_json(self) -> dict[str, Any]:
        return {**vars(self), "change": self.change}


@dataclass
class Outcome:
    status: int  # PASS, REGRESSION or NOT_COMPARABLE
    reasons: list[str]  # why not comparable
    regressions: list[Finding]
    compared: int  # (variant, metric) pairs compared
    variants: list[str]
    missing: list[str]  # in the baseline, not in the candidate: a regression
    added: list[str]  # in the candidate only: not compared
    notes: list[str]  # what was left out of the comparison, and why

    def to_json(self) -> dict[str, Any]:
        status = {PASS: "pass", REGRESSION: "regression", NOT_COMPARABLE: "not comparable"}[self.status]
        return {
            "status": status,
            "exit_code": self.status,
            "reasons": self.reasons,
            "regressions": [f.to_json() for f in self.regressions],
            "missing_in_candidate": self.missing,
            "only_in_candidate": self.added,
            "notes": self.notes,
            "compared": self.compared,
            "variants": self.variants,
        }


def _baseline_variant(record: Record) -> VariantRecord | None:
    return next((v for v in record.variants if v.variant == BASELINE), None)


def _backend_tolerances(record: Record) -> dict[str, float]:
    """The spread of identical runs a backend declares (`Backend.count_tolerance`), as tolerances."""
    name = record.backend.name
    declared = BACKENDS.get(name).count_tolerance if name in BACKENDS else {}
    return {m: t for pattern, t in declared.items() for m in fnmatch.filter(METRICS, pattern)}


def _differ(a: dict[str, Any], b: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in skip)


def _time_not_comparable(old: Record, new: Record) -> str | None:
    """Why the two records' seconds say nothing about each other, if they do not: another network,
    another machine, or settings that change only how fast a party computes (`TIME_SETTINGS`)."""
    if old.run.network != new.run.network:
        return f"networks differ ({old.run.network} vs {new.run.network})"
    if diff := _differ(old.environment.fingerprint, new.environment.fingerprint):
        return f"machines differ ({', '.join(diff)})"
    return None


def _not_comparable(old: Record, new: Record, common: list[str]) -> list[str]:
    reasons = []
    ob, nb = old.backend, new.backend
    if ob.name != nb.name:
        reasons.append(f"backends differ ({ob.name} vs {nb.name})")
    elif diff := _differ(ob.settings, nb.settings, skip=TIME_SETTINGS):
        reasons.append(f"backend settings differ ({', '.join(diff)})")
    old_v = {v.name: v for v in old.variants}
    new_v = {v.name: v for v in new.variants}
    if not common:
        reasons.append("no variant in common")
    for name in common:
        if old_v[name].config != new_v[name].config:
            fields = [k for k in old_v[name].config if old_v[name].config[k] != new_v[name].config.get(k)]
            reasons.append(f"variant '{name}' has another configuration ({', '.join(fields)})")
    return reasons


def _compared(
    metric: str,
    old: VariantRecord,
    new: VariantRecord,
    old_base: VariantRecord | None,
    new_base: VariantRecord | None,
) -> tuple[float, float, str] | None:
    """For a timed metric, (baseline figure, candidate figure, what they are): the candidate at its most
    favourable against the baseline at its least, over the repeated passes' spread; None for others."""
    mo, mn = old.measured, new.measured
    if metric in SPREAD_METRICS:  # lower is better: the candidate's fastest against the baseline's slowest
        return getattr(mo, f"{metric}_max"), getattr(mn, f"{metric}_min"), "slowest pass vs fastest"
    if metric == "time_savings" and old_base and new_base:  # higher is better: the ratio's low vs high end
        low = old_base.measured.wall_s_min / mo.wall_s_max
        high = new_base.measured.wall_s_max / mn.wall_s_min
        return low, high, "low end vs high end"
    return None


def compare(
    old: Record, new: Record, tolerances: dict[str, float] | None = None, counted_only: bool = False
) -> Outcome:
    """Gate `new` against `old` (both validated records)."""
    old_v = {v.name: v for v in old.variants}
    new_v = {v.name: v for v in new.variants}
    common = [n for n in old_v if n in new_v]
    missing, added = [n for n in old_v if n not in new_v], [n for n in new_v if n not in old_v]
    reasons = _not_comparable(old, new, common)
    if reasons:
        return Outcome(NOT_COMPARABLE, reasons, [], 0, common, missing, added, [])
    notes = []
    if not counted_only and (why := _time_not_comparable(old, new)):
        counted_only = True
        notes.append(f"{why}: time not compared")
    tol = {name: m.tolerance for name, m in METRICS.items()} | _backend_tolerances(new) | (tolerances or {})
    old_base, new_base = _baseline_variant(old), _baseline_variant(new)
    regressions, compared = [], 0
    for name in common:
        before = dict(values(old_v[name], old_base))
        for metric, after in values(new_v[name], new_base):
            spec = METRICS[metric]
            if metric not in before or (counted_only and not spec.counted):
                continue
            compared += 1
            b, a, basis = _compared(metric, old_v[name], new_v[name], old_base, new_base) or (before[metric], after, "")
            worse = a - b if spec.lower_is_better else b - a
            if worse > tol[metric] * abs(b) + 1e-12 * max(abs(b), 1.0):
                regressions.append(Finding(name, metric, b, a, tol[metric], basis))
    status = REGRESSION if regressions or missing else PASS
    return Outcome(status, [], regressions, compared, common, missing, added, notes)
