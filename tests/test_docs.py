"""What the README and docs state about the code holds: defaults in settings tables, tolerances of the gate."""

from __future__ import annotations

import dataclasses
import re

from pibench.backends import BACKENDS
from pibench.results.gate import METRICS
from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ROW = re.compile(r"^\| (`[\w.]+`(?:, `[\w.]+`)*) \| ([^|]+) \|", re.M)


def _shown(value: object) -> str:
    """A default as the docs write it: false, 0, tanh (backticks stripped)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_settings_tables_state_the_defaults_the_code_has():
    """Every table row `| `key`, `key` | default, default | ...` whose keys are fields of a backend's
    settings states those fields' defaults (the SPU table once said false where the code says true)."""
    checked = 0
    for page in PAGES:
        for keys, values in ROW.findall(page.read_text(encoding="utf-8")):
            names = [k.strip("`") for k in keys.split(", ")]
            for entry in BACKENDS:
                defaults = entry.value.default_settings()
                if all(n in {f.name for f in dataclasses.fields(defaults)} for n in names):
                    stated = [v.strip().strip("`") for v in values.split(", ")]
                    assert stated == [_shown(getattr(defaults, n)) for n in names], (page.name, names)
                    checked += 1
    assert checked >= 5  # the SPU table's rows, at least


def test_the_gate_table_states_the_tolerances_the_code_applies():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("wall_s", "time_savings", "max_abs_error"):
        row = next(
            ln for ln in text.splitlines() if ln.startswith(f"| `{name}`") and re.search(r"\| (lower|higher) \|", ln)
        )
        m = METRICS[name]
        assert f"{'+' if m.lower_is_better else '-'}{m.tolerance:.0%}" in row, row
