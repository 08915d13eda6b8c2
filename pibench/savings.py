"""A plain savings table of a run record against the SM+LN+G baseline (the full reporter comes later)."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from pibench.notation import nonlinear_notation_json
from pibench.variants import BASELINE

COLUMNS = ("variant", "#nonlinear ops", "comm (GB)", "rounds", "time (s)", "comm savings", "time savings")


def savings_rows(record: dict[str, Any]) -> list[list[str]]:
    variants = record["variants"]
    base = next((v for v in variants if v["variant"] == BASELINE), None)
    rows = []
    for v in variants:
        m = v["measured"]
        row = [v["label"], nonlinear_notation_json(v["analytic"]["nonlinear"]), f"{m['bytes'] / 1e9:.3f}"]
        row += [str(m["rounds"]), f"{m['wall_s']:.1f}"]
        if base:
            b = base["measured"]
            row += [f"{b['bytes'] / m['bytes']:.2f}×", f"{b['wall_s'] / m['wall_s']:.2f}×"]
        else:
            row += ["-", "-"]
        rows.append(row)
    return rows


def savings_table(record: dict[str, Any]) -> str:
    settings = record["backend"]["settings"]
    run = record["run"]
    how = "every layer measured" if run["full"] else "layers sampled, bytes and rounds extrapolated exactly"
    has_base = any(v["variant"] == BASELINE for v in record["variants"])
    footer = (
        f"CrypTen 2PC, provider {settings['provider']}, {settings['precision_bits']} fraction bits, "
        f"{settings['gelu']}-GELU; {run['network']}; {how}.\nComm: bytes sent by both parties together "
        f"(GB = 1e9 B). Savings: " + ("against SM + LN + G." if has_base else f"none ({BASELINE} is not in the suite).")
    )
    return tabulate(savings_rows(record), headers=COLUMNS, tablefmt="simple", disable_numparse=True) + "\n" + footer
