"""The CLI as a user runs it: list, cost in three formats, run, and an analytic path free of torch."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import ROOT, run_cli

SUITE = "suites/gpt2_t128.yaml"


def test_cost_table_uses_the_papers_notation(cli):
    proc = cli("cost", SUITE, env={"COLUMNS": "200"})  # a wide terminal: each notation on one line
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("sm_ln_g "))
    assert "SM:144×ℝ^{128×128} LN:24×ℝ^{128×768} G:12×ℝ^{128×3072}" in line
    assert line.split()[-2:] == ["14.5B", "7.7B"]
    pruned = next(ln for ln in proc.stdout.splitlines() if ln.startswith("hehofmann_scfuffn_pruned "))
    assert "SM:144×ℝ^{128×128} LN:1×ℝ^{128×768}" in pruned and pruned.split()[-2:] == ["1.2B", "3.9B"]


def test_cost_json(cli):
    proc = cli("cost", SUITE, "--format", "json")
    data = json.loads(proc.stdout)
    assert [d["variant"] for d in data][:3] == ["sm_ln_g", "sm_ln_r", "sm_scffn"]
    base = data[0]
    assert base["label"] == "SM + LN + G"
    assert {k: base["config"][k] for k in "LHdT"} == {"L": 12, "H": 12, "d": 768, "T": 128}
    # 24 LayerNorms of 128 x 768 = 2,359,296 elements; 12 GELUs of 128 x 3072 = 4,718,592
    assert base["nonlinear"] == {
        "softmax": {"count": 144, "shape": [128, 128], "elements": 144 * 128 * 128},
        "layernorm": {"count": 24, "shape": [128, 768], "elements": 2_359_296},
        "gelu": {"count": 12, "shape": [128, 3072], "elements": 4_718_592},
    }
    assert base["flops"]["ffn"] == 14_495_514_624 and base["flops"]["attn"] == 7_700_742_144
    assert data[3]["variant"] == "sm_scfuffn" and data[3]["nonlinear"].keys() == {"softmax"}


def test_cost_json_exact(cli):
    data = json.loads(cli("cost", SUITE, "--format", "json", "--flops", "exact").stdout)
    # exact attention: 12 * (8 T d^2 + 4 T^2 d) = 12 * (603,979,776 + 50,331,648) = 7,851,737,088
    assert data[0]["flops"] == {"ffn": 14_495_514_624, "attn": 7_851_737_088, "convention": "exact"}


def test_cost_csv_is_a_tidy_numeric_frame(cli):
    """Numbers as numbers, units in the column names, as `pibench report --format csv` (FLOPs were once
    "14.5B" strings under display headers)."""

    text = cli("cost", SUITE, "--format", "csv").stdout
    frame = pd.read_csv(io.StringIO(text))
    assert list(frame.columns) == [
        *("suite", "variant", "label", "nonlinear"),
        *(f"{k}_{n}" for k in ("softmax", "layernorm", "gelu", "relu") for n in ("ops", "elements")),
        *("flops_ffn", "flops_attn", "flops_convention"),
    ]
    assert len(frame) == 10 and all(frame[c].dtype == "int64" for c in ("flops_ffn", "softmax_elements", "gelu_ops"))
    row = frame.set_index("variant").loc["sm_scfuffn"]
    # 144 softmaxes of 128 x 128 = 2,359,296 elements; no LayerNorm or activation
    assert (row["softmax_ops"], row["softmax_elements"], row["layernorm_ops"], row["gelu_elements"]) == (
        144,
        2_359_296,
        0,
        0,
    )
    # fused FFN: 2 L T d^2 = 2 * 12 * 128 * 768^2 = 1,811,939,328; attention L (8 T d^2 + 3 T^2 d) = 7,700,742,144
    assert (row["flops_ffn"], row["flops_attn"], row["flops_convention"]) == (1_811_939_328, 7_700_742_144, "paper")
    assert row["nonlinear"] == "SM:144×ℝ^{128×128}"
    predicted = pd.read_csv(io.StringIO(cli("cost", SUITE, "--format", "csv", "--predict", "--network", "lan").stdout))
    assert {"pred_comm_gb", "pred_rounds", "pred_lat_min_loopback", "pred_lat_min_lan"} <= set(predicted.columns)
    assert predicted["pred_rounds"].dtype == "int64" and predicted["pred_comm_gb"].dtype == float


def test_list_names_every_variant_with_its_label(cli):
    out = cli("list").stdout
    for name, label in [
        ("sm_ln_g", "SM + LN + G"),
        ("ereg_smt_scfuffn", "EReg(SM(t) + ScFuFFN)"),
        ("sm_snffn", "SM + SNorm FFN"),
    ]:
        assert any(ln.split()[0] == name and label in ln for ln in out.splitlines())


def test_unknown_flops_convention_is_rejected(cli):
    proc = cli("cost", SUITE, "--flops", "papers")
    assert proc.returncode == 2 and "invalid choice: 'papers'" in proc.stderr


def test_analytic_path_imports_neither_torch_nor_crypten():
    code = (
        "import sys, io, contextlib\n"
        "from pibench.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for s in ('gpt2_t128', 'gpt2_t512', 'smoke'):\n"
        "        assert main(['cost', f'suites/{s}.yaml', '--format', 'json']) == 0\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'crypten'))\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_every_help_text_renders():
    """`pibench --help`, `-h` and every subcommand's `--help` print a usage and exit 0: a bare '%' in
    any help text (compare's "the change in %") once crashed the top level's listing."""
    import contextlib

    import pytest

    from pibench.cli import SUBCOMMANDS, build_parser

    for argv in (["--help"], ["-h"], *([name, "--help"] for name in SUBCOMMANDS)):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(argv)
        assert exit_.value.code == 0, argv
        assert out.getvalue().startswith("usage: pibench"), argv
        if argv[0] in ("--help", "compare"):
            assert "with the change in %" in " ".join(out.getvalue().split())
    # the same through the installed command, as a newcomer types it
    proc = subprocess.run([sys.executable, "-m", "pibench", "-h"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "" and "COMMAND" in proc.stdout


def test_bare_pibench_prints_the_help(cli):
    """Issue 32: a bare `pibench` printed an argparse error; it prints what pibench does and exits 0."""
    proc = cli()
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("usage: pibench") and "quick start:" in proc.stdout


def test_include_is_taken_after_the_commands_name_too(cli, tmp_path):
    """Issue 32: `--include` after the subcommand's name was refused; both places register the file."""
    mine = tmp_path / "mine.py"
    mine.write_text(
        "from pibench.models.config import ModelConfig\nfrom pibench.models.variants import variant\n\n\n"
        '@variant("mine_relu", "Mine R")\ndef _(c: ModelConfig) -> ModelConfig:\n    return c.replace(activation="relu")\n'
    )
    suite = tmp_path / "s.yaml"
    suite.write_text("model: {L: 1, H: 2, d: 16, T: 4}\nvariants: [mine_relu]\n")
    for argv in (["--include", str(mine), "cost", str(suite)], ["cost", "--include", str(mine), str(suite)]):
        proc = cli(*argv, "--format", "json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)[0]["nonlinear"]["relu"]["count"] == 1


@pytest.mark.parametrize("width", [80, 120])
def test_cost_and_list_fit_the_terminal(cli, width):
    """Issue 32: at COLUMNS=80, `cost suites/gpt2_t128.yaml` was 133 columns wide, `--predict` 189, the
    generation suite's predictions 233, `list` 130, footers up to 464 characters on a line. Every table
    and footer now fits, at GPT-2 size, with and without predictions, generation included (the notation
    broken one kind a line, columns left out and named, footers wrapped)."""
    for argv in (
        ["cost", SUITE],
        ["cost", SUITE, "--predict"],
        ["cost", "suites/gpt2_gen.yaml"],
        ["cost", "suites/gpt2_gen.yaml", "--predict"],
        ["list"],
    ):
        proc = cli(*argv, env={"COLUMNS": str(width)})
        assert proc.returncode == 0, proc.stderr
        widest = max(proc.stdout.splitlines(), key=len)
        assert len(widest) <= width, (argv, widest)


def test_predictions_have_the_reports_formats_savings_and_plots(cli, tmp_path):
    """Issue 32: `cost --predict` had no savings, no markdown or LaTeX and no plots, and its units changed
    with the options. Its table is now the report's, labelled as predicted, in every format, each column in
    one unit named in its header, savings against SM + LN + G (the baseline's 7,622,295,552 bytes: what
    `pibench run suites/gpt2_t128.yaml` measures, README), and the report's plots."""
    md = cli("cost", SUITE, "--predict", "--format", "markdown").stdout
    assert "| Network Arch." in md and "Comm. (GB) [CrypTen pred.]" in md and "Savings Comm. [CrypTen pred.]" in md
    assert "[CrypTen pred.]: predicted by pibench, not measured" in md
    latex = cli("cost", SUITE, "--predict", "--format", "latex").stdout
    assert r"\toprule" in latex and "CrypTen pred." in latex and "Predicted by pibench's calibrated cost model" in latex
    frame = pd.read_csv(io.StringIO(cli("cost", SUITE, "--predict", "--format", "csv").stdout)).set_index("variant")
    base = frame.loc["sm_ln_g"]
    assert base["pred_comm_gb"] == pytest.approx(7.622295552) and base["pred_comm_savings"] == 1.0
    fused = frame.loc["sm_scfuffn"]
    assert fused["pred_comm_savings"] == pytest.approx(7.622295552 / fused["pred_comm_gb"])
    assert fused["pred_lat_savings_paper_wan"] == pytest.approx(
        base["pred_lat_min_paper_wan"] / fused["pred_lat_min_paper_wan"]
    )
    proc = cli("cost", SUITE, "--predict", "--plot", str(tmp_path), "--baseline", "sm_ln_r")
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in tmp_path.iterdir()} >= {"gpt2_t128-savings.png", "gpt2_t128-comm_by_kind.png"}
    assert "Savings against SM + LN + R." in proc.stdout


def test_a_sweeps_report_is_a_latex_table_with_the_variants_labels():
    proc = run_cli("report", str(ROOT / "docs" / "sweeps" / "papers_t"), "--format", "latex")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(r"\begin{table}[t]") and r"\toprule" in out and r"\bottomrule" in out
    assert "SM + ScFuFFN" in out and "sm_scfuffn" not in out  # the labels, not the registry names
    assert "& 1.00$\\times$" in out and re.search(r"& \d{1,3},\d{3} &", out)  # savings, rounds with separators
