"""Records from the parties' counts to the file: merged consistently, and never lost on the way."""

from __future__ import annotations

import argparse
import errno
import json

import pytest

from pibench.measuring.party import merge_parties
from pibench.models.opkinds import KINDS
from pibench.results.records import read_record
from pibench.suites.loader import load_suite
from pibench.util.errors import PibenchError
from tests.conftest import fake_measured, fake_run, write_suite


def _party(rank: int, by_kind: dict[str, tuple[int, int]]) -> dict:
    """One party's result as `measure_variant` returns it; `by_kind`: kind -> (bytes sent, rounds)."""
    kinds = {k: {"sent": 0, "received": 0, "rounds": 0, "comm_s": 0.0, "wall_s": 0.0} for k in KINDS}
    for kind, (sent, rounds) in by_kind.items():
        kinds[kind] = {"sent": sent, "received": sent, "rounds": rounds, "comm_s": 0.5, "wall_s": 1.0}
    spread = {"wall_s_min": 2.0, "wall_s_max": 2.0, "comm_s_min": 1.0, "comm_s_max": 1.0}
    return {
        "rank": rank,
        "sent": sum(s for s, _ in by_kind.values()),
        "received": sum(s for s, _ in by_kind.values()),
        "rounds": sum(r for _, r in by_kind.values()),
        "comm_s": 1.0,
        "wall_s": 2.0,
        **spread,
        "by_kind": kinds,
        "dealer": {"sent": 0, "received": 0, "rounds": 0, "comm_s": 0.0, "wall_s": 0.0},
        "counters": {},
        "peak_rss_bytes": 1,
        "max_abs_error": 1e-3 if rank == 0 else None,
        "max_abs_reference": 1.0 if rank == 0 else None,
        "layers_measured": {"0": 1},
        "steps": [
            {
                "step": "layer 0",
                "stands_for": 1,
                "passes": 1,
                "sent": 1,
                "received": 1,
                "rounds": 1,
                "comm_s": 0.0,
                "wall_s": 1.0,
            }
        ],
        "choices": {},
    }


def test_parties_whose_kinds_differ_merge_into_a_valid_record(tmp_path):
    """Under SPU the two parties' receive counts differ kind by kind. Party 0: softmax 10 rounds, linear 5
    (total 15); party 1: softmax 7, linear 9 (total 16). The busier party per kind: 10 + 9 = 19 rounds,
    which is the total, so the kinds add up; the larger party's total (16) did not, and the record of a
    finished run was refused."""
    from pibench.measuring.measured import PartyResult
    from pibench.results.records import build_record

    parties = [_party(0, {"softmax": (100, 10), "linear": (40, 5)}), _party(1, {"softmax": (70, 7), "linear": (60, 9)})]
    merged = merge_parties(
        [PartyResult.model_validate(p) for p in parties], full=False, L=1, roles={0: "server", 1: "client"}
    )
    assert merged.rounds == 19
    assert (merged.by_kind["softmax"].rounds, merged.by_kind["linear"].rounds) == (10, 9)
    # bytes: sent by both, each byte once: softmax 100 + 70, linear 40 + 60
    assert merged.bytes == 270 and merged.by_kind["softmax"].bytes == 170
    assert [p.rounds for p in merged.parties] == [15, 16]  # each party's own total stays its own
    suite = load_suite(write_suite(tmp_path, "model: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm_ln_g]\n"))
    record = build_record(suite, [merged], fake_run())
    assert record.variants[0].measured.rounds == 19


def _args(out, **changes) -> argparse.Namespace:
    options = {"out": str(out), "accept_unusable": False, "format": "table", "columns": None, "baseline": None}
    options |= {"plot": None, "network": None, "predict": False, "backends": None}
    options |= {"force": False}
    return argparse.Namespace(**(options | changes))


def test_a_measurement_whose_record_is_invalid_is_saved_beside(tmp_path, capsys):
    """A run whose measurement does not make a valid record (here: kinds that do not add up to the total)
    still leaves what was measured on disk, and the one-line error says where."""
    from pibench.cli.common import finish

    suite = load_suite(write_suite(tmp_path, "model: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm_ln_g]\n"))
    good = fake_measured(1.0, 10.0)
    # 101 rounds in all, 100 in the kinds: as a measurement that reached the record unchecked
    measured = type(good).model_construct(**(dict(good) | {"rounds": 101}))
    out = tmp_path / "results" / "r.json"
    with pytest.raises(PibenchError) as err:
        finish(suite, [measured], fake_run(), _args(out))
    message = str(err.value)
    assert "\n" not in message and "the rounds of the kinds do not add up to rounds" in message
    beside = tmp_path / "results" / "r.invalid.json"
    assert message.endswith(f"what was measured is saved in {beside}")
    kept = json.loads(beside.read_text())
    assert kept["variants"][0]["measured"]["rounds"] == 101 and kept["suite"]["name"] == "s"
    assert not out.exists()  # no partial or invalid file under the record's own name


def test_a_record_that_cannot_be_written_is_kept_and_the_table_still_printed(tmp_path, capsys, monkeypatch):
    """A full disk (ENOSPC while writing): no file under the record's name, the table on stdout, the
    record in a stated fallback place, one line naming both, and the record there reads back valid."""
    import pibench.results.records as records
    from pibench.cli.common import finish

    suite = load_suite(write_suite(tmp_path, "model: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm_ln_g, sm_ln_r]\n"))
    out = tmp_path / "r.json"
    real_dump, fails = json.dump, []

    def dump(obj, f, **kw):  # the first write (the record's own) meets a full disk; later ones succeed
        if not fails:
            fails.append(1)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_dump(obj, f, **kw)

    monkeypatch.setattr(records.json, "dump", dump)
    measured = [fake_measured(2.0, 20.0), fake_measured(1.0, 10.0)]
    with pytest.raises(PibenchError) as err:
        finish(suite, measured, fake_run(), _args(out))
    kept = tmp_path / "r.unsaved.json"
    assert (
        str(err.value) == f"cannot write result record '{out}': No space left on device; the record is saved in {kept}"
    )
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert "SM + LN + R" in capsys.readouterr().out  # the table was printed all the same
    assert [v.name for v in read_record(kept).variants] == ["sm_ln_g", "sm_ln_r"]


def test_with_nowhere_to_write_the_record_goes_to_stdout(tmp_path, capsys, monkeypatch):
    import pibench.results.records as records

    def fail(*args, **kw):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(records.tempfile, "mkstemp", fail)
    where = records.keep_elsewhere(tmp_path / "r.json", {"kind": "x", "value": float("nan")}, "unsaved")
    assert where == "stdout (the last line)"
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"kind": "x", "value": None}


def test_a_file_of_the_wrong_kind_says_what_it_is_and_what_was_expected(tmp_path, capsys):
    """Run record, quality record, calibration and suite, each given where another kind is expected:
    one line naming the file, what it is and what was expected; exit 2 (a record given as a
    calibration once ended in "internal error: TypeError: unhashable type: 'dict'")."""
    import shutil

    from pibench.cli import main
    from tests.conftest import ROOT

    run, quality, cal = tmp_path / "run.json", tmp_path / "quality.json", tmp_path / "cal.json"
    shutil.copy(ROOT / "docs" / "gpt2_t128.json", run)
    shutil.copy(ROOT / "docs" / "quality_small.json", quality)
    shutil.copy(ROOT / "pibench" / "data" / "calibration-crypten-default.json", cal)
    suite = ROOT / "suites" / "smoke.yaml"
    cases = {
        (
            "cost",
            str(suite),
            "--predict",
            "--calibration",
            str(run),
        ): f"'{run}' is a run record (from pibench run), not a calibration",
        (
            "cost",
            str(suite),
            "--predict",
            "--calibration",
            str(quality),
        ): f"'{quality}' is a quality record (from pibench train), not a calibration",
        (
            "cost",
            str(suite),
            "--predict",
            "--calibration",
            str(suite),
        ): f"'{suite}' is a suite (YAML with model: and variants:), not a calibration",
        (
            "calibrate",
            "--quick",
            "--calibration",
            str(run),
        ): f"'{run}' is a run record (from pibench run), not a calibration",
        (
            "report",
            str(cal),
        ): f"'{cal}' is a calibration (from pibench calibrate), not a run record or a quality record",
        ("report", str(suite)): f"'{suite}' is a suite (YAML with model: and variants:), not a record",
        ("compare", str(run), str(quality)): f"'{quality}' is a quality record (from pibench train), not a run record",
        ("gate", str(cal), str(run)): f"'{cal}' is a calibration (from pibench calibrate), not a run record",
        ("cost", str(run)): f"'{run}' is a run record (from pibench run), not a suite",
        ("run", str(cal)): f"'{cal}' is a calibration (from pibench calibrate), not a suite",
        ("train", str(quality)): f"'{quality}' is a quality record (from pibench train), not a suite",
        ("calibrate", "--suite", str(run)): f"'{run}' is a run record (from pibench run), not a suite",
    }
    for argv, message in cases.items():
        assert main(list(argv)) == 2, argv
        captured = capsys.readouterr()
        assert captured.err == f"pibench: error: {message}\n", argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.json", "quality.json", "run.json"]  # nothing written


def test_errors_name_what_is_wrong(tmp_path):
    """A record whose variant config has an unknown field names that field (it once said only "1
    validation error for ModelConfig"); a misspelt network profile gets a "did you mean"."""
    import shutil

    from tests.conftest import ROOT, run_cli

    record = json.loads((ROOT / "docs" / "gpt2_t128.json").read_text())
    record["variants"][0]["config"]["activaton"] = "gelu"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(record))
    proc = run_cli("report", str(bad))
    assert (proc.returncode, proc.stderr) == (
        2,
        f"pibench: error: record '{bad}' is not a valid record: variants.0.config: not a model configuration: "
        "unknown field 'activaton' (did you mean 'activation'?)\n",
    )
    good = shutil.copy(ROOT / "docs" / "gpt2_t128.json", tmp_path / "good.json")
    proc = run_cli("report", str(good), "--network", "paperwan")
    assert proc.returncode == 2 and "network profile 'paperwan' (did you mean 'paper-wan'?)" in proc.stderr


def test_a_sampled_run_builds_only_the_layers_it_measures():
    """L=100000 once made rank 0 build every layer's weights (2.7 GB after 40 s, growing): now only the
    input stage and the sampled layers are built, each weight seeded by its name, so a layer's weights
    are the same whether or not the others exist."""
    import torch

    from pibench.counting.sampling import layer_sample
    from pibench.measuring.party import synthetic_weights
    from pibench.models.definition import layer_weight_specs
    from pibench.models.plaintext import TorchModel
    from pibench.models.variants import resolve

    # L=1e6 once took 44 s and 3.8 GiB (every layer's specs built, then filtered): now only those asked for
    deep = load_suite(write_suite_text("model: {L: 100000000, H: 2, d: 32, T: 8}\nvariants: [sm_ln_g]\n")).entries[0]
    layers = sorted(layer_sample(deep.config))
    weights = synthetic_weights(deep, 0, layers)
    assert set(weights) == set(layer_weight_specs(deep.config, layers))
    # one layer kind: 12 weights of layer 0 (LN x2 gain and bias, qkv, o, ffn in and out, each w and b)
    assert layers == [0] and len(weights) == 12
    cfg = resolve("sm_wnffn", {"L": 4, "H": 2, "d": 16, "T": 4})  # with a weight-norm parametrisation
    full = TorchModel(cfg, seed=3).effective_weights()
    names = layer_weight_specs(cfg, [2])
    part = TorchModel(cfg, seed=3, only=names).effective_weights()
    assert set(part) == set(names) and all(torch.equal(part[n], full[n]) for n in names)


def write_suite_text(text: str):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "s.yaml"
    path.write_text(text)
    return path


def test_records_go_only_to_regular_files(tmp_path):
    """--out naming a device (as root, /dev/full was once replaced by a JSON file), a FIFO or an existing
    record without --force: refused before anything runs, in one line; nothing is created."""
    import os

    from tests.conftest import ROOT, run_cli

    suite = ROOT / "suites" / "smoke.yaml"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    existing = tmp_path / "old.json"
    existing.write_text("{}")
    cases = {
        "/dev/null": "it is not a regular file (a device, FIFO or socket); records go only to regular files",
        str(fifo): "it is not a regular file",
        str(existing): f"result record '{existing}' exists; --force replaces it (or name another)",
    }
    for out, says in cases.items():
        proc = run_cli("run", str(suite), "--out", out, "--no-progress", timeout=60)
        assert proc.returncode == 2 and says in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert existing.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "old.json"]
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_a_full_disk_keeps_the_measurement(tmp_path, capsys):
    """A real full disk: a 64 kB tmpfs this test mounts (root only), filled to a few bytes. The record
    cannot be written there: the table is still printed, the record goes to the temporary folder, and
    the one-line error says where; nothing half-written is left on the full disk."""
    import os
    import shutil
    import subprocess

    from pibench.cli.common import finish
    from pibench.results.records import read_record

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("this machine cannot mount a tmpfs")
    try:
        with open(disk / "filler", "wb") as f:  # fill it up
            try:
                f.write(b"\0" * (1 << 20))
            except OSError:
                pass
        suite = load_suite(write_suite_text("model: {L: 1, H: 2, d: 16, T: 4}\nvariants: [sm_ln_g, sm_ln_r]\n"))
        out = disk / "r.json"
        with pytest.raises(PibenchError) as err:
            finish(suite, [fake_measured(1.0, 10.0), fake_measured(0.5, 6.0)], fake_run(), _args(out))
        assert "No space left on device" in str(err.value) and "\n" not in str(err.value)
        kept = str(err.value).rsplit("the record is saved in ", 1)[1]
        assert [v.name for v in read_record(kept).variants] == ["sm_ln_g", "sm_ln_r"]
        assert "SM + LN + R" in capsys.readouterr().out
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]
        os.unlink(kept)
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_sampled_run_of_a_hundred_million_layers_is_planned_in_bounded_memory(tmp_path):
    """Issue 32: a sampled run of L=1e6 took 44 s and 3.8 GiB building specs for every layer, and L=1e8
    grew past 8 GiB before it was killed. Every step of a sampled run is now independent of L (layers
    of a kind are alike): L=1e8 runs with each party well under 1 GiB, its bytes 1e8 times a layer's,
    exactly as the calibrated prediction says."""
    import json

    from tests.conftest import run_cli, write_suite

    suite = write_suite(tmp_path, "model: {L: 100000000, H: 2, d: 16, T: 4}\nvariants: [sm_ln_g]\nrepeats: 1\n")
    proc = run_cli("run", str(suite), "--out", str(tmp_path / "r.json"), "--no-progress", timeout=120)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "r.json").read_text())["variants"][0]["measured"]
    assert max(p["peak_rss_bytes"] for p in m["parties"]) < 2**30
    assert m["layers_measured"] == {"0": 100_000_000}
    predicted = json.loads(run_cli("cost", str(suite), "--predict", "--format", "json").stdout)[0]["predicted"]
    assert m["bytes"] == predicted["bytes"] and m["bytes"] % 100_000_000 == 0
