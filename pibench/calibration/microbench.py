"""Measuring a calibration: every call kind of `opkinds.CALLS` on a pair of op servers, then the fits
of `pibench.calibration.fit`: each kind's counts on the backend's count samples (`Backend.count_samples`,
fitted as `Backend.count_model` says), its seconds on its time samples (`Backend.time_samples`)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pibench.backends import BACKENDS
from pibench.calibration.fit import (
    SCHEMA_VERSION,
    CalibrationFile,
    combine,
    exact_fit,
    integer_fit,
    nnls_fit,
    time_features,
)
from pibench.models.opkinds import CALLS, Call, CostForm
from pibench.util.errors import PibenchError
from pibench.util.files import CALIBRATION
from pibench.util.machine import environment, fingerprint, now
from pibench.util.procs import die_with_parent, kill_tree

CALLED = {name: call for name, call in CALLS.items() if call.calibrated}  # what a calibration measures


class OpPair:
    """The op servers of a backend (two parties, and a dealer where the settings need one) on
    127.0.0.1, serving operation requests; close() ends them by PID."""

    def __init__(self, backend: str, settings: Any) -> None:
        impl = BACKENDS.get(backend)
        ranks = impl.ranks(settings)
        rendezvous, listener = impl.local_rendezvous(len(ranks))
        cmd = [sys.executable, "-m", "pibench.calibration.opserver", "--backend", backend, "--rendezvous", rendezvous]
        cmd += ["--settings", json.dumps(settings_dict(settings))]
        self.procs = []
        try:
            for rank in ranks:
                fd = listener.fileno() if listener and rank == 0 else None
                self.procs.append(
                    subprocess.Popen(
                        [*cmd, "--rank", str(rank), *(["--listen-fd", str(fd)] if fd is not None else [])],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                        pass_fds=(fd,) if fd is not None else (),
                        preexec_fn=die_with_parent,
                    )
                )
        finally:
            if listener:
                listener.close()  # rank 0 holds it now
        self.parties = self.procs[:2]

    def run(self, op: str, shapes: Sequence[Sequence[int]]) -> dict[str, Any]:
        """Run `op` once on both parties: bytes sent by both, rounds and seconds of the busier; the call's
        own, and under "refills" the pools' refills that fell in it (`spu.session.own_and_refills`)."""
        request = json.dumps({"op": op, "shapes": [list(s) for s in shapes]}) + "\n"
        for p in self.parties:
            assert p.stdin is not None
            p.stdin.write(request)
            p.stdin.flush()
        replies = []
        for p in self.parties:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                raise PibenchError(f"an op server exited with code {p.wait(timeout=10)} during {op} {list(shapes)}")
            replies.append(json.loads(line))
        return _both(replies) | {"refills": _both([r["refills"] for r in replies])}

    def close(self) -> None:
        for p in self.parties:
            try:
                if p.stdin:
                    p.stdin.write(json.dumps({"op": "exit"}) + "\n")
                    p.stdin.close()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            kill_tree(p.pid)
            if p.stdout:
                p.stdout.close()


def _both(replies: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Two parties' figures as a calibration counts them: bytes sent by both, the rest the busier's."""
    out = {"bytes": replies[0]["bytes"] + replies[1]["bytes"]}
    return out | {w: max(r.get(w, 0.0) for r in replies) for w in ("rounds", "round_trips", "wall_s", "comm_s")}


def settings_dict(settings: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(settings)


# A backend that draws oblivious transfers from pools it refills in lumps (SPU: 0.5 MB and more) in whichever
# call empties them tells a call's own traffic from the refills in it (`spu.session.own_and_refills`): each
# shape runs again until its runs moved POOL_BYTES (at most MAX_REPEATS times), so that the mean of the
# refills per call is what the call's consumption costs in refills.
POOL_BYTES = 16_000_000
MAX_REPEATS = 24


def _counts(pair: OpPair, backend: str, name: str, progress: Callable[[str], None]) -> tuple[dict[str, Any], list]:
    """Call `name`'s count model on the backend's count samples, and the runs (signature, figures) measured."""
    impl, call = BACKENDS.get(backend), CALLS[name]
    form, fit = impl.cost_form(call), impl.count_model(call)
    samples = impl.count_samples(call)
    runs = []
    for sample in samples:
        sig, moved, done = call.signature(sample), 0.0, 0
        while done < 1 or (fit != "exact" and moved < POOL_BYTES and done < MAX_REPEATS):
            runs.append((sig, pair.run(name, sample)))
            moved, done = moved + runs[-1][1]["bytes"] + runs[-1][1]["refills"]["bytes"], done + 1
    model: dict[str, Any] = {"fit": fit, "form": form.name, "largest": max(form.size(sig) for sig, _ in runs)}
    if fit == "exact":
        model["bytes"] = exact_fit(f"{name}'s bytes", [(form.bytes(sig), r["bytes"]) for sig, r in runs])
        model["rounds"] = exact_fit(f"{name}'s rounds", [(form.rounds(sig), r["rounds"]) for sig, r in runs])
        model["round_trips"], model["spread"] = _round_trips(form, runs)
    elif fit == "fitted":
        model["spread"] = {}
        for what, features in (("bytes", form.bytes), ("rounds", form.rounds), ("round_trips", form.round_trips)):
            rows = [(features(sig), float(r[what])) for sig, r in runs]
            model[what] = nnls_fit(rows, relative=True)
            if what != "round_trips":
                model["spread"][what] = _largest_error(model[what], rows)
        model["refills"], _ = _knots([(form.size(sig), r["refills"]) for sig, r in runs])
    else:
        model["knots"], model["spread"], model["refills"] = _own_knots([(form.size(sig), r) for sig, r in runs])
    if fit != "exact":
        model["lump"] = max(r["refills"]["bytes"] for _, r in runs)
    progress(f"{name}: {fit} counts on {len(runs)} runs of {len(samples)} shapes")
    return model, runs


def _round_trips(form: CostForm, runs: list) -> tuple[list[float], dict[str, float]]:
    """Round trips' integer coefficients (`CostForm.round_trips`: the rounds' features, then corrections
    for calls whose smallest exchange carries one element, and two): each block fitted on its calls
    (`integer_fit`), exact where the samples allow, else the nearest with the largest relative error kept
    as the model's spread (a single row's exchanges wait for one round trip or two by their sizes, which
    no feature counts exactly)."""
    width = len(form.rounds(runs[0][0]))
    coef = [0.0] * (3 * width)
    for block, narrow in enumerate((None, 1, 2)):
        rows = []
        for sig, r in runs:
            if (form.payload(sig) if form.payload(sig) in (1, 2) else None) == narrow:
                base = combine(coef[:width], form.rounds(sig)) if narrow else 0.0
                rows.append((form.rounds(sig), float(r["round_trips"]) - base))
        if rows:
            coef[block * width : (block + 1) * width] = integer_fit(rows)
    error = _largest_error(coef, [(form.round_trips(sig), float(r["round_trips"])) for sig, r in runs])
    return coef, ({"round_trips": error} if error else {})


def _largest_error(coef: list[float], rows: list[tuple[list[float], float]]) -> float:
    worst = 0.0
    for feats, value in rows:
        if value:
            worst = max(worst, abs(combine(coef, feats) / value - 1))
    return round(worst, 4)


def _own_knots(
    runs: list[tuple[int, dict[str, Any]]],
) -> tuple[list[dict[str, float]], dict[str, float], list[dict[str, float]]]:
    """An interpolated model's knots, its spread and its refills' knots. A run books as its call's own the
    run of the program with the fewest messages (`spu.session.own_and_refills`), which can still hold a
    refill where every run refilled (a pool of triples topped up by what each call lacks can run dry in
    each): per size, the call's own is the mean
    of the runs with the fewest messages (their bytes differ by a ciphertext's jitter: the spread), and
    the refills the mean of everything else the runs moved."""
    by_size: dict[int, list[dict[str, Any]]] = {}
    for size, r in runs:
        by_size.setdefault(size, []).append(r)
    own, refills = [], []
    for size in sorted(by_size):
        rs = by_size[size]
        least = [r for r in rs if r["rounds"] == min(x["rounds"] for x in rs)]
        own += [(size, r) for r in least]
        knot = {w: sum(r[w] for r in least) / len(least) for w in ("bytes", "rounds", "round_trips")}
        moved = {w: sum(r[w] + r["refills"][w] for r in rs) / len(rs) for w in knot}
        refills.append({"size": size} | {w: max(0.0, moved[w] - knot[w]) for w in knot})
    knots, spread = _knots(own)
    return knots, spread, refills


def _knots(runs: list[tuple[int, dict[str, Any]]]) -> tuple[list[dict[str, float]], dict[str, float]]:
    """An interpolated model's knots: per size, the mean of its runs (`POOL_BYTES` of them, where the
    refills in them are its model); and the spread, the largest relative distance of a run from its size's
    mean (bytes, rounds)."""
    by_size: dict[int, list[dict[str, Any]]] = {}
    for size, r in runs:
        by_size.setdefault(size, []).append(r)
    knots, spread = [], {"bytes": 0.0, "rounds": 0.0}
    for size in sorted(by_size):
        rs = by_size[size]
        knot = {"size": size} | {w: sum(r[w] for r in rs) / len(rs) for w in ("bytes", "rounds", "round_trips")}
        knots.append(knot)
        for what in spread:
            if knot[what]:
                spread[what] = max(spread[what], *(abs(r[what] / knot[what] - 1) for r in rs))
    return knots, {w: round(v, 4) for w, v in spread.items()}


def _seconds(pair: OpPair, backend: str, call: Call, model: dict[str, Any], runs: list) -> list:
    """The seconds' fit into `model`: on the count runs where the backend times on its count samples
    (their figures), else on its time samples, the faster of two runs each. Returns the runs timed."""
    impl = BACKENDS.get(backend)
    if impl.time_samples(call) == impl.count_samples(call):
        timed = [(sig, r) for sig, r in runs]
    else:
        timed = []
        for sample in impl.time_samples(call):
            best = min((pair.run(call.name, sample) for _ in range(2)), key=lambda r: r["wall_s"])
            timed.append((call.signature(sample), best))
    for what in ("wall_s", "comm_s"):
        model[what] = nnls_fit([(time_features(call.name, sig, r["bytes"], r["rounds"]), r[what]) for sig, r in timed])
    return timed


def _validate(name: str, form: CostForm, model: dict[str, Any], timed: list) -> None:
    """An exact model checked on the (GPT-2-sized) runs its seconds were timed on: each run's bytes and
    rounds reproduced, else an error; its calibrated range grows to them."""
    for sig, r in timed:
        for what, features in (("bytes", form.bytes), ("rounds", form.rounds)):
            if combine(model[what], features(sig)) != r[what]:
                raise PibenchError(f"the {what} of {name} at {sig} are not what its exact model gives")
        model["largest"] = max(model["largest"], form.size(sig))


def _measure(
    pair: OpPair, backend: str, names: Sequence[str], progress: Callable[[str], None], counts: bool = True
) -> dict[str, Any]:
    """Models of the calls `names`: counts and seconds (`counts`), or seconds alone (--quick: the counts of
    the model given are kept by the caller)."""
    models = {}
    for name in names:
        call = CALLS[name]
        if counts:
            model, runs = _counts(pair, backend, name, progress)
        else:
            model, runs = {}, []
            impl = BACKENDS.get(backend)
            if impl.time_samples(call) == impl.count_samples(call):  # timed on its count samples: run them
                samples = impl.count_samples(call)
                runs = [(call.signature(s), pair.run(name, s)) for s in samples]
        timed = _seconds(pair, backend, call, model, runs)
        if model.get("fit") == "exact":
            _validate(name, BACKENDS.get(backend).cost_form(call), model, timed)
        progress(f"{name}: seconds fitted")
        models[name] = model
    return models


WIDEST = 48 * 2048 + 1  # elements of a call that uses all of SPU's (at most 48) instances of oblivious transfers


def _warm(pair: OpPair, backend: str, names: Sequence[str]) -> None:
    """Run each call once on its two smallest count shapes and its largest before anything is measured: a
    session's first calls pay one-time set-up (CrypTen's; SPU's homomorphic keys, and a set-up of oblivious
    transfers for each instance that a wider call than any before uses), which no call's model should carry."""
    impl = BACKENDS.get(backend)
    pair.run("relu", ((WIDEST,),))  # SPU sets up another instance of oblivious transfers per 2048 elements
    for name in names:
        samples = impl.count_samples(CALLS[name])
        by_size = sorted(samples, key=lambda s: max(math.prod(x) for x in s))
        for sample in dict.fromkeys([*by_size[:2], by_size[-1]]):  # the largest sets up what the others use
            pair.run(name, sample)


def _stamp() -> str:
    env = environment()
    return f"{now()} on {env['cpu_count']} cores of {env['cpu_model']}"


def calibrate(
    backend: str,
    settings: Any,
    progress: Callable[[str], None] = print,
    quick_from: CalibrationFile | None = None,
) -> CalibrationFile:
    """Measure and fit; returns the calibration file's content. `quick_from` (a calibration of the same
    backend and settings): keep its count models and refit only the seconds on this machine (measuring
    in full what it has no model for)."""
    pair = OpPair(backend, settings)
    try:
        _warm(pair, backend, list(CALLED))
        if quick_from is None:
            models = _measure(pair, backend, list(CALLED), progress)
        else:
            models = {name: m.model_dump(mode="json", exclude_none=True) for name, m in quick_from.models.items()}
            missing = [name for name in CALLED if name not in models]
            models |= _measure(pair, backend, missing, progress)
            for name, seconds in _measure(
                pair, backend, [n for n in CALLED if n not in missing], progress, False
            ).items():
                models[name] |= seconds
            for name in models:
                models[name].pop("measured", None)  # every model's seconds are this machine's now
    finally:
        pair.close()
    return _file(backend, settings, models, quick_from is not None)


def extend(
    base: CalibrationFile, settings: Any, progress: Callable[[str], None] = print
) -> tuple[CalibrationFile, list[str]]:
    """`base` with what it lacks measured on this machine: the calls it has no model for; everything else
    kept as it is. Returns the file and what was measured (each added model says when and where:
    `CallModel.measured`)."""
    models = {name: m.model_dump(mode="json", exclude_none=True) for name, m in base.models.items()}
    missing = [name for name in CALLED if name not in models]
    if missing:
        pair = OpPair(base.backend, settings)
        try:
            stamp = _stamp()
            _warm(pair, base.backend, missing)
            models |= {
                name: m | {"measured": stamp} for name, m in _measure(pair, base.backend, missing, progress).items()
            }
        finally:
            pair.close()
    return base.model_copy(
        update={"models": CalibrationFile.model_validate(base.model_dump(mode="json") | {"models": models}).models}
    ), missing


def _file(backend: str, settings: Any, models: dict[str, Any], quick: bool) -> CalibrationFile:
    return CalibrationFile.model_validate(
        {
            "schema_version": SCHEMA_VERSION,
            "kind": CALIBRATION,
            "backend": backend,
            "created": now(),
            "settings": settings_dict(settings),
            "environment": environment(),
            "fingerprint": fingerprint(settings_dict(settings)),
            "quick": quick,  # seconds refitted here over another calibration's counts
            "models": models,
            "units": {
                "bytes": "sent by both parties",
                "rounds": "blocking exchanges of the busier party",
                "round_trips": "network round trips those wait for (rounds, where the backend counts messages)",
                "wall_s": "seconds",
                "comm_s": "seconds in exchanges",
            },
        }
    )
