"""`pibench cost SUITE`: nonlinear operations and FLOPs of every variant, from the symbolic
interpreter (shapes only: instant, no torch, no CrypTen)."""

from __future__ import annotations

import argparse
import csv
import json
import sys

from tabulate import tabulate

from pibench.analytic import suite_costs
from pibench.cost import FLOP_CONVENTIONS
from pibench.notation import COST_COLUMNS, cost_rows
from pibench.suite import Suite, load_suite

HELP = "count nonlinear operations and FLOPs of a suite's variants (analytic, instant)"
EPILOG = """\
FLOPs are 2 per multiply-accumulate. --flops paper (default) reproduces the papers' columns;
--flops exact counts every matrix product the forward pass executes (see README).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="suite YAML file, e.g. suites/gpt2_t128.yaml")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument("--flops", choices=FLOP_CONVENTIONS.names(), default="paper", help="FLOP convention")


def suite_header(suite: Suite) -> str:
    dims = " ".join(f"{k}={v}" for k, v in suite.dims.items())
    return f"{suite.name}: {dims}" + (f" ({suite.description})" if suite.description else "")


def print_cost_table(suite: Suite, flops: str) -> None:
    costs = suite_costs(suite, flops)
    print(suite_header(suite))
    print(tabulate(cost_rows(costs), headers=COST_COLUMNS, tablefmt="simple", disable_numparse=True))
    print(f"FLOPs: {flops} convention, 2 per multiply-accumulate; embeddings and LM head excluded")


def main(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite)
    if args.format == "table":
        print_cost_table(suite, args.flops)
    elif args.format == "json":
        json.dump([c.to_json() for c in suite_costs(suite, args.flops)], sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        writer = csv.writer(sys.stdout)
        writer.writerow(COST_COLUMNS)
        writer.writerows(cost_rows(suite_costs(suite, args.flops)))
    return 0
