"""Sweeps (`pibench sweep`): validation of the sweep file, cells kept by key and resumed, failed cells,
Ctrl-C, and one report over the folder. The local executor; Ray's are in test_sweep_ray.py."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, party_processes, run_cli, start_cli, sweep_records, write_suite

TINY = """\
name: tiny
model: {L: 1, H: 2, d: 16, T: 4}
repeats: 1
variants: [sm_ln_g, sm_scfuffn]
"""
GRID = """\
name: grid
suite: tiny.yaml
axes:
  model.T: [4, 8]
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_suite(tmp_path, TINY, "tiny.yaml")
    write_suite(tmp_path, GRID, "grid.yaml")
    return tmp_path


def load(path: Path, text: str):
    from pibench.sweeps.spec import load_sweep

    path.write_text(text)
    return load_sweep(path)


def test_cells_are_the_cross_product_and_keys_follow_what_decides_the_counts(folder):
    sweep = load(folder / "grid.yaml", GRID)
    # 2 values of model.T x the base suite's 2 entries; the variant is the last axis
    assert sweep.axes == ("model.T", "variant")
    assert [c.describe() for c in sweep.cells] == [
        "model.T=4, variant=sm_ln_g",
        "model.T=4, variant=sm_scfuffn",
        "model.T=8, variant=sm_ln_g",
        "model.T=8, variant=sm_scfuffn",
    ]
    assert [c.suite().dims["T"] for c in sweep.cells] == [4, 4, 8, 8]
    assert len({c.key for c in sweep.cells}) == 4
    # how a cell runs without changing its counts (timeout, placement) keeps its key; an explicit list
    # naming the same cells gives the same keys
    again = load(folder / "again.yaml", GRID + "timeout: 90\nplacement: spread\n")
    assert [c.key for c in again.cells] == [c.key for c in sweep.cells]
    listed = load(
        folder / "listed.yaml",
        "suite: tiny.yaml\ncells:\n  - {model.T: 8, variant: sm_scfuffn}\n  - {model.T: 4, variant: sm_ln_g}\n",
    )
    assert [c.key for c in listed.cells] == [sweep.cells[3].key, sweep.cells[0].key]
    # a backend setting is part of the key where it is the cell's backend's: CrypTen's exp iterations
    # change its counts, and SPU's cells under both values are one measurement each (shown without it)
    settings = load(
        folder / "set.yaml",
        "suite: tiny.yaml\naxes:\n  backend: [crypten, spu]\n  crypten.functions: [{exp_iterations: 10}, {}]\n",
    )
    assert [c.describe() for c in settings.cells] == [
        'backend=crypten, crypten.functions={"exp_iterations":10}, variant=sm_ln_g',
        'backend=crypten, crypten.functions={"exp_iterations":10}, variant=sm_scfuffn',
        "backend=crypten, crypten.functions={}, variant=sm_ln_g",
        "backend=crypten, crypten.functions={}, variant=sm_scfuffn",
        "backend=spu, crypten.functions=-, variant=sm_ln_g",
        "backend=spu, crypten.functions=-, variant=sm_scfuffn",
    ]
    assert len({c.key for c in settings.cells}) == 6
    assert load(folder / "twice.yaml", GRID.replace("[4, 8]", "[4, 4]")).cells == sweep.cells[:2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("suite: tiny.yaml\naxes:\n  model.TT: [4]\n", "model.TT"),
        ("suite: tiny.yaml\naxes:\n  modle.T: [4]\n", "unknown suite key 'modle' (did you mean 'model'?)"),
        (
            "suite: tiny.yaml\naxes:\n  variants: [sm_g]\n",
            "'variants' cannot be an axis: name the entries with the axis 'variant'",
        ),
        ("suite: tiny.yaml\naxes:\n  model.T: [0]\n", "the cell model.T=0, variant=sm_ln_g: model.T:"),
        ("suite: tiny.yaml\naxes:\n  variant: [sm_ln_gg]\n", "unknown variant 'sm_ln_gg' (did you mean 'sm_ln_g'?)"),
        ("suite: tiny.yaml\naxes:\n  model.T: []\n", "give 1 to 64 values, not 0"),
        ("suite: tiny.yaml\n", "give 'axes' (their cross product) or 'cells' (a list), one of them"),
        ("suite: nowhere.yaml\naxes:\n  model.T: [4]\n", "suite: suite file"),
        (
            "suite: tiny.yaml\naxes:\n  model.T: [4]\nplacment: spread\n",
            "unknown key 'placment' (did you mean 'placement'?)",
        ),
        # 40 x 30 x 2 entries = 2400 cells: refused before any cell is built
        (
            "suite: tiny.yaml\naxes:\n  model.T: ["
            + ", ".join(str(t) for t in range(4, 44))
            + "]\n  seed: ["
            + ", ".join(str(s) for s in range(30))
            + "]\n",
            "2400 cells (1200 combinations x 2 variants); a sweep has at most 1000",
        ),
    ],
)
def test_bad_sweeps_are_one_line_naming_the_file_and_key(folder, text, message):
    path = folder / "bad.yaml"
    path.write_text(text)
    proc = run_cli("sweep", str(path), "--out", str(folder / "out"), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"pibench: error: {path}") and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (folder / "out").exists()  # nothing written


def _sweep(folder: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "sweep", str(folder / "grid.yaml"), "--out", str(folder / "out"), "--no-progress", *extra, timeout=timeout
    )


def test_a_sweep_measures_each_cell_once_and_only_new_cells_after_an_axis_grows(folder):
    (folder / "grid.yaml").write_text(GRID.replace("[4, 8]", "[4]"))
    proc = _sweep(folder)
    assert proc.returncode == 0, proc.stderr
    assert "2 cells, 0 finished before, 2 to run; executor local" in proc.stderr
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "out" / "cells").iterdir()}
    again = _sweep(folder)
    assert again.returncode == 0 and "2 cells, 2 finished before, 0 to run" in again.stderr
    (folder / "grid.yaml").write_text(GRID)
    grown = _sweep(folder)
    assert grown.returncode == 0 and "4 cells, 2 finished before, 2 to run" in grown.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "out" / "cells").iterdir()}
    assert {k: after[k] for k in before} == before and len(after) == 4  # the first records untouched
    records = sweep_records(folder / "out")
    assert set(records) == {(4, "sm_ln_g"), (4, "sm_scfuffn"), (8, "sm_ln_g"), (8, "sm_scfuffn")}
    # a sweep's cells run on warm parties (kept from one cell to the next; the first of each sweep started
    # for it), and count what `pibench run` counts on parties started afresh
    assert sorted(r["run"]["warm_parties"] for r in records.values()) == [False, False, True, True]
    cold = write_suite(folder, TINY.replace("T: 4", "T: 8").replace("[sm_ln_g, sm_scfuffn]", "[sm_scfuffn]"), "c.yaml")
    assert run_cli("run", str(cold), "--out", str(folder / "cold.json"), "--no-progress").returncode == 0
    started = json.loads((folder / "cold.json").read_text())["variants"][0]["measured"]
    warm = records[(8, "sm_scfuffn")]["variants"][0]["measured"]
    assert {k: (v["bytes"], v["rounds"]) for k, v in warm["by_kind"].items()} == {
        k: (v["bytes"], v["rounds"]) for k, v in started["by_kind"].items()
    }
    # each cell is `pibench run` of the one-variant suite: the linear layers' bytes by hand, 16 bytes per
    # element of each operand of a Beaver product (both parties open both masked operands, 8 bytes each):
    # T=4: QKV (4,16)x(16,48), O (4,16)x(16,16), FFN (4,16)x(16,64), (4,64)x(64,16):
    #   16 * ((64 + 768) + (64 + 256) + (64 + 1024) + (256 + 1024)) = 16 * 3520 = 56,320
    # T=8: 16 * ((128 + 768) + (128 + 256) + (128 + 1024) + (512 + 1024)) = 16 * 3968 = 63,488
    for t, linear in ((4, 56_320), (8, 63_488)):
        kinds = records[(t, "sm_ln_g")]["variants"][0]["measured"]["by_kind"]
        assert (kinds["linear"]["bytes"], kinds["linear"]["rounds"]) == (linear, 4)  # 4 products, 1 round each
    # one table: a row per cell, the axis as a column, savings against SM + LN + G within each T
    report = run_cli("report", str(folder / "out"), "--format", "csv")
    rows = {(r["model.T"], r["variant"]): r for r in csv.DictReader(io.StringIO(report.stdout))}
    for t in (4, 8):
        base, other = (records[(t, v)]["variants"][0]["measured"] for v in ("sm_ln_g", "sm_scfuffn"))
        assert float(rows[(str(t), "sm_scfuffn")]["x_comm"]) == pytest.approx(base["bytes"] / other["bytes"])
        assert float(rows[(str(t), "sm_scfuffn")]["x_time"]) == pytest.approx(base["wall_s"] / other["wall_s"])
        assert float(rows[(str(t), "sm_ln_g")]["x_comm"]) == 1.0
        assert int(rows[(str(t), "sm_ln_g")]["rounds"]) == base["rounds"]


def _cell_file(folder: Path, t: int, variant: str) -> Path:
    (path,) = [
        p
        for p in (folder / "out" / "cells").glob(f"{variant}-*.json")
        if json.loads(p.read_text())["suite"]["dims"]["T"] == t
    ]
    return path


def test_a_record_is_used_only_as_its_own_cells_and_only_from_this_version(folder):
    """Issue 32: a record copied under another cell's file name (T=8's as the T=4 cell) was listed as
    finished, never measured again, and reported as that cell. Now it is measured again, and said so; a
    record measured by another version of pibench's measuring code is measured again too, unless
    --reuse-other-versions keeps it (said)."""
    assert _sweep(folder).returncode == 0
    t4, t8 = _cell_file(folder, 4, "sm_ln_g"), _cell_file(folder, 8, "sm_ln_g")
    t4.write_text(t8.read_text())  # the misplaced record
    listed = run_cli("sweep", str(folder / "grid.yaml"), "--out", str(folder / "out"), "--list").stdout
    assert "misplaced     model.T=4, variant=sm_ln_g" in listed
    again = _sweep(folder)
    assert again.returncode == 0, again.stderr
    assert (
        f"cell model.T=4, variant=sm_ln_g: '{t4}' is not its record: it was measured at T=8, the cell is at T=4; measuring it again"
        in again.stderr
    )
    assert "4 cells, 3 finished before, 1 to run" in again.stderr
    assert json.loads(t4.read_text())["suite"]["dims"]["T"] == 4  # measured again, in its own place
    # another version of the measuring code
    other = _cell_file(folder, 4, "sm_scfuffn")
    record = json.loads(other.read_text())
    record["environment"]["code"] = "0" * 64
    other.write_text(json.dumps(record))
    kept = _sweep(folder, "--reuse-other-versions")
    assert kept.returncode == 0 and "4 cells, 4 finished before, 0 to run" in kept.stderr
    assert "1 cells measured by another version of pibench are kept (--reuse-other-versions)" in kept.stderr
    again = _sweep(folder)
    assert again.returncode == 0
    assert (
        "cell model.T=4, variant=sm_scfuffn: its measuring code differs from this pibench's (made at commit"
        in again.stderr
    )
    assert "4 cells, 3 finished before, 1 to run" in again.stderr
    assert json.loads(other.read_text())["environment"]["code"] != "0" * 64


def _start(folder: Path) -> subprocess.Popen[str]:
    return start_cli("sweep", str(folder / "grid.yaml"), "--out", str(folder / "out"), "--no-progress")


def _wait_for_parties(proc: subprocess.Popen[str], cells_done: int, folder: Path, limit_s: float = 120) -> dict:
    """The party processes of the cell after `cells_done` finished ones (bounded wait)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        done = len(list((folder / "out" / "cells").glob("*.json"))) if (folder / "out" / "cells").exists() else 0
        parties = party_processes(proc.pid)
        if done == cells_done and len(parties) == 2:
            return parties
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the sweep's parties did not start")


def test_a_failed_cell_is_kept_apart_the_others_go_on_and_retry_failed_reruns_it(folder):
    (folder / "grid.yaml").write_text(GRID.replace("[4, 8]", "[4]"))
    proc = _start(folder)
    try:
        _wait_for_parties(proc, 0, folder)[1].kill()  # the first cell's client dies
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        "pibench: error: 1 of 2 cells failed (first: model.T=4, variant=sm_ln_g: party 1 (client) exited"
    )
    assert "--retry-failed runs them again" in last
    assert len(sweep_records(folder / "out")) == 1  # the other one measured
    (failure,) = (folder / "out" / "failed").glob("*.json")
    data = json.loads(failure.read_text())
    assert data["kind"] == "pibench.sweep-failure" and data["values"] == {"model.T": 4, "variant": "sm_ln_g"}
    # a rerun does not retry it (and still says so), --retry-failed runs it alone
    skipped = _sweep(folder)
    assert skipped.returncode == 2 and "0 to run, 1 failed before (--retry-failed reruns them)" in skipped.stderr
    retried = _sweep(folder, "--retry-failed")
    assert retried.returncode == 0, retried.stderr
    assert "2 cells, 1 finished before, 1 to run" in retried.stderr
    assert len(sweep_records(folder / "out")) == 2 and not list((folder / "out" / "failed").glob("*.json"))


def test_ctrl_c_loses_only_the_cell_in_flight_and_leaves_no_process(folder):
    (folder / "grid.yaml").write_text(GRID.replace("[4, 8]", "[4]"))
    proc = _start(folder)
    try:
        parties = _wait_for_parties(proc, 1, folder)  # the second cell running, the first recorded
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "pibench: interrupted" in err
    assert len(sweep_records(folder / "out")) == 1
    _, alive = psutil.wait_procs(list(parties.values()), timeout=10)
    assert not alive
    states = [
        line.split()[0]
        for line in run_cli(
            "sweep", str(folder / "grid.yaml"), "--out", str(folder / "out"), "--list"
        ).stdout.splitlines()
    ]
    assert states == ["finished", "to"]  # "to run": a rerun measures the other


def test_report_of_a_folder_that_is_not_a_sweep_is_one_line(tmp_path):
    proc = run_cli("report", str(tmp_path))
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == f"pibench: error: '{tmp_path}' is not a sweep folder: it has no sweep.json (made by pibench sweep)"
    )


def test_the_shipped_sweeps_report_groups_savings_by_t_and_backend(tmp_path):
    """docs/sweeps/papers_t (30 cells, measured): one row per cell, and each cell's savings against
    SM + LN + G of the same T and backend, recomputed here from the records' bytes."""
    folder = ROOT / "docs" / "sweeps" / "papers_t"
    proc = run_cli("report", str(folder), "--format", "csv", "--plot", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 30 and {(r["model.T"], r["backend"]) for r in rows} == {
        (t, b) for t in ("64", "128", "256") for b in ("crypten", "spu")
    }
    records = {
        (rec["suite"]["dims"]["T"], rec["backend"]["name"], rec["variants"][0]["name"]): rec["variants"][0]["measured"]
        for rec in (json.loads(p.read_text()) for p in (folder / "cells").glob("*.json"))
    }
    for r in rows:
        key = (int(r["model.T"]), r["backend"])
        base, cell = records[(*key, "sm_ln_g")], records[(*key, r["variant"])]
        assert float(r["x_comm"]) == pytest.approx(base["bytes"] / cell["bytes"])
        assert float(r["comm_GB"]) == cell["bytes"] / 1e9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["papers_t-model_T.png", "papers_t-model_T.svg"]


def test_a_backend_setting_axis_draws_the_accuracy_cost_frontier(tmp_path):
    """Where an axis is a backend setting, --plot draws MPC error against GB: here the shipped folder's
    CrypTen cells relabelled as two values of a setting (the plot reads the manifest's values)."""
    import shutil

    folder = tmp_path / "sweep"
    shutil.copytree(ROOT / "docs" / "sweeps" / "papers_t", folder)
    manifest = json.loads((folder / "sweep.json").read_text())
    cells = [c for c in manifest["cells"] if c["backend"] == "crypten" and c["values"]["model.T"] in (64, 128)]
    for c in cells:
        c["values"] = {
            "crypten.functions": {"exp_iterations": 8 if c["values"]["model.T"] == 64 else 10},
            "variant": c["variant"],
        }
    manifest |= {"cells": cells, "axes": ["crypten.functions", "variant"]}
    (folder / "sweep.json").write_text(json.dumps(manifest))
    proc = run_cli("report", str(folder), "--plot", str(tmp_path / "plots"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["papers_t-frontier.png", "papers_t-frontier.svg"]
    # 10 rows, the setting's value a column
    assert proc.stdout.splitlines()[1].split()[:2] == ["crypten.functions", "variant"]
    assert proc.stdout.count('{"exp_iterations":10}') == 5
