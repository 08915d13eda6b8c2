"""`pibench run SUITE`: the main job. Until the 2PC runner lands it prints the analytic table."""

from __future__ import annotations

import argparse

from pibench.cli.cost_cmd import print_cost_table
from pibench.suite import load_suite

HELP = "run a suite's variants (for now: the analytic cost table)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="suite YAML file, e.g. suites/gpt2_t128.yaml")


def main(args: argparse.Namespace) -> int:
    print_cost_table(load_suite(args.suite), "paper")
    return 0
