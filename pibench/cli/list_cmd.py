"""`pibench list`: the registered variants, with the papers' labels and what each changes."""

from __future__ import annotations

import argparse

from pibench.models.variants import BASELINE, VARIANTS
from pibench.results.tables import fit_table, terminal_width

HELP = "list the registered model variants"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    rows = []
    for entry in VARIANTS:
        v = entry.value
        note = v.note + (" (the baseline of savings)" if v.name == BASELINE else "")
        rows.append([v.name, v.label, note, "" if v.origin.source == "built-in" else v.origin.describe()])
    headers = ["variant", "label", "note", "from"]
    if not any(r[3] for r in rows):  # built-in variants only
        rows, headers = [r[:3] for r in rows], headers[:3]
    table, _ = fit_table(headers, rows, terminal_width(), ["note", "from", "label"])  # notes fold to the width
    print(table)
    return 0
