"""Measuring a calibration: every call kind of `opkinds.CALLS` on a pair of op servers, then the fits
of `pibench.calibration.fit`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pibench.backends import BACKENDS
from pibench.calibration.fit import SCHEMA_VERSION, CalibrationFile, exact_fit, nnls_fit, time_features
from pibench.models.opkinds import ARGMAX_LENGTHS, CALLS
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

    def run(self, op: str, shapes: Sequence[Sequence[int]]) -> dict[str, float]:
        """Run `op` once on both parties: bytes sent by both, rounds and seconds of the busier."""
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
        return {
            "bytes": replies[0]["bytes"] + replies[1]["bytes"],
            "rounds": max(r["rounds"] for r in replies),
            "wall_s": max(r["wall_s"] for r in replies),
            "comm_s": max(r["comm_s"] for r in replies),
        }

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


def settings_dict(settings: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(settings)


def _exact_models(pair: OpPair, progress: Callable[[str], None], names: Sequence[str] | None = None) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for name, call in CALLS.items():
        if call.byte_features is None or not call.calibrated or (names is not None and name not in names):
            continue
        rows: list[tuple[list[int], int]] = []
        rounds: set[int] = set()
        for sample in call.samples:
            r = pair.run(name, sample)
            rows.append((call.byte_features(call.signature(sample)), int(r["bytes"])))
            rounds.add(int(r["rounds"]))
        if len(rounds) != 1:
            raise PibenchError(f"the rounds of {name} vary with its shape ({sorted(rounds)}); not modelled")
        models[name] = {"bytes": exact_fit(name, rows), "rounds": rounds.pop()}
        progress(f"{name}: bytes {models[name]['bytes']} per feature, {models[name]['rounds']} rounds")
    return models


def _softmax_table(pair: OpPair, max_row_length: int, progress: Callable[[str], None]) -> dict[str, Any]:
    per_row, rounds = [], []
    for n in range(1, max_row_length + 1):
        r1 = pair.run("softmax", [(1, n)])
        if n in (2, 64, 128):
            r3 = pair.run("softmax", [(3, n)])
            if r3["bytes"] != 3 * r1["bytes"] or r3["rounds"] != r1["rounds"]:
                raise PibenchError(f"softmax bytes are not proportional to rows at row length {n}")
        per_row.append(r1["bytes"])
        rounds.append(r1["rounds"])
        if n % 128 == 0:
            progress(f"softmax: row lengths 1..{n}")
    return {"per_row_bytes": per_row, "rounds": rounds}


def _argmax_table(pair: OpPair, lengths: Sequence[int], progress: Callable[[str], None]) -> dict[str, Any]:
    """The argmax's bytes per row and rounds at each row length (its cost follows CrypTen's tree of
    comparisons over the row, not a linear function of its length); two rows cost twice one."""
    per_row, rounds = [], []
    for n in lengths:
        r1 = pair.run("argmax", [(1, n)])
        if n <= 64:
            r2 = pair.run("argmax", [(2, n)])
            if r2["bytes"] != 2 * r1["bytes"] or r2["rounds"] != r1["rounds"]:
                raise PibenchError(f"argmax bytes are not proportional to rows at row length {n}")
        per_row.append(int(r1["bytes"]))
        rounds.append(int(r1["rounds"]))
    progress(f"argmax: row lengths {', '.join(map(str, lengths))}")
    return {"lengths": list(lengths), "per_row_bytes": per_row, "rounds": rounds}


def _fitted_models(
    pair: OpPair, backend: str, progress: Callable[[str], None], names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Bytes, rounds and seconds fitted (non-negative least squares) over the backend's samples, one
    pass each after one unmeasured call of the kind (a session's first calls of a kind pay one-time
    setup); of every calibrated call, or of `names`."""
    models: dict[str, Any] = {}
    for name, call in CALLED.items():
        if names is not None and name not in names:
            continue
        samples = BACKENDS.get(backend).time_samples(call)
        pair.run(name, samples[0])
        runs = [(call.signature(sample), pair.run(name, sample)) for sample in samples]
        fitted = [(call.fitted_features(sig), r) for sig, r in runs]
        timed = [(time_features(name, sig, r["bytes"], r["rounds"]), r) for sig, r in runs]
        models[name] = {
            "fit": "nnls",
            "bytes": nnls_fit([(f, r["bytes"]) for f, r in fitted]),
            "rounds": nnls_fit([(f, r["rounds"]) for f, r in fitted]),
            "wall_s": nnls_fit([(f, r["wall_s"]) for f, r in timed]),
            "comm_s": nnls_fit([(f, r["comm_s"]) for f, r in timed]),
        }
        progress(f"{name}: bytes, rounds and seconds fitted on {len(samples)} samples")
    return models


def _time_models(
    pair: OpPair,
    backend: str,
    models: dict[str, Any],
    progress: Callable[[str], None],
    names: Sequence[str] | None = None,
) -> None:
    for name, call in CALLED.items():
        if names is not None and name not in names:
            continue
        rows_wall, rows_comm = [], []
        samples = BACKENDS.get(backend).time_samples(call)
        for sample in samples:
            best = min((pair.run(name, sample) for _ in range(2)), key=lambda r: r["wall_s"])
            feats = time_features(name, call.signature(sample), best["bytes"], best["rounds"])
            rows_wall.append((feats, best["wall_s"]))
            rows_comm.append((feats, best["comm_s"]))
        models[name]["wall_s"] = nnls_fit(rows_wall)
        models[name]["comm_s"] = nnls_fit(rows_comm)
        progress(f"{name}: time fitted on {len(samples)} samples")


def _measure_missing(
    pair: OpPair,
    backend: str,
    models: dict[str, Any],
    argmax_lengths: Sequence[int],
    progress: Callable[[str], None],
) -> list[str]:
    """Measure, into `models`, every calibrated call it has no model for, and the argmax at the row
    lengths its table lacks; each stamped with this machine and time. Returns the calls measured."""
    stamp = _stamp()
    missing = [name for name in CALLED if name not in models]
    if "softmax" in missing:
        raise PibenchError("a calibration without a softmax table cannot be extended; recalibrate")
    if BACKENDS.get(backend).count_tolerance:
        fitted = _fitted_models(pair, backend, progress, missing) if missing else {}
        models |= {name: m | {"measured": stamp} for name, m in fitted.items()}
        return missing
    models |= _exact_models(pair, progress, missing) if set(missing) - {"argmax"} else {}
    table = models.get("argmax", {"lengths": [], "per_row_bytes": [], "rounds": []})
    todo = sorted(set(argmax_lengths) - set(table["lengths"]))
    if todo:
        new = _argmax_table(pair, todo, progress)
        rows = sorted(
            zip(
                table["lengths"] + new["lengths"],
                table["per_row_bytes"] + new["per_row_bytes"],
                table["rounds"] + new["rounds"],
                strict=True,
            )
        )
        table = {
            **table,
            "lengths": [r[0] for r in rows],
            "per_row_bytes": [r[1] for r in rows],
            "rounds": [r[2] for r in rows],
            "measured": stamp,
        }
        models["argmax"] = table
    if missing:
        _time_models(pair, backend, models, progress, missing)
    for name in missing:
        models[name]["measured"] = stamp
    return [*missing, *(["argmax"] if todo and "argmax" not in missing else [])]


def _stamp() -> str:
    env = environment()
    return f"{now()} on {env['cpu_count']} cores of {env['cpu_model']}"


def calibrate(
    backend: str,
    settings: Any,
    max_row_length: int = 1024,
    progress: Callable[[str], None] = print,
    quick_from: CalibrationFile | None = None,
    argmax_lengths: Sequence[int] = ARGMAX_LENGTHS,
) -> CalibrationFile:
    """Measure and fit; returns the calibration file's content. `quick_from` (a calibration of the same
    backend and settings): keep its byte and round models and refit only the seconds on this machine
    (measuring in full what it has no model for)."""
    pair = OpPair(backend, settings)
    try:
        if quick_from is not None:
            models = {name: m.model_dump(mode="json", exclude_none=True) for name, m in quick_from.models.items()}
            max_row_length = quick_from.max_row_length
            new = _measure_missing(pair, backend, models, argmax_lengths, progress)
            fitted = _fitted_models(pair, backend, progress) if BACKENDS.get(backend).count_tolerance else None
            if fitted:
                for name, model in fitted.items():
                    models[name] |= {"wall_s": model["wall_s"], "comm_s": model["comm_s"]}
            else:
                _time_models(pair, backend, models, progress, [n for n in CALLED if n not in new])
            for name in models:
                models[name].pop("measured", None)  # every model's seconds are this machine's now
        elif BACKENDS.get(backend).count_tolerance:
            models = _fitted_models(pair, backend, progress)
        else:
            models = _exact_models(pair, progress)
            models["softmax"] = _softmax_table(pair, max_row_length, progress)
            models["argmax"] = _argmax_table(pair, argmax_lengths, progress)
            _time_models(pair, backend, models, progress)
    finally:
        pair.close()
    return _file(backend, settings, max_row_length, models, quick_from is not None)


def extend(
    base: CalibrationFile,
    settings: Any,
    argmax_lengths: Sequence[int] = ARGMAX_LENGTHS,
    progress: Callable[[str], None] = print,
) -> tuple[CalibrationFile, list[str]]:
    """`base` with what it lacks measured on this machine: the calls it has no model for, and argmax
    row lengths it has not tabulated; everything else kept as it is. Returns the file and what was
    measured (each added model says when and where: `CallModel.measured`)."""
    models = {name: m.model_dump(mode="json", exclude_none=True) for name, m in base.models.items()}
    pair = OpPair(base.backend, settings)
    try:
        measured = _measure_missing(pair, base.backend, models, argmax_lengths, progress)
    finally:
        pair.close()
    return base.model_copy(
        update={"models": CalibrationFile.model_validate(base.model_dump(mode="json") | {"models": models}).models}
    ), measured


def _file(backend: str, settings: Any, max_row_length: int, models: dict[str, Any], quick: bool) -> CalibrationFile:
    return CalibrationFile.model_validate(
        {
            "schema_version": SCHEMA_VERSION,
            "kind": CALIBRATION,
            "backend": backend,
            "created": now(),
            "settings": settings_dict(settings),
            "environment": environment(),
            "fingerprint": fingerprint(settings_dict(settings)),
            "quick": quick,  # seconds refitted here over another calibration's bytes and rounds
            "max_row_length": max_row_length,
            "models": models,
            "units": {"bytes": "sent by both parties", "wall_s": "seconds", "comm_s": "seconds in exchanges"},
        }
    )
