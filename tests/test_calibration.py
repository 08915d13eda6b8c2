"""Calibrated predictions: exact bytes and rounds at smoke sizes; settings and range are checked."""

from __future__ import annotations

import json
import math

import pytest

from pibench.backends import BACKENDS
from pibench.calibration.fit import load_calibration, shipped_calibration
from pibench.util.errors import PibenchError
from tests.conftest import ROOT, run_cli, write_suite

BASELINE = ROOT / ".ci" / "baselines" / "smoke.json"
SHIPPED = BACKENDS.get("crypten").shipped_calibration


def test_predictions_equal_measured_bytes_and_rounds():
    # the committed smoke record was measured by `pibench run`; the prediction never runs CrypTen
    proc = run_cli("cost", "suites/smoke.yaml", "--predict", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    measured = {v["name"]: v["measured"] for v in json.loads(BASELINE.read_text())["variants"]}
    for v in json.loads(proc.stdout):
        p, m = v["predicted"], measured[v["variant"]]
        assert (p["bytes"], p["rounds"]) == (m["bytes"], m["rounds"]), v["variant"]
        assert sum(k["bytes"] for k in p["by_kind"].values()) == p["bytes"]
        assert p["by_kind"]["softmax"]["bytes"] == m["by_kind"]["softmax"]["bytes"]


def test_shipped_models_by_hand():
    models = shipped_calibration("crypten").file.models
    # a secret x secret product opens both masked operands: 8 bytes per element, from each party
    assert models["linear"].bytes == models["mul"].bytes == [16]
    assert models["linear"].rounds == 1
    # ReLU: 464 bytes per element in 9 rounds; LayerNorm(rows, cols): 48 rc + 384 r + 16 c in 20:
    # 16 per element less than with centred * centred, since a square opens one masked operand, not two
    assert (models["relu"].bytes, models["relu"].rounds) == ([464], 9)
    assert (models["layernorm"].bytes, models["layernorm"].rounds) == ([48, 384, 16], 20)
    # tanh-GELU: 832 per element, 16 less than with x * x * x for the same reason
    assert models["gelu"].bytes == [832]
    assert len(models["softmax"].per_row_bytes) == 1024


def test_table_and_network_columns():
    """The predictions in the papers' table: GB and minutes per variant, labelled as predicted, savings
    against SM + LN + G, and the latency projected onto the network asked for by name."""
    out = run_cli("cost", "suites/gpt2_t128.yaml", "--predict", "--network", "paper-wan", "--columns", "all").stdout
    assert "Comm. (GB)" in out and "CrypTen pred." in out and "paper-wan proj." in out
    line = next(ln for ln in out.splitlines() if ln.startswith("SM + LN + G "))
    # measured by `pibench run suites/gpt2_t128.yaml` (README): 7,622,295,552 bytes and 2052 rounds
    assert "7.622" in line.split() and "2,052" in line.split() and "1.00×" in line.split()
    assert "[CrypTen pred.]: predicted by pibench, not measured:" in " ".join(out.split())


def test_other_settings_are_refused(tmp_path):
    suite = write_suite(tmp_path, "model: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm]\ncrypten: {precision_bits: 12}\n")
    proc = run_cli("cost", str(suite), "--predict")
    assert proc.returncode == 2
    assert "was measured under other crypten settings than suite" in proc.stderr and "precision_bits" in proc.stderr


def test_rows_longer_than_calibrated_are_refused(tmp_path):
    suite = write_suite(tmp_path, "model: {L: 1, H: 2, d: 16, T: 2048}\nvariants: [sm]\n")
    proc = run_cli("cost", str(suite), "--predict")
    assert proc.returncode == 2
    assert "softmax rows of length 2048 exceed the 1024 calibrated in" in proc.stderr
    assert proc.stderr.rstrip().endswith("run `pibench calibrate --max-row-length 2048`")


def test_options_need_predict():
    proc = run_cli("cost", "suites/smoke.yaml", "--network", "lan")
    assert (proc.returncode, proc.stderr) == (2, "pibench: error: --network: goes with --predict\n")
    proc = run_cli("cost", "suites/smoke.yaml", "--network", "lan", "--plot", "x")
    assert (proc.returncode, proc.stderr) == (2, "pibench: error: --network, --plot: go with --predict\n")


def test_calibrate_reproduces_the_shipped_exact_models(monkeypatch):
    """A calibration on a pair of op servers: bytes and rounds fitted exactly again equal the shipped
    ones; seconds are fitted too, here on the small byte samples (GPT-2-sized timings, as the shipped
    calibration took them, belong in `pibench calibrate` itself and in the benchmarks)."""
    from pibench.calibration.microbench import calibrate
    from pibench.models.opkinds import CALLS

    crypten = BACKENDS.get("crypten")
    # softmax's and argmax's bytes are tabulated: they have no byte samples
    small = {"softmax": (((2, 4, 8),), ((3, 8, 16),)), "argmax": (((1, 16),), ((2, 32),))}
    monkeypatch.setattr(type(crypten), "time_samples", lambda self, call: small.get(call.name, call.samples))
    mine = calibrate("crypten", crypten.default_settings(), 16, progress=lambda m: None, argmax_lengths=(2, 16))
    shipped = shipped_calibration("crypten").file
    # measured here with reused weight masks, shipped from before that setting: the same exact models
    # (each product of a calibration is a weight's first use, `ONE_OP_SETTINGS`)
    from pibench.calibration.fit import ONE_OP_SETTINGS

    ours = {k: v for k, v in mine.settings.items() if k not in ONE_OP_SETTINGS}
    assert ours == shipped.settings and mine.backend == "crypten" and mine.max_row_length == 16
    for kind in ("gelu", "relu", "layernorm", "linear", "attn_matmul", "mul"):
        assert (mine.models[kind].bytes, mine.models[kind].rounds) == (
            shipped.models[kind].bytes,
            shipped.models[kind].rounds,
        )
    assert mine.models["softmax"].per_row_bytes == (shipped.models["softmax"].per_row_bytes or [])[:16]
    argmax = shipped.models["argmax"]
    assert (mine.models["argmax"].lengths, mine.models["argmax"].per_row_bytes, mine.models["argmax"].rounds) == (
        [2, 16],
        (argmax.per_row_bytes or [])[:2],
        argmax.rounds[:2],  # type: ignore[index]
    )
    assert all(len(m.wall_s) == 4 and min(m.wall_s) >= 0 for m in mine.models.values())  # 4 features, nnls
    assert set(mine.models) == {n for n, c in CALLS.items() if c.calibrated} and mine.environment.cpu_count >= 1


def test_missing_calibration_file():
    with pytest.raises(PibenchError, match=r"calibration 'nope\.json' not found"):
        load_calibration("nope.json")


def measured_here(tmp_path):
    """The shipped calibration as if measured on this machine (its CPU and cores), so that tests of
    the time model's provenance do not depend on which machine runs them."""
    from pibench.util.machine import fingerprint

    here = json.loads(SHIPPED.read_text())
    cpu = {k: fingerprint()[k] for k in ("cpu_model", "cpu_count")}
    here["fingerprint"] |= cpu
    here["environment"] |= cpu
    path = tmp_path / "here.json"
    path.write_text(json.dumps(here))
    return str(path)


def test_predictions_say_where_their_time_model_comes_from(tmp_path):
    here = run_cli("cost", "suites/smoke.yaml", "--predict", "--calibration", measured_here(tmp_path))
    assert "time model from this machine" in here.stdout
    other = json.loads(SHIPPED.read_text())
    other["fingerprint"] |= {"cpu_model": "AMD EPYC (family 23, model 49)"}
    other["environment"]["cpu_model"] = "AMD EPYC (family 23, model 49)"
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    proc = run_cli("cost", "suites/smoke.yaml", "--predict", "--calibration", str(path), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    said = json.loads(proc.stdout)[0]["predicted"]["time_model"]
    assert said.startswith("another machine (AMD EPYC (family 23, model 49), ")
    assert "pibench calibrate --quick" in said


def test_other_local_products_keep_counts_and_flag_seconds(tmp_path):
    """Local products change a party's seconds, not its traffic: a suite multiplying by int64 gets the
    shipped (auto) calibration's bytes and rounds, and a time model that says it was fitted otherwise."""
    suite = write_suite(
        tmp_path, "model: {L: 1, H: 2, d: 32, T: 8}\nvariants: [sm_ln_g]\ncrypten: {local_products: int64}\n"
    )
    here = measured_here(tmp_path)
    proc = run_cli("cost", str(suite), "--predict", "--calibration", here, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    said = json.loads(proc.stdout)[0]["predicted"]
    assert said["time_model"].startswith("this machine under other settings (local_products auto there, int64 here)")
    default = write_suite(tmp_path, "model: {L: 1, H: 2, d: 32, T: 8}\nvariants: [sm_ln_g]\n", "d.yaml")
    same = json.loads(run_cli("cost", str(default), "--predict", "--calibration", here, "--format", "json").stdout)
    same = same[0]["predicted"]
    assert (said["bytes"], said["rounds"]) == (same["bytes"], same["rounds"]) and same["time_model"] == "this machine"
    precision = write_suite(
        tmp_path, "model: {L: 1, H: 2, d: 32, T: 8}\nvariants: [sm]\ncrypten: {precision_bits: 20}\n", "p.yaml"
    )
    refused = run_cli("cost", str(precision), "--predict", "--calibration", here)
    assert refused.returncode == 2 and "(differ: precision_bits)" in refused.stderr


def test_the_time_fit_predicts_a_held_out_size():
    """The time model's method on data it was not fitted to: seconds of a known per-call, per-byte and
    per-MAC cost (with 5% noise) at three sizes, and a fourth, twice the largest, held out."""
    from pibench.calibration.fit import nnls_fit

    def seconds(calls, byts, rounds, macs):  # 2 ms a call, 1 ns a byte, 0.1 ms a round, 0.05 ns a MAC
        return 2e-3 * calls + 1e-9 * byts + 1e-4 * rounds + 5e-11 * macs

    sizes = [(1.0, 1e6, 10, 1e8), (1.0, 4e6, 10, 8e8), (1.0, 8e6, 10, 3e9)]
    noise = [1.05, 0.95, 1.03]
    coef = nnls_fit([(list(f), seconds(*f) * n) for f, n in zip(sizes, noise, strict=True)])
    held_out = (1.0, 16e6, 10, 6e9)
    predicted = sum(c * f for c, f in zip(coef, held_out, strict=True))
    # 2e-3 + 0.016 + 1e-3 + 0.3 = 0.319 s
    assert abs(predicted / seconds(*held_out) - 1) < 0.25


def test_quick_mode_refits_seconds_only(monkeypatch):
    """--quick keeps a calibration's bytes and rounds and refits its seconds from this machine's timings.
    The op servers are replaced by a pair whose every call takes 2 ms plus 1 ns a byte (GPT-2-sized
    timings belong in the calibration run above and in benchmarks): the refitted seconds predict that."""
    from pibench.calibration import microbench as measure
    from pibench.calibration.fit import time_features
    from pibench.models.opkinds import CALLS

    class Pair:
        def __init__(self, backend, settings):
            pass

        def run(self, op, shapes):
            byts = 8 * math.prod(shapes[0])
            return {"bytes": byts, "rounds": 3, "wall_s": 2e-3 + 1e-9 * byts, "comm_s": 1e-3}

        def close(self):
            pass

    monkeypatch.setattr(measure, "OpPair", Pair)
    shipped = shipped_calibration("crypten").file
    settings = BACKENDS.get("crypten").default_settings()
    mine = measure.calibrate("crypten", settings, progress=lambda m: None, quick_from=shipped)
    assert mine.quick is True and mine.fingerprint["cpu_count"] >= 1
    for kind, model in shipped.models.items():
        counts = {"wall_s", "comm_s", "measured"}  # every model's seconds are this machine's now
        assert mine.models[kind].model_dump(exclude=counts) == model.model_dump(exclude=counts)
        assert mine.models[kind].measured is None
        assert len(mine.models[kind].wall_s) == len(model.wall_s)
    for sample in BACKENDS.get("crypten").time_samples(CALLS["gelu"]):
        byts = 8 * math.prod(sample[0])  # e.g. 128 x 3072: 3,145,728 bytes -> 2 ms + 3.1 ms = 5.146 ms
        feats = time_features("gelu", CALLS["gelu"].signature(sample), byts, 3)
        fitted = sum(c * f for c, f in zip(mine.models["gelu"].wall_s, feats, strict=True))
        assert fitted == pytest.approx(2e-3 + 1e-9 * byts, rel=1e-3)


def test_extend_measures_only_what_a_calibration_lacks(tmp_path):
    """--extend keeps a calibration's models and measures only the calls it has no model for (here the
    argmax, removed from a copy of the shipped one) and the row lengths it has not tabulated, each
    stamped with this machine; a vocabulary the table lacks is one line naming --extend."""
    from pibench.calibration.fit import CalibrationFile
    from pibench.calibration.microbench import extend

    shipped = shipped_calibration("crypten").file
    settings = BACKENDS.get("crypten").default_settings()
    without = CalibrationFile.model_validate(
        shipped.model_dump(mode="json")
        | {"models": {k: v for k, v in shipped.model_dump(mode="json")["models"].items() if k != "argmax"}}
    )
    mine, measured = extend(without, settings, (2, 16), progress=lambda m: None)
    assert measured == ["argmax"]
    for name, model in shipped.models.items():
        if name != "argmax":
            assert mine.models[name] == model  # kept as they were
    argmax = mine.models["argmax"]
    assert argmax.lengths == [2, 16] and argmax.per_row_bytes == (shipped.models["argmax"].per_row_bytes or [])[:2]
    assert argmax.measured and "cores of" in argmax.measured and mine.created == shipped.created
    more, measured = extend(mine, settings, (2, 16, 32), progress=lambda m: None)
    assert measured == ["argmax"] and more.models["argmax"].lengths == [2, 16, 32]
    suite = tmp_path / "v.yaml"
    suite.write_text("model: {L: 1, H: 2, d: 16, T: 4}\nscope: end_to_end\nvocab: 100\nvariants: [sm_ln_g]\n")
    proc = run_cli("cost", str(suite), "--predict")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "argmax over rows of 100 is not in calibration" in proc.stderr and "--extend" in proc.stderr
    # the whole sentence (it was once cut after "measures a suite's")
    assert proc.stderr.strip().endswith("measures the argmax at that suite's vocabulary")
