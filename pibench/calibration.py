"""Calibrated cost model: predict bytes, rounds and seconds of a variant under CrypTen without running it.

`calibrate()` microbenchmarks every operation kind that makes the parties talk, on a pair of parties
(`pibench.mpc.opbench`), and fits one model per kind over the call signatures of the symbolic tally
(`Tally.calls`):

    kind                 signature                     bytes (both parties)            rounds
    gelu, relu           (elements,)                   a * elements                    constant
    layernorm            (rows, cols)                  a*rows*cols + b*rows + c*cols   constant
    linear, attn_matmul  (elems a, elems b, MACs)      a * (elems a + elems b)         constant
    mul                  (elems a, elems b)            a * (elems a + elems b)         constant
    softmax              (rows, row length n)          rows * g[n]                     h[n]

Bytes and rounds are deterministic, so the fits must be exact (integer coefficients reproducing every
sample) or calibration fails; softmax's dependence on n (CrypTen's log-depth max) is tabulated for
every n up to `max_row_length`. Seconds are fitted (non-negative least squares) per kind on
features (calls, bytes, rounds, MACs or elements) from samples at GPT-2 sizes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pibench.errors import PibenchError
from pibench.interp.symbolic import Tally
from pibench.mpc.settings import CrypTenSettings
from pibench.network import NetworkProfile, project

SCHEMA_VERSION = 1
SHIPPED = Path(__file__).parent / "data" / "calibration-crypten-default.json"

# kind -> feature function of a signature, for bytes
BYTE_FEATURES: dict[str, Callable[[tuple[int, ...]], list[int]]] = {
    "gelu": lambda s: [s[0]],
    "relu": lambda s: [s[0]],
    "layernorm": lambda s: [s[0] * s[1], s[0], s[1]],
    "linear": lambda s: [s[0] + s[1]],
    "attn_matmul": lambda s: [s[0] + s[1]],
    "mul": lambda s: [s[0] + s[1]],
}
# kind -> op name and operand shapes for a signature sample (what opbench runs)
SAMPLES: dict[str, list[tuple[list[int], list[int] | None]]] = {
    "gelu": [([1, 64], None), ([2, 128], None), ([1, 1000], None)],
    "relu": [([1, 64], None), ([2, 128], None), ([1, 1000], None)],
    "layernorm": [([1, 8], None), ([2, 8], None), ([1, 16], None), ([3, 100], None), ([4, 32], None)],
    "linear": [([4, 8], [8, 16]), ([8, 16], [16, 32]), ([16, 8], [8, 8])],
    "attn_matmul": [([2, 4, 8], [2, 8, 4]), ([3, 8, 4], [3, 4, 8])],
    "mul": [([4, 8], [1]), ([4, 8], [4, 8]), ([2, 4, 4], [2, 4, 1])],
}
# GPT-2-sized samples for the time fit
TIME_SAMPLES: dict[str, list[tuple[list[int], list[int] | None]]] = {
    "gelu": [([128, 768], None), ([128, 3072], None), ([512, 3072], None)],
    "relu": [([128, 768], None), ([128, 3072], None), ([512, 3072], None)],
    "layernorm": [([128, 768], None), ([256, 768], None), ([512, 768], None)],
    "linear": [([128, 768], [768, 768]), ([128, 768], [768, 3072]), ([512, 768], [768, 3072])],
    "attn_matmul": [([12, 128, 64], [12, 64, 128]), ([12, 128, 128], [12, 128, 64]), ([12, 512, 64], [12, 64, 512])],
    "mul": [([128, 768], [1]), ([12, 128, 128], [12, 128, 1]), ([512, 768], [512, 768])],
    "softmax": [([12, 128, 128], None), ([12, 256, 256], None), ([12, 64, 512], None)],
}


def signature(kind: str, shape: list[int], other: list[int] | None) -> tuple[int, ...]:
    """The `Tally.calls` signature of running `kind` on operands of these shapes."""
    if kind in ("softmax", "layernorm"):
        return (math.prod(shape[:-1]), shape[-1])
    if kind in ("gelu", "relu"):
        return (math.prod(shape),)
    assert other is not None
    a, b = math.prod(shape), math.prod(other)
    if kind == "mul":
        return (a, b)
    batch = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return (a, b, batch * shape[-2] * shape[-1] * other[-1])


def _time_features(kind: str, sig: tuple[int, ...], byts: float, rounds: float) -> list[float]:
    size = sig[2] if kind in ("linear", "attn_matmul") else math.prod(sig)
    return [1.0, byts, rounds, float(size)]


@dataclass
class Calibration:
    """A fitted cost model; `data` is the JSON file's content."""

    data: dict[str, Any]
    path: str = ""

    @property
    def settings(self) -> dict[str, Any]:
        return self.data["settings"]

    def check_settings(self, settings: CrypTenSettings, what: str) -> None:
        if settings.as_dict() != self.settings:
            diff = sorted(k for k in self.settings if self.settings[k] != settings.as_dict().get(k))
            raise PibenchError(
                f"calibration '{self.path}' was measured under other CrypTen settings than {what} "
                f"(differ: {', '.join(diff)}); run `pibench calibrate --suite SUITE` for them"
            )

    def op(self, kind: str, sig: tuple[int, ...]) -> tuple[int, int, float, float]:
        """(bytes, rounds, wall seconds, comm seconds) of one call."""
        models = self.data["models"]
        if kind not in models:
            raise PibenchError(f"calibration '{self.path}' has no model for '{kind}'; recalibrate")
        m = models[kind]
        byts, rounds = _bytes_rounds(m, kind, sig)
        feats = _time_features(kind, sig, byts, rounds)
        wall = sum(c * f for c, f in zip(m["wall_s"], feats, strict=True))
        comm = sum(c * f for c, f in zip(m["comm_s"], feats, strict=True))
        return byts, rounds, wall, min(comm, wall)

    def predict(self, tally: Tally) -> dict[str, Any]:
        """Predicted totals of one forward pass from its symbolic tally."""
        out: dict[str, Any] = {"bytes": 0, "rounds": 0, "wall_s": 0.0, "comm_s": 0.0, "by_kind": {}}
        for (kind, sig), n in sorted(tally.calls.items()):
            byts, rounds, wall, comm = self.op(kind, sig)
            bucket = "other" if kind == "mul" else kind
            k = out["by_kind"].setdefault(bucket, {"bytes": 0, "rounds": 0, "wall_s": 0.0})
            for target in (out, k):
                target["bytes"] += n * byts
                target["rounds"] += n * rounds
                target["wall_s"] += n * wall
            out["comm_s"] += n * comm
        return out


def _bytes_rounds(m: dict[str, Any], kind: str, sig: tuple[int, ...]) -> tuple[int, int]:
    """The exact part of a kind's model `m`: bytes and rounds of one call."""
    if kind == "softmax":
        n, table = sig[1], m["per_row_bytes"]
        if n > len(table):
            raise PibenchError(
                f"softmax rows of length {n} exceed the calibrated {len(table)}; "
                f"run `pibench calibrate --max-row-length {n}`"
            )
        return sig[0] * table[n - 1], m["rounds"][n - 1]
    return sum(c * f for c, f in zip(m["bytes"], BYTE_FEATURES[kind](sig), strict=True)), m["rounds"]


def load_calibration(path: str | Path | None = None) -> Calibration:
    path = Path(path) if path else SHIPPED
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PibenchError(f"calibration '{path}' not found; `pibench calibrate --out {path}` makes one") from None
    except (OSError, json.JSONDecodeError) as err:
        raise PibenchError(f"calibration '{path}' is not readable JSON: {err}") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise PibenchError(f"calibration '{path}' is not a pibench calibration of schema {SCHEMA_VERSION}; recalibrate")
    return Calibration(data, str(path))


def _exact_fit(kind: str, rows: list[tuple[list[int], int]]) -> list[int]:
    """Integer coefficients reproducing every sample's bytes exactly, or an error."""
    import numpy as np

    x = np.array([f for f, _ in rows], dtype=float)
    y = np.array([b for _, b in rows], dtype=float)
    coef = [round(c) for c in np.linalg.lstsq(x, y, rcond=None)[0]]
    for feats, byts in rows:
        if sum(c * f for c, f in zip(coef, feats, strict=True)) != byts:
            raise PibenchError(f"the bytes of {kind} are not the linear function of {len(coef)} features expected")
    return coef


def _time_fit(rows: list[tuple[list[float], float]]) -> list[float]:
    import numpy as np
    from scipy.optimize import nnls

    x = np.array([f for f, _ in rows])
    y = np.array([t for _, t in rows])
    scale = x.max(axis=0)
    scale[scale == 0] = 1
    coef, _ = nnls(x / scale, y)
    return [float(c) for c in coef / scale]


def calibrate(settings: CrypTenSettings, max_row_length: int = 1024, progress: Callable[[str], None] = print) -> dict:
    """Measure and fit; returns the calibration file's content."""
    from pibench.mpc.opbench import OpPair
    from pibench.results import environment, now

    pair = OpPair(settings)
    models: dict[str, Any] = {}
    try:
        for kind, samples in SAMPLES.items():
            rows, rounds = [], set()
            for shape, other in samples:
                r = pair.run(kind, shape, other)
                rows.append((BYTE_FEATURES[kind](signature(kind, shape, other)), r["bytes"]))
                rounds.add(r["rounds"])
            if len(rounds) != 1:
                raise PibenchError(f"the rounds of {kind} vary with its shape ({sorted(rounds)}); not modelled")
            models[kind] = {"bytes": _exact_fit(kind, rows), "rounds": rounds.pop()}
            progress(f"{kind}: bytes {models[kind]['bytes']} per feature, {models[kind]['rounds']} rounds")
        per_row, soft_rounds = [], []
        for n in range(1, max_row_length + 1):
            r1, r3 = pair.run("softmax", [1, n]), (pair.run("softmax", [3, n]) if n in (2, 64, 128) else None)
            if r3 and (r3["bytes"] != 3 * r1["bytes"] or r3["rounds"] != r1["rounds"]):
                raise PibenchError(f"softmax bytes are not proportional to rows at row length {n}")
            per_row.append(r1["bytes"])
            soft_rounds.append(r1["rounds"])
            if n % 128 == 0:
                progress(f"softmax: row lengths 1..{n}")
        models["softmax"] = {"per_row_bytes": per_row, "rounds": soft_rounds}
        for kind, samples in TIME_SAMPLES.items():
            rows_wall, rows_comm = [], []
            for shape, other in samples:
                sig = signature(kind, shape, other)
                best = min((pair.run(kind, shape, other) for _ in range(2)), key=lambda r: r["wall_s"])
                feats = _time_features(kind, sig, best["bytes"], best["rounds"])
                rows_wall.append((feats, best["wall_s"]))
                rows_comm.append((feats, best["comm_s"]))
            models[kind]["wall_s"] = _time_fit(rows_wall)
            models[kind]["comm_s"] = _time_fit(rows_comm)
            progress(f"{kind}: time fitted on {len(samples)} GPT-2-sized samples")
    finally:
        pair.close()
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "pibench.calibration",
        "backend": "crypten",
        "created": now(),
        "settings": settings.as_dict(),
        "environment": environment(),
        "max_row_length": max_row_length,
        "models": models,
        "units": {"bytes": "sent by both parties", "wall_s": "seconds", "comm_s": "seconds in exchanges"},
    }


def predict_cost(cal: Calibration, tally: Tally, profiles: Sequence[NetworkProfile] = ()) -> dict[str, Any]:
    """Predicted bytes, rounds, GB and minutes of one variant; minutes also under `profiles`
    (the two parties send equal halves of the bytes)."""
    p = cal.predict(tally)
    minutes = {"loopback": p["wall_s"] / 60}
    for prof in profiles:
        minutes[prof.name] = project(p["wall_s"], p["comm_s"], p["rounds"], p["bytes"] // 2, prof) / 60
    return {
        "bytes": p["bytes"],
        "gb": p["bytes"] / 1e9,
        "rounds": p["rounds"],
        "wall_s": p["wall_s"],
        "minutes": minutes,
        "by_kind": p["by_kind"],
        "calibration": cal.path,
    }
