"""Architectures from the user's own files (`pibench --include`), through the same decorator as the
built-in ones: costed, run, reported and gated; records say where each variant came from."""

from __future__ import annotations

import hashlib
import json

from tests.conftest import run_cli, write_suite

MINE = """
from pibench.models.config import ModelConfig
from pibench.models.variants import variant


@variant("sm_ln_r_half", "SM + LN + R/-", note="ReLU in the first half of the FFNs, none after")
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(activation="relu", activation_blocks=c.L // 2)
"""
SUITE = "name: mine\nmodel: {L: 2, H: 2, d: 16, T: 4}\nvariants: [sm_ln_g, sm_ln_r_half]\n"


def test_a_variant_of_the_users_own_file_is_costed_run_reported_and_gated(tmp_path):
    """A file outside the checkout: `cost` counts its variant (ReLU in layer 0 only: R:1 x R^{4x64}),
    `run` measures it (the parties load the file too), the record names the file and its SHA-256,
    and `report` and `gate` of that record work without the file (the config is in the record)."""
    mine = tmp_path / "my_variants.py"
    mine.write_text(MINE)
    suite = write_suite(tmp_path, SUITE)
    cost = run_cli("--include", str(mine), "cost", str(suite))
    assert cost.returncode == 0, cost.stderr
    row = next(ln for ln in cost.stdout.splitlines() if ln.startswith("sm_ln_r_half"))
    # 2 layers x 2 heads of 4 x 4; two LayerNorms per layer; ReLU in the first of the 2 FFNs only
    assert "SM:4×ℝ^{4×4} LN:4×ℝ^{4×16} R:1×ℝ^{4×64}" in row
    unknown = run_cli("cost", str(suite))
    assert unknown.returncode == 2 and "pibench --include FILE" in unknown.stderr
    out = tmp_path / "r.json"
    run = run_cli("--include", str(mine), "run", str(suite), "--out", str(out), "--no-progress", "--repeats", "1")
    assert run.returncode == 0, run.stderr
    origins = {v["name"]: v["origin"] for v in json.loads(out.read_text())["variants"]}
    assert origins["sm_ln_g"] == {"source": "built-in", "module": "pibench.models.variants"}
    assert origins["sm_ln_r_half"]["source"] == "include" and origins["sm_ln_r_half"]["file"] == str(mine)
    assert origins["sm_ln_r_half"]["sha256"] == hashlib.sha256(mine.read_bytes()).hexdigest()
    mine.unlink()  # the variant's code is gone: what the record holds is enough
    report = run_cli("report", str(out))
    assert report.returncode == 0 and "SM + LN + R/-" in report.stdout, report.stderr
    gate = run_cli("gate", str(out), str(out))
    assert gate.returncode == 0 and gate.stdout.startswith("all clear: 2 variants")


def test_bad_includes_are_one_line(tmp_path):
    clash = tmp_path / "clash.py"
    clash.write_text(MINE.replace("sm_ln_r_half", "sm_ln_g"))
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "a.py").write_text(MINE)
    (folder / "b.py").write_text(MINE.replace("sm_ln_r_half", "sm_ln_r_third"))
    text = tmp_path / "notes.txt"
    text.write_text("hi")
    suite = write_suite(tmp_path, SUITE)
    cases = {
        str(clash): f"--include '{clash}': variant 'sm_ln_g' from {clash} clashes with the variant of that name "
        "built into pibench; choose another name",
        str(broken): f"--include '{broken}': SyntaxError:",
        str(text): f"--include '{text}' is not a .py file or a folder of them",
        str(tmp_path / "none.py"): "none.py' not found",
    }
    for path, says in cases.items():
        proc = run_cli("--include", path, "cost", str(suite))
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr
    assert "(line 1)" in run_cli("--include", str(broken), "cost", str(suite)).stderr
    both = run_cli("--include", str(folder), "list")  # a folder: every .py file in it
    assert both.returncode == 0 and "sm_ln_r_half" in both.stdout and "sm_ln_r_third" in both.stdout
