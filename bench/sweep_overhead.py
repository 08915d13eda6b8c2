"""What a sweep's tiny cell costs beyond its measurement, with the local executor's warm parties and with
parties started afresh for each cell (as `pibench run` starts them), side by side in one run.

    python bench/sweep_overhead.py [--cells-per-variant 3]      # about half a minute here

The sweep: L=1, H=2, d=16, T = 4, 8, 12, ... x SM + LN + G and SM + LN + R, one timed pass per step.
Per cell, "measuring" is the parties' passes (a warm-up pass and the timed one: twice the record's
forward-pass seconds) and "overhead" everything else of the cell (starting or waking its parties,
joining them, CrypTen's set-up and tear-down, the record), from the sweep's wall time over its cells.
The cold column runs each cell's one-variant suite with `pibench run`, a new pair of parties each.
Where a party's start-up goes: the seconds a fresh interpreter takes to import what a party imports.
Figures go in the notes, with the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = "name: tiny\nmodel: {L: 1, H: 2, d: 16, T: 4}\nrepeats: 1\nvariants: [sm_ln_g, sm_ln_r]\n"


def _pibench(*args: str) -> float:
    """Seconds of one `python -m pibench ARGS` (its output dropped; a failure stops the benchmark)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pibench", *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"pibench {' '.join(args)} failed: {proc.stderr[-500:]}")
    return time.perf_counter() - start


def _import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells-per-variant", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "tiny.yaml").write_text(BASE)
        ts = [4 * (i + 1) for i in range(args.cells_per_variant)]
        (folder / "grid.yaml").write_text(f"name: grid\nsuite: tiny.yaml\naxes:\n  model.T: {ts}\n")
        warm_total = _pibench("sweep", str(folder / "grid.yaml"), "--out", str(folder / "out"), "--no-progress")
        records = [json.loads(p.read_text()) for p in sorted((folder / "out" / "cells").glob("*.json"))]
        measuring = [2 * r["variants"][0]["measured"]["wall_s"] for r in records]
        cold = []
        for r in records:  # the same cells, a pair of parties started for each
            suite = folder / f"{r['variants'][0]['name']}-{r['suite']['dims']['T']}.yaml"
            text = BASE.replace("T: 4", f"T: {r['suite']['dims']['T']}").replace(
                "[sm_ln_g, sm_ln_r]", f"[{r['variants'][0]['name']}]"
            )
            suite.write_text(text)
            cold.append(_pibench("run", str(suite), "--out", str(folder / "cold.json"), "--force", "--no-progress"))
    cells = len(records)
    per_cell = warm_total / cells
    print(f"{cells} tiny cells")
    rows = [
        ("sweep, warm parties: seconds per cell", f"{per_cell:.2f}", f"(the sweep took {warm_total:.1f} s)"),
        ("  of which measuring (warm-up + timed pass)", f"{statistics.mean(measuring):.2f}", ""),
        ("  overhead per cell", f"{per_cell - statistics.mean(measuring):.2f}", "target: at most 3 s"),
        ("pibench run of a cell, parties started afresh", f"{statistics.mean(cold):.2f}", ""),
        ("  overhead per cell", f"{statistics.mean(cold) - statistics.mean(measuring):.2f}", ""),
        ("a party's imports in a fresh interpreter", f"{_import_seconds('pibench.measuring.party'):.2f}", ""),
        ("  of which torch", f"{_import_seconds('torch'):.2f}", ""),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>6} s  {note}".rstrip())


if __name__ == "__main__":
    main()
