"""pibench installs as a package: a wheel built from the tree carries its data (the published table
and the shipped calibration), and `cost --predict` works from a fresh virtual environment holding
only that wheel (its dependencies borrowed from the test environment, so nothing is downloaded)."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile

from tests.conftest import ROOT, run_cli

_ANYWHERE = shutil.ignore_patterns(".tox", ".venv", "*.egg-info", "__pycache__", ".*cache", "_version.py")


def IGNORE(folder: str, names: list[str]) -> set[str]:
    """What the copy leaves out: caches anywhere, and the checkout's own results/ and build/ (not the
    package's pibench/results/)."""
    top = {"results", "build"} if folder == str(ROOT) else set()
    return set(_ANYWHERE(folder, names)) | (top & set(names))


PLUGIN = """
from pibench.models.config import ModelConfig
from pibench.models.variants import variant


@variant("{name}", "{name}", note="ReLU in the first {blocks} FFNs")
def _(c: ModelConfig) -> ModelConfig:
    return c.replace(activation="relu", activation_blocks={blocks})
"""
PLUGIN_PROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "pibench-example-plugin"
version = "0.0.1"

[project.entry-points."pibench.variants"]
example = "pibench_example_plugin"
"""


def _dirty(tree) -> bool:
    """Whether a tracked file of a checkout differs from its commit (as setuptools-scm tells it)."""
    status = ["git", "status", "--porcelain", "--untracked-files=no"]
    return bool(subprocess.run(status, cwd=tree, capture_output=True, text=True).stdout.strip())


def test_wheel_installs_and_predicts(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    wheels = tmp_path / "wheels"
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(wheels),
        str(src),
    ]
    proc = subprocess.run(build, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = wheels.glob("pibench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pibench/data/calibration-crypten-default.json" in names and "pibench/data/published_costs.csv" in names
    assert "pibench/_version.py" in names  # setuptools-scm wrote the commit it was built from

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)]
    proc = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # the dependencies, after the venv's own site-packages (where the wheel's pibench is)
    (own,) = venv.glob("lib/python*/site-packages")
    (own / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    suite = str(ROOT / "suites" / "gpt2_t128.yaml")
    code = "import pibench, sys; from pibench.cli import main; print(pibench.__file__, file=sys.stderr); sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [str(python), "-c", code, "cost", suite, "--predict", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().startswith(str(own))  # the installed copy ran, not the source tree
    # the wheel names the commit it was built from (no checkout beside it to read)
    origin = subprocess.run(
        [str(python), "-c", "from pibench.util.machine import git_info; import json; print(json.dumps(git_info()))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        # the copy it was built from leaves results/ out, so it is dirty where the checkout may not be
        assert json.loads(origin.stdout) == {"commit": head, "dirty": _dirty(src), "source": "build"}
    installed = json.loads(proc.stdout)
    source = json.loads(run_cli("cost", suite, "--predict", "--format", "json").stdout)
    assert [v["predicted"]["bytes"] for v in installed] == [v["predicted"]["bytes"] for v in source]
    assert all(v["predicted"]["bytes"] > 0 for v in installed)

    # architectures of the user's own: a file given with --include, and an installed package's entry point
    mine = tmp_path / "my_variants.py"
    mine.write_text(PLUGIN.format(name="sm_ln_r_half", blocks="c.L // 2"))
    plugin = tmp_path / "plugin"
    (plugin / "pibench_example_plugin").mkdir(parents=True)
    (plugin / "pibench_example_plugin" / "__init__.py").write_text(PLUGIN.format(name="sm_ln_r_one", blocks="1"))
    (plugin / "pyproject.toml").write_text(PLUGIN_PROJECT)
    proc = subprocess.run([*build[:-1], str(plugin)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (plugin_wheel,) = wheels.glob("pibench_example_plugin-*.whl")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(plugin_wheel)]
    assert subprocess.run(install, capture_output=True, text=True, timeout=300).returncode == 0
    suite = tmp_path / "mine.yaml"
    suite.write_text("model: {L: 4, H: 2, d: 16, T: 4}\nvariants: [sm_ln_g, sm_ln_r_half, sm_ln_r_one]\n")
    proc = subprocess.run(
        [str(python), "-c", code, "--include", str(mine), "cost", str(suite), "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    relu = {v["variant"]: v["nonlinear"].get("relu", {}).get("count") for v in json.loads(proc.stdout)}
    assert relu == {"sm_ln_g": None, "sm_ln_r_half": 2, "sm_ln_r_one": 1}  # ReLU in 2 of 4 FFNs, and in 1
    wide = {**os.environ, "COLUMNS": "200"}  # `list` fits the terminal: wide enough for the package's name unwrapped
    listed = subprocess.run([str(python), "-c", code, "list"], capture_output=True, text=True, timeout=120, env=wide)
    assert "from package pibench-example-plugin (pibench_example_plugin)" in listed.stdout
