"""`pibench report`: the papers' layout, measured beside published, five formats, plots."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess

import pandas as pd
import pytest

from pibench.results.records import build_record, validate_record, write_record
from pibench.results.report import build_report
from pibench.results.tables import columns, render
from pibench.suites.loader import load_suite
from pibench.util.errors import PibenchError
from pibench.util.machine import Git
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


def cells_of(out: str, label: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if ln.startswith(label + "  "))
    return re.split(r"\s{2,}", line.strip())


def test_terminal_table_fits_120_columns_and_says_what_produced_it(t128_record):
    path, _ = t128_record
    proc = run_cli("report", str(path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert max(len(line) for line in out.splitlines()) <= 120
    # two header lines: tops over their sub-columns
    assert re.search(r"Comm\. \(GB\)\s+Lat\. \(min\.\)\s+Savings Comm\.\s+─* Savings Lat\. ─*", out)
    assert re.search(
        r"Network Arch\.\s+CrypTen\s+CrypTen\s+CrypTen\s+pub\.\s+CrypTen\s+pub\.\s+lan proj\.\s+paper-wan proj\.", out
    )
    # 4 GB, 30 s = 0.5 min; savings 10/4 = 2.50x and 60/30 = 2.00x; published 3.94x, 1.72x (egal_tab3);
    # projected latency savings: the baseline (60 s, 1 s in exchanges, 100 rounds, 5e9 bytes sent by
    # each party) on lan: 59 + 5e9*8*1500/1448/1e9 (41.44 s) + 100*0.5 ms = 100.49 s; SM + ScFuFFN
    # (2e9 bytes each): 29 + 16.57 + 0.05 = 45.62 s; 100.49 / 45.62 = 2.20x. paper-wan: 59 + 414.36 + 8
    # = 481.36 s against 29 + 165.75 + 8 = 202.75 s: 2.37x.
    assert cells_of(out, "SM + ScFuFFN") == [
        "SM + ScFuFFN",
        "4.000",
        "0.500",
        "2.50×",
        "3.94×",
        "2.00×",
        "1.72×",
        "2.20×",
        "2.37×",
    ]
    assert "Not shown, to fit 120 columns: spread, published_abs, projected_lat, cost" in out
    assert "[PROFILE proj.]: CrypTen, projected from this loopback run onto lan (1 Gbit/s, 0.5 ms RTT)" in " ".join(
        out.split()
    )
    assert "[CrypTen]: measured by pibench: CrypTen 0.4.1 2PC (TFP triples, 16 fraction bits" in out


def test_columns_are_chosen_by_group_and_width(t128_record, tmp_path):
    path, _ = t128_record
    wide = run_cli("report", str(path), env={"COLUMNS": "400"}).stdout
    assert "Not shown" not in wide and "#Nonlinear Ops" in wide and "SPU, pub." in wide
    picked = run_cli("report", str(path), "--columns", "cost,comm,rounds,error,memory").stdout
    # PPL 3.48 (egal_tab3), analytic FLOPs, 4 GB, 100 rounds, error 1e-4, peak RSS 1 byte = 0.00 GB
    assert cells_of(picked, "SM + ScFuFFN") == [
        "SM + ScFuFFN",
        "3.48",
        "SM:144×ℝ^{128×128}",
        "1.8B",
        "7.7B",
        "4.000",
        "100",
        "1.0e-04",
        "0.00",
    ]
    assert "Not shown" not in picked and "[SPU, pub.]" in picked  # PPL is published
    bad = run_cli("report", str(path), "--columns", "comm,savngs")
    assert bad.returncode == 2
    assert bad.stderr.startswith("pibench: error: --columns: unknown column group 'savngs' (did you mean 'savings'?)")


def test_csv_and_json_of_two_records_are_one_numeric_frame(t128_record, tmp_path):
    import pandas as pd

    path, record = t128_record
    other = write_record(tmp_path / "other.json", record)
    for fmt, read in (("csv", pd.read_csv), ("json", pd.read_json)):
        out = tmp_path / f"r.{fmt}"
        out.write_text(run_cli("report", str(path), str(other), "--format", fmt).stdout)
        df = read(out)
        assert len(df) == 20 and sorted(set(df["record"])) == sorted({str(path), str(other)})
        assert set(df["suite"]) == {"gpt2_t128"} and set(df["backend"]) == {"CrypTen"}
        for key in ("comm_gb", "lat_min", "comm_savings", "lat_savings", "pub_comm_savings", "rounds", "flops_ffn",
                    "proj_lat_savings_paper_wan", "max_abs_error", "peak_rss_gb"):  # fmt: skip
            assert pd.api.types.is_numeric_dtype(df[key]), (fmt, key)
        relu = df[(df["variant"] == "sm_ln_r") & (df["record"] == str(path))].iloc[0]
        # 10 GB / 8 GB = 1.25; published 25.32 / 9.44 = 2.682
        assert (relu["comm_gb"], relu["comm_savings"], relu["rounds"]) == (8.0, 1.25, 100)
        assert round(relu["pub_comm_savings"], 3) == 2.682 and relu["label"] == "SM + LN + R"


def test_markdown(t128_record):
    path, _ = t128_record
    md = run_cli("report", str(path), "--format", "markdown").stdout
    assert "| Network Arch." in md and "| SM + LN + G " in md and "Comm. (GB) [CrypTen]" in md
    assert "Savings Lat. [paper-wan proj.]" in md and "#Nonlinear Ops" in md
    # issue 32: 11 columns of dashes once stood in a pasted table; a column with no figure is left out
    header, _, *rows = [ln for ln in md.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert all(any(row[i] != "-" for row in cells) for i in range(len(cells[0])))
    assert "Top-1 agr." not in header  # no accuracy on real text in this record
    # asked for by name, a group is shown even where it is empty
    asked = run_cli("report", str(path), "--format", "markdown", "--columns", "accuracy").stdout
    assert "Top-1 agr. [CrypTen]" in asked


def test_predicted_columns_need_predict(t128_record):
    """Issue 32: `--columns predicted` without `--predict` printed an empty table; it says why instead."""
    path, _ = t128_record
    proc = run_cli("report", str(path), "--columns", "predicted")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "pibench: error: --columns predicted: the predicted columns come with --predict; add it\n"


def test_the_footer_names_the_weights(t128_record):
    """Issue 32: with Hugging Face weights the footer did not name them; it names them, or says the
    weights were synthetic."""
    _, record = t128_record
    from pibench.results.report import measured_by

    assert "synthetic weights (seed 0)" in measured_by(record)
    hf = record.model_copy(
        update={"suite": record.suite.model_copy(update={"source": {"weights": {"huggingface": "../gpt2"}}})}
    )
    assert "weights huggingface ../gpt2" in measured_by(hf)


def test_latex_is_booktabs_with_two_level_headers(t128_record, tmp_path):
    path, _ = t128_record
    tex = run_cli("report", str(path), "--format", "latex").stdout
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert all(rule in tex for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){4-5}"))
    # the label column wraps; numbers right-aligned; savings' tops span measured and published
    assert r"\begin{tabular}{@{}>{\raggedright\arraybackslash}p{2.4cm}rrrrrr@{}}" in tex
    assert r"\multicolumn{2}{c}{Sav. comm. ($\times$)}" in tex and r"\multicolumn{2}{c}{Sav. lat. ($\times$)}" in tex
    assert " & Comm. & Lat. & " in tex and "Network Arch. & (GB) & (min.) & CrypTen & pub. & CrypTen & pub." in tex
    body = [ln for ln in tex.splitlines() if ln.endswith(r"\\") and "&" in ln]
    # tops, sub-columns, then 10 rows of 7 columns: SM + LN + R 8 GB, 40 s, 1.25x (2.68x published), 1.5x (1.35x)
    assert len(body) == 12 and body[0].count(" & ") == 4 and all(ln.count(" & ") == 6 for ln in body[1:])
    assert r"SM + LN + R & 8.000 & 0.667 & 1.25 & 2.68 & 1.50 & 1.35 \\" in body
    caption = next(ln for ln in tex.splitlines() if ln.startswith(r"\caption{"))
    assert caption.startswith(
        r"\caption{gpt2\_t128 (L=12, H=12, d=768, T=128). Measured by pibench under CrypTen 0.4.1 2PC (TFP triples"
    )
    # the published rows by paper and table, not by the reference table's keys (egal_tab3, aero_tab4)
    assert "(AERO (Jha \\& Reagen 2024), Table 4; Entropy-Guided Attention (Jha \\& Reagen 2025), Table 3)" in caption
    assert "_tab" not in caption and "egal" not in caption and len(caption) < 700
    assert r"\label{tab:gpt2-t128-crypten}" in tex and r"\begin{table}[t]" in tex and "table*" not in tex
    assert str(path) not in tex.split("\n", 1)[1] and "×" not in tex
    # more columns than one column of a paper holds: both columns (table*); more than twice: scaled too
    wide = run_cli(
        "report", str(path), "--format", "latex", "--columns", "comm,latency,savings,published,projected"
    ).stdout
    assert r"\begin{table*}[t]" in wide and r"\end{table*}" in wide and "resizebox" not in wide
    widest = run_cli("report", str(path), "--format", "latex", "--columns", "all").stdout
    assert r"\begin{table*}[t]" in widest and r"\resizebox{\textwidth}{!}{%" in widest
    cost = run_cli("report", str(path), "--format", "latex", "--columns", "cost").stdout
    assert r"SM:$144\times\mathbb{R}^{128\times 128}$" in cost and "ℝ" not in cost
    if shutil.which("pdflatex") is None:
        pytest.skip("no pdflatex here to compile the table")
    doc = tmp_path / "t.tex"  # one column of a two-column paper at 9 pt
    doc.write_text(
        "\\documentclass[twocolumn,9pt]{extarticle}\\usepackage[margin=2cm]{geometry}"
        "\\usepackage{booktabs,array,amssymb}\\begin{document}"
        f"{tex}\\end{{document}}\n"
    )
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "Overfull \\hbox" not in proc.stdout  # fits the column


def test_plots(t128_record, tmp_path):
    path, _ = t128_record
    proc = run_cli("report", str(path), "--plot", str(tmp_path / "plots"))
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["t128-comm_by_kind.png", "t128-comm_by_kind.svg", "t128-savings.png", "t128-savings.svg"]
    assert (tmp_path / "plots" / "t128-savings.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_say_what_they_show():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pibench.results.plots import _comm_by_kind, _savings
    from pibench.results.records import read_record

    tiny = read_record(ROOT / "docs" / "same_label.json")  # 2.47 MB at most, nothing published
    rep = build_report(tiny)
    fig = _comm_by_kind(plt, rep)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "communication (MB, both parties)"
    assert fig._suptitle.get_text().startswith("Communication by operation — same_label (L=2, H=2, d=32, T=8)")
    assert ax.get_title() == "CrypTen (measured)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "attn_matmul: attention's T×T products (Q Kᵀ, softmax·V)" in legend and not any("other" in t for t in legend)
    totals = [t.get_text() for t in ax.texts]  # the total above each bar, in MB
    assert totals == [f"{v.measured.bytes / 1e6:.2f}" for v in tiny.variants]
    savings = _savings(plt, rep)
    labels = [t.get_text() for t in savings.legends[0].get_texts()]
    # no published row: no marker
    assert labels == [
        "measured (CrypTen)",
        "measured (CrypTen), projected onto paper-wan",
        "range over the repeated passes",
    ]
    # latency whiskers: from the baseline's fastest over a variant's slowest pass to the reverse
    from matplotlib.container import ErrorbarContainer

    whiskers = next(c for c in savings.axes[1].containers if isinstance(c, ErrorbarContainer))
    base, relu = (v.measured for v in tiny.variants[:2])
    (x, low), (_, high) = whiskers.lines[2][0].get_segments()[1]
    assert x == 1 and (low, high) == (
        pytest.approx(base.wall_s_min / relu.wall_s_max),
        pytest.approx(base.wall_s_max / relu.wall_s_min),
    )
    assert [t.get_text() for t in savings.axes[0].get_xticklabels()] == [
        "SM + LN + G",
        "SM + LN + R",
        "SM + LN + R (half)",
    ]
    # without the baseline there are no savings: nothing is drawn, rather than bars of height zero
    without = tiny.model_copy(update={"variants": [v for v in tiny.variants if v.name != "sm_ln_g"]})
    empty = _savings(plt, build_report(without))
    assert [len(ax.patches) for ax in empty.axes] == [0, 0] and not empty.legends
    plt.close("all")


def test_plots_show_every_backend_the_table_shows(t128_record, tmp_path):
    """A CrypTen record and an SPU record of one suite make one table with both backends' columns; the
    plots show both too (they once showed CrypTen only): a communication panel per backend, and bars
    of both backends' savings. Figures by hand: SPU at 3x CrypTen's bytes for every variant, so its
    savings equal CrypTen's (10 GB / 8 GB = 1.25x for SM + LN + R)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pibench.results.plots import _comm_by_kind, _savings

    _, record = t128_record
    suite = load_suite(ROOT / "suites" / "gpt2_t128.yaml", backend="spu")
    figures = {"sm_ln_g": (30.0, 600.0), "sm_ln_r": (24.0, 400.0)}
    spu = build_record(suite, [fake_measured(*figures.get(e.name, (12.0, 300.0))) for e in suite.entries], fake_run())
    rep = build_report(record, "crypten.json", others=[spu], backends=["spu"])
    assert [o.label for o in rep.others] == ["SPU"]
    comm = _comm_by_kind(plt, rep)
    assert [ax.get_title() for ax in comm.axes] == ["CrypTen (measured)", "SPU (measured)"]
    assert [t.get_text() for t in comm.axes[1].texts][:2] == ["30.00", "24.00"]  # SPU's totals, in GB
    savings = _savings(plt, rep)
    labels = [t.get_text() for t in savings.legends[0].get_texts()]
    assert {"measured (CrypTen)", "measured (SPU)"} <= set(labels)
    heights = sorted({round(p.get_height(), 3) for p in savings.axes[0].patches})
    assert 1.25 in heights and 2.5 in heights  # SM + LN + R and the 4 GB variants, both backends
    assert len(savings.axes[0].patches) == 2 * len(rep.rows)  # a bar per backend and variant
    proc = run_cli(
        "report", str(t128_record[0]), str(write_record(tmp_path / "spu.json", spu)), "--plot", str(tmp_path / "p")
    )
    assert proc.returncode == 0, proc.stderr
    plt.close("all")


def test_rows_never_share_a_label(t128_record):
    _, record = t128_record
    data = record.model_dump(mode="json")
    data["variants"][1]["label"] = data["variants"][0]["label"]  # a record made before suites told them apart
    twins = validate_record(data, "twins")
    arch = [r.arch for r in build_report(twins).rows]
    assert arch[:2] == ["SM + LN + G (sm_ln_g)", "SM + LN + G (sm_ln_r)"] and len(set(arch)) == len(arch)


def test_compare_two_records(t128_record, tmp_path):
    path, _ = t128_record
    suite = load_suite(ROOT / "suites" / "gpt2_t128.yaml")
    figures = {"sm_ln_g": (10.0, 60.0), "sm_ln_r": (9.0, 40.0)}  # SM + LN + R: 8 GB -> 9 GB
    measured = [fake_measured(*figures.get(e.name, (4.0, 30.0))) for e in suite.entries]
    other = write_record(tmp_path / "b.json", build_record(suite, measured, fake_run()))
    proc = run_cli("compare", str(path), str(other))
    assert proc.returncode == 0, proc.stderr
    # 8 -> 9 GB: +12.5%; savings 10/8 = 1.25x -> 10/9 = 1.11x: -11.1%
    lines = proc.stdout.splitlines()
    relu = lines.index(next(ln for ln in lines if ln.startswith("SM + LN + R ")))
    assert re.split(r"\s{2,}", lines[relu].strip()) == ["SM + LN + R", "Comm. (GB)", "8.000", "9.000", "+12.5%"]
    assert re.split(r"\s{2,}", lines[relu + 4].strip()) == ["Savings Comm.", "1.25×", "1.11×", "-11.1%"]
    about = " ".join(proc.stdout.split())
    assert f"A: {path}: CrypTen (device cpu, local_products auto) on " in about and f"B: {other}: CrypTen" in about
    rows = list(csv.DictReader(io.StringIO(run_cli("compare", str(path), str(other), "--format", "csv").stdout)))
    assert len(rows) == 10 * 9 and float(rows[9]["change_pct"]) == 12.5  # sm_ln_r's first metric
    smoke = run_cli("compare", str(path), str(ROOT / ".ci" / "baselines" / "smoke.json"))
    assert smoke.returncode == 2 and "compare records of one size" in smoke.stderr
    # another suite of the same dimensions (issue 32: refused): compared, and said so
    renamed = json.loads(other.read_text())
    renamed["suite"]["name"] = "gpt2_t128_mine"
    (tmp_path / "c.json").write_text(json.dumps(renamed))
    proc = run_cli("compare", str(path), str(tmp_path / "c.json"))
    assert proc.returncode == 0, proc.stderr
    assert "Suites differ: A is gpt2_t128, B is gpt2_t128_mine, of the same dimensions." in " ".join(
        proc.stdout.split()
    )


def spread_record(tmp_path, repeats=3):
    """Baseline 60 s (passes from 54 to 66 s), SM + LN + R 40 s (36 to 48 s), the rest 30 s with no spread."""
    suite = load_suite(ROOT / "suites" / "gpt2_t128.yaml")
    figures = {"sm_ln_g": (10.0, 60.0, (54.0, 66.0)), "sm_ln_r": (8.0, 40.0, (36.0, 48.0))}
    measured = [
        fake_measured(gb, s, spread=spread, repeats=repeats)
        for gb, s, spread in (figures.get(e.name, (4.0, 30.0, (30.0, 30.0))) for e in suite.entries)
    ]
    return write_record(tmp_path / f"spread{repeats}.json", build_record(suite, measured, fake_run()))


def test_latency_spread_of_repeated_passes(tmp_path):
    path = spread_record(tmp_path)
    proc = run_cli("report", str(path), "--columns", "latency,spread,savings")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"─+ Lat\. \(min\.\) ─+ .* ─+ Savings Lat\. ─+", proc.stdout)
    # SM + LN + R: 40 s = 0.667 min, fastest 36 s = 0.600, slowest 48 s = 0.800; savings 60/40 = 1.50x,
    # low = baseline's fastest / its slowest = 54/48 = 1.125 (shown 1.12x), high = 66/36 = 1.833 (1.83x)
    assert cells_of(proc.stdout, "SM + LN + R") == [
        *("SM + LN + R", "0.667", "0.600", "0.800", "1.25×", "1.50×", "1.12×", "1.83×")
    ]
    text = " ".join(proc.stdout.split())
    assert "median of 3 passes per measured step" in text
    assert "[fastest], [slowest]: CrypTen's fastest and slowest of each measured step's passes" in text
    # without the spread columns, the widest spread: SM + LN + R (48 - 36)/40 = 30% (baseline 12/60 = 20%)
    short = " ".join(run_cli("report", str(path)).stdout.split())
    assert "Lat. spread (slowest minus fastest pass): at most 30% of the median (SM + LN + R)" in short
    frame = list(csv.DictReader(io.StringIO(run_cli("report", str(path), "--format", "csv").stdout)))
    relu = next(r for r in frame if r["variant"] == "sm_ln_r")
    assert (float(relu["lat_min_fastest"]), float(relu["lat_min_slowest"])) == (0.6, 0.8)
    assert (float(relu["lat_savings_low"]), round(float(relu["lat_savings_high"]), 4)) == (1.125, 1.8333)
    latex = run_cli("report", str(path), "--format", "latex").stdout
    assert r"at most 30\% of the median (SM + LN + R)." in latex
    # one pass per step: no spread to show, and the table says so
    single = spread_record(tmp_path, repeats=1)
    one = run_cli("report", str(single), "--columns", "latency,spread")
    assert cells_of(one.stdout, "SM + LN + R") == ["SM + LN + R", "0.667", "-", "-", "-", "-"]
    assert "one pass per measured step" in " ".join(one.stdout.split()) and "Lat. spread" not in one.stdout


def test_baseline_typo_is_refused_before_a_run(tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("run", str(ROOT / "suites" / "smoke.yaml"), "--baseline", "sm_ln_gg", "--out", str(out))
    assert proc.returncode == 2 and not out.exists()
    assert "--baseline 'sm_ln_gg' is not a variant of suite 'smoke' (did you mean 'sm_ln_g'?)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_report_baseline_typo_is_one_line(t128_record):
    path, _ = t128_record
    proc = run_cli("report", str(path), "--baseline", "sm_ln_gg")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(
        "pibench: error: --baseline 'sm_ln_gg' is not a variant of the record (did you mean 'sm_ln_g'?)"
    )


def test_help_shows_defaults():
    assert "(default: 45.0)" in run_cli("run", "--help").stdout
    report = run_cli("report", "--help").stdout
    assert "output format (default: table)" in report and "published_abs" in report


def test_projection_profiles_and_emulated_records(t128_record):
    _, record = t128_record
    rep = build_report(record, networks=["wan", "10mbit,1s"])
    keys = [c.key for c in columns(rep)]
    assert "proj_lat_min_wan" in keys and "proj_lat_savings_10mbit_1s" in keys
    emulated = record.model_copy(
        update={"run": record.run.model_copy(update={"network": "paper-wan (100 Mbit/s, 80 ms RTT), emulated"})}
    )
    rep = build_report(emulated)
    assert all(v is None for r in rep.rows for v in r.projected_lat_min.values())
    assert "this run was not one" in rep.projected_by
    assert "emulated" in rep.measured_by


def test_no_baseline_and_unknown_format(t128_record):
    _, record = t128_record
    without = record.model_copy(update={"variants": [v for v in record.variants if v.name != "sm_ln_g"]})
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
    old = write_record(tmp_path / "old.json", record.model_dump(mode="json") | {"schema_version": 0})
    proc = run_cli("report", str(old))
    assert proc.returncode == 2
    assert proc.stderr == (
        f"pibench: error: record '{old}' is not a record this pibench reads: schema_version 0; "
        "it reads versions 2 to 3; rerun the suite\n"
    )
    v1 = write_record(tmp_path / "v1.json", record.model_dump(mode="json") | {"schema_version": 1})
    assert "version 1 (before pibench's backend interface" in run_cli("report", str(v1)).stderr


def test_predicted_beside_measured(t128_record):
    path, record = t128_record
    base = record.variant("sm_ln_g")
    # the record holds the calibrated prediction next to the (here invented) measurement
    assert base.predicted.bytes == 7_622_295_552 and base.predicted.rounds == 2052
    out = run_cli("report", str(path), "--predict", "--columns", "comm,predicted").stdout
    assert cells_of(out, "SM + LN + G")[:3] == ["SM + LN + G", "10.000", "7.622"]  # measured (invented), predicted
    assert "CrypTen, pred." in out and "[CrypTen, pred.]: the calibrated cost model" in out


def _smoke_record(tmp_path, name="smoke.json", **settings):
    """A smoke-suite record: the baseline 2.47 MB in 1.26 s, the rest 0.45 MB in 0.42 s (as small as the
    smoke suite is); `settings` change backend settings (dotted keys for nested ones)."""
    suite = load_suite(ROOT / "suites" / "smoke.yaml")
    measured = [fake_measured(0.00247 if e.name == "sm_ln_g" else 0.00045, 1.26 if e.name == "sm_ln_g" else 0.42)
                for e in suite.entries]  # fmt: skip
    record = build_record(suite, measured, fake_run())
    for key, value in settings.items():
        *path, last = key.split("__")
        target = record.backend.settings
        for part in path:
            target = target[part]
        target[last] = value
    return write_record(tmp_path / name, record), record


def test_small_suites_show_their_units_scaled(tmp_path):
    """2.47 MB is "2.47" under "Comm. (MB)", not "0.002" GB; 1.26 s is "1.26" under "Lat. (s)", not
    0.021 minutes; csv keeps GB and minutes."""
    path, _ = _smoke_record(tmp_path)
    table = run_cli("report", str(path)).stdout
    assert "Comm. (MB)" in table and "Lat. (s)" in table and "(GB)  " not in table.splitlines()[1]
    row = next(ln for ln in table.splitlines() if ln.startswith("SM + LN + G "))
    assert row.split()[5:7] == ["2.47", "1.26"]
    frame = pd.read_csv(io.StringIO(run_cli("report", str(path), "--format", "csv").stdout))
    assert frame.loc[0, "comm_gb"] == 0.00247 and frame.loc[0, "lat_min"] == pytest.approx(1.26 / 60)
    compared = run_cli("compare", str(path), str(path)).stdout
    lines = [re.split(r"\s{2,}", ln.strip()) for ln in compared.splitlines()]
    assert ["SM + LN + G", "Comm. (MB)", "2.47", "2.47", "+0.0%"] in lines and [
        "Lat. (s)",
        "1.26",
        "1.26",
        "+0.0%",
    ] in lines
    assert ["Lat. fastest (s)", "1.26", "1.26", "+0.0%"] in lines


def test_compare_names_every_difference_of_settings_machine_and_code(tmp_path):
    _, rec_a = _smoke_record(tmp_path, "a.json")
    _, rec_b = _smoke_record(tmp_path, "b.json", gelu="erf", functions__exp_iterations=4)
    rec_a.environment.git = Git(commit="fedcba9876543210", dirty=False)
    rec_b.environment.git = Git(commit="0123456789abcdef", dirty=True)
    rec_b.environment.fingerprint["cpu_count"] = 4
    rec_b.environment.packages["torch"] = "2.14.1"
    a, b = write_record(tmp_path / "a.json", rec_a), write_record(tmp_path / "b.json", rec_b)
    about = " ".join(run_cli("compare", str(a), str(b)).stdout.split())
    assert "Backend settings differ (A vs B): functions.exp_iterations 8 vs 4; gelu tanh vs erf." in about
    assert "Machines differ (A vs B): cpu_count 2 vs 4." in about
    torch = rec_a.environment.packages["torch"]
    assert (
        f"Code differs (A vs B): commit fedcba9876 vs 0123456789; dirty False vs True; torch {torch} vs 2.14.1."
        in about
    )
    same = " ".join(run_cli("compare", str(a), str(a)).stdout.split())
    assert "A and B were made with the same backend settings, run settings, machine and code." in same


def test_records_of_one_suite_under_two_settings_make_one_table(tmp_path):
    """A row per (record, variant), each labelled with its record's value of the setting that differs,
    its savings against its own record's baseline; csv names each row's record."""
    a, _ = _smoke_record(tmp_path, "tanh.json")
    b, _ = _smoke_record(tmp_path, "erf.json", gelu="erf")
    table = run_cli("report", str(a), str(b)).stdout
    assert table.count("smoke (L=2") == 1
    rows = [ln for ln in table.splitlines() if ln.startswith(("SM + ", "EReg", "HeHofmann"))]
    assert (
        len(rows) == 12
        and rows[0].startswith("SM + LN + G [gelu tanh]")
        and rows[6].startswith("SM + LN + G [gelu erf]")
    )
    # SM + ScFuFFN in either record: 2.47 / 0.45 = 5.49x against its own baseline
    assert all("5.49×" in r for r in rows if r.startswith("SM + ScFuFFN ["))
    assert (
        f"[CrypTen] rows [gelu erf]: {b}: measured by pibench: CrypTen 0.4.1 2PC (TFP triples, 16 fraction bits, erf-GELU"
        in " ".join(table.split())
    )
    frame = pd.read_csv(io.StringIO(run_cli("report", str(a), str(b), "--format", "csv").stdout))
    assert list(frame["record"]) == [str(a)] * 6 + [str(b)] * 6


def test_options_that_ask_for_columns_always_get_them(t128_record):
    """--predict at 120 columns once dropped the predicted columns it asked for to fit."""
    path, _ = t128_record
    proc = run_cli("report", str(path), "--predict", env={"COLUMNS": "120"})
    header = proc.stdout.splitlines()[2]
    assert "CrypTen, pred." in header and "pred" not in " ".join(proc.stdout.split()).split("Not shown")[-1]


def test_footers_never_say_none_for_a_version():
    proc = run_cli("cost", "suites/smoke.yaml", "--predict", "--backend", "spu")
    assert proc.returncode == 0, proc.stderr
    assert "SPU None" not in proc.stdout and "predicted for SPU " in proc.stdout


def test_records_name_every_package_that_measures():
    from pibench.util.machine import environment

    packages = environment()["packages"]
    assert {"torch", "crypten", "spu", "jax", "jaxlib", "numpy"} <= set(packages)
    assert packages["spu"] == "0.9.5"  # installed beside pibench here (pyproject.toml pins it)


def test_a_huge_figure_is_printed_in_powers_of_ten():
    """An MPC perplexity of a broken model (SPU's SM + LN + G on one training: exp(mean NLL) with logits
    off by 13,000) is 1.366e246: printed with ".3f" it was 247 characters wide; 1e6 and above now take
    two significant figures, so 1.366e246 -> "1.4e+246", 1,234,567 -> "1.2e+06", and 5.2091 stays "5.209"."""
    from pibench.results.tables import _num

    three = _num(".3f")
    assert three(1.366e246) == "1.4e+246" and three(1_234_567.0) == "1.2e+06"
    assert three(5.2091) == "5.209" and three(None) == "-"
