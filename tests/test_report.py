"""`pibench report`: the papers' layout, measured beside published, five formats, plots."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess

import pytest

from pibench.errors import PibenchError
from pibench.records import build_record, write_record
from pibench.report import build_report, headers, render
from pibench.suite import load_suite
from tests.conftest import ROOT, fake_measured, fake_run, run_cli


@pytest.fixture(scope="module")
def t128_record(tmp_path_factory):
    """A gpt2_t128 record with hand-chosen measurements: baseline 10 GB / 60 s, SM+LN+R 8 GB / 40 s,
    every other variant 4 GB / 30 s. (Full-size runs belong in suites, not unit tests.)"""
    suite = load_suite(ROOT / "suites" / "gpt2_t128.yaml")
    figures = {"sm_ln_g": (10.0, 60.0), "sm_ln_r": (8.0, 40.0)}
    measured = [fake_measured(*figures.get(e.name, (4.0, 30.0))) for e in suite.entries]
    record = build_record(suite, measured, fake_run())
    path = write_record(tmp_path_factory.mktemp("rec") / "t128.json", record)
    return path, record


def test_measured_beside_published(t128_record):
    _, record = t128_record
    rows = {r.variant: r for r in build_report(record).rows}
    relu = rows["sm_ln_r"]
    # measured: 10 GB / 8 GB = 1.25x, 60 s / 40 s = 1.5x; 40 s = 0.667 min
    assert (relu.save_comm, relu.save_lat, round(relu.lat_min, 3)) == (1.25, 1.5, 0.667)
    # published (egal_tab3): 9.44 GB, 6.06 min, PPL 2.76; savings 25.32/9.44 = 2.68x, 8.21/6.06 = 1.35x
    assert (relu.pub_comm_gb, relu.pub_lat_min, relu.ppl, relu.pub_source) == (9.44, 6.06, 2.76, "egal_tab3")
    assert (round(relu.pub_save_comm, 2), round(relu.pub_save_lat, 2)) == (2.68, 1.35)
    # the pruned He & Hofmann row (aero_tab4) matches only with its 8 kept FFN blocks: 6.30 GB
    assert rows["hehofmann_scfuffn_pruned"].pub_comm_gb == 6.30
    assert rows["sm_scfuffn"].nonlinear == "SM:144×ℝ^{128×128}"


def test_table_says_what_produced_each_column(t128_record):
    path, _ = t128_record
    proc = run_cli("report", str(path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Comm. (GB) [CrypTen]" in out and "Comm. (GB) [SPU, pub.]" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("SM + ScFuFFN "))
    # 4 GB, 30 s = 0.5 min; savings 10/4 = 2.50x and 60/30 = 2.00x; published 6.43 GB, 4.76 min, 3.94x, 1.72x
    cells = re.split(r"\s{2,}", line.strip())
    assert cells == [
        "SM + ScFuFFN",
        "3.48",
        "SM:144×ℝ^{128×128}",
        "1.8B",
        "7.7B",
        "4.000",
        "0.500",
        "2.50×",
        "2.00×",
        "6.43",
        "4.76",
        "3.94×",
        "1.72×",
        # projected, from 30 s of which 1 s in exchanges, 100 rounds, 2e9 bytes sent by each party:
        # wire time at 1 Gbit/s: 2e9 * 8 * 1500/1448 / 1e9 = 16.57 s; lan = 29 + max(1, 16.57) + 100 * 0.5 ms
        # = 45.62 s = 0.76 min; paper-wan: 165.75 s wire, 29 + 165.75 + 100 * 80 ms = 202.75 s = 3.38 min
        "0.76",
        "3.38",
    ]
    assert "Lat. (min.) [CrypTen, lan, proj.]" in out and "Lat. (min.) [CrypTen, paper-wan, proj.]" in out
    assert "[CrypTen, PROFILE, proj.]: projected from this loopback run onto lan (1 Gbit/s, 0.5 ms RTT)" in out
    assert "[CrypTen]: measured by pibench: CrypTen 0.4.1 2PC (TFP triples, 16 fraction bits" in out
    assert "network loopback" in out and "SecretFlow SPU, BumbleBee" in out


def test_markdown_csv_json(t128_record):
    path, _ = t128_record
    md = run_cli("report", str(path), "--format", "markdown").stdout
    assert "| Network Arch." in md and "| SM + LN + G " in md
    rows = list(csv.DictReader(io.StringIO(run_cli("report", str(path), "--format", "csv").stdout)))
    assert len(rows) == 10 and rows[1]["Network Arch."] == "SM + LN + R"
    assert rows[1]["Savings Comm. [pub.]"] == "2.68×" and rows[1]["measured_by"].startswith("CrypTen 0.4.1")
    data = json.loads(run_cli("report", str(path), "--format", "json").stdout)
    assert data[0]["rows"][0]["pub_comm_gb"] == 25.32 and data[0]["baseline"] == "SM + LN + G"


def test_latex_is_a_tabular(t128_record, tmp_path):
    path, _ = t128_record
    tex = run_cli("report", str(path), "--format", "latex").stdout
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    body = [ln for ln in tex.splitlines() if ln.endswith(r"\\") and "multicolumn" not in ln]
    assert len(body) == 11 and all(ln.count(" & ") == 15 - 1 for ln in body)
    assert r"SM:$144\times\mathbb{R}^{128\times 128}$" in tex and "ℝ" not in tex and "×" not in tex
    if shutil.which("pdflatex") is None:
        pytest.skip("no pdflatex here to compile the table")
    doc = tmp_path / "t.tex"
    doc.write_text(
        "\\documentclass{article}\\usepackage{amssymb}\\usepackage{graphicx}\\begin{document}"
        f"\\resizebox{{\\textwidth}}{{!}}{{{tex}}}\\end{{document}}\n"
    )
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_plots(t128_record, tmp_path):
    path, _ = t128_record
    proc = run_cli("report", str(path), "--plot", str(tmp_path / "plots"))
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["t128-comm_by_kind.png", "t128-comm_by_kind.svg", "t128-savings.png", "t128-savings.svg"]
    assert (tmp_path / "plots" / "t128-savings.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_projection_profiles_and_emulated_records(t128_record):
    _, record = t128_record
    rep = build_report(record, networks=["wan", "10mbit,1s"])
    assert headers(rep)[-2:] == ["Lat. (min.) [CrypTen, wan, proj.]", "Lat. (min.) [CrypTen, 10mbit,1s, proj.]"]
    emulated = {**record, "run": {**record["run"], "network": "paper-wan (100 Mbit/s, 80 ms RTT), emulated"}}
    rep = build_report(emulated)
    assert all(v is None for r in rep.rows for v in r.projected_lat_min.values())
    assert "this run was not one" in rep.projected_by
    assert "emulated" in rep.measured_by


def test_no_baseline_and_unknown_format(t128_record):
    _, record = t128_record
    without = {**record, "variants": [v for v in record["variants"] if v["name"] != "sm_ln_g"]}
    rep = build_report(without)  # no sm_ln_g in the record: no savings, no error
    assert rep.baseline is None and rep.rows[0].save_comm is None
    with pytest.raises(
        PibenchError, match=r"--baseline 'sm_ln_gg' is not a variant of the record \(did you mean 'sm_ln_g'\?\)"
    ):
        build_report(record, baseline="sm_ln_gg")
    assert build_report(record, baseline="sm_ln_r").baseline == "SM + LN + R"
    with pytest.raises(PibenchError, match="unknown format"):
        render([rep], "docx")


def test_old_record_is_refused_with_advice(tmp_path, t128_record):
    _, record = t128_record
    old = write_record(tmp_path / "old.json", {**record, "schema_version": 0})
    proc = run_cli("report", str(old))
    assert proc.returncode == 2
    assert proc.stderr == (
        f"pibench: error: record '{old}' is not a record this pibench reads: schema_version 0; "
        "it reads version 2; rerun the suite\n"
    )
    v1 = write_record(tmp_path / "v1.json", {**record, "schema_version": 1})
    assert "version 1 (before pibench's backend interface" in run_cli("report", str(v1)).stderr


def test_predicted_beside_measured(t128_record):
    path, record = t128_record
    base = next(v for v in record["variants"] if v["name"] == "sm_ln_g")
    # the record holds the calibrated prediction next to the (here invented) measurement
    assert base["predicted"]["bytes"] == 7_622_295_552 and base["predicted"]["rounds"] == 2052
    out = run_cli("report", str(path), "--predict").stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("SM + LN + G "))
    cells = re.split(r"\s{2,}", line.strip())
    assert cells[5] == "10.000" and cells[-2] == "7.622"  # measured (invented) beside predicted
    assert "Comm. (GB) [CrypTen, predicted]" in out and "[CrypTen, predicted]: the calibrated cost model" in out
