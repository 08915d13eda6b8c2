"""Speed of the analytic path: the cost of every shipped suite (load, validate, interpret).

    tox -e bench            # or: pytest bench --benchmark-only
Figures go in the closing notes; no test asserts on time.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pibench.suites.analytic import suite_costs
from pibench.suites.loader import load_suite

SUITES = sorted((Path(__file__).resolve().parents[1] / "suites").glob("*.yaml"))
# the variant entries the files list, read without pibench: what the loader must resolve, one cost each
ENTRIES = sum(len(yaml.safe_load(path.read_text())["variants"]) for path in SUITES)


def cost_all_suites() -> int:
    return sum(len(suite_costs(load_suite(path))) for path in SUITES)


def test_analytic_cost_of_all_suites(benchmark):
    variants = benchmark(cost_all_suites)
    benchmark.extra_info["suites"] = len(SUITES)
    benchmark.extra_info["variants"] = variants
    assert len(SUITES) >= 6 and variants == ENTRIES


def predict_all_suites() -> int:
    from pibench.calibration.fit import predict_cost, shipped_calibration

    cal = shipped_calibration("crypten")
    return sum(
        1 for path in LAYERS for cost in suite_costs(load_suite(path)) if predict_cost(cal, cost.tally).bytes > 0
    )


# the end-to-end scope's argmax has no calibrated model yet: its suites are costed, not predicted
LAYERS = [path for path in SUITES if yaml.safe_load(path.read_text()).get("scope", "layers") == "layers"]


def test_predictions_of_all_suites(benchmark):
    assert benchmark(predict_all_suites) == sum(len(yaml.safe_load(p.read_text())["variants"]) for p in LAYERS)
