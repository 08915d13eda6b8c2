"""The generation table of a record: what the prefill, each generated token and the whole answer cost.

A row per variant: the prefill (bytes, seconds), the first and the last decode step (context t, bytes,
rounds, seconds), the total over the N tokens, and each against the suite's first variant (the
baseline, SM + LN + G in the papers' suites): savings of the prefill, of the last decode step (per
token) and of the total. Bytes are both parties' (1 MB = 1e6 B).
"""

from __future__ import annotations

import textwrap

from tabulate import tabulate

from pibench.results.records import Record


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f}"


def _ratio(base: float, mine: float) -> str:
    return f"{base / mine:.2f}×" if mine else "-"


def generation_table(record: Record) -> str | None:
    """The table, or None where the record's variants do not generate."""
    rows, base = [], None
    variants = [v for v in record.variants if v.measured.generation is not None]
    if not variants:
        return None
    for v in variants:
        gen = v.measured.generation
        assert gen is not None
        prefill, first, last = gen.steps[0], gen.steps[1], gen.steps[-1]
        total = (gen.bytes, sum(s.rounds for s in gen.steps), sum(s.wall_s for s in gen.steps))
        base = base or (prefill.bytes, last.bytes, total[0])
        rows.append(
            [
                v.label,
                _mb(prefill.bytes),
                f"{prefill.wall_s:.2f}",
                *(x for s in (first, last) for x in (s.context, _mb(s.bytes), f"{s.rounds:,}", f"{s.wall_s:.2f}")),
                _mb(total[0]),
                f"{total[1]:,}",
                f"{total[2]:.1f}",
                *(_ratio(b, m) for b, m in zip(base, (prefill.bytes, last.bytes, total[0]), strict=True)),
            ]
        )
    n = len(variants[0].measured.generation.steps)  # type: ignore[union-attr]
    headers = ["variant", "prefill MB", "s", "t", "decode 1 MB", "rounds", "s", "t", "last MB", "rounds", "s"]
    headers += [f"{n} tok. MB", "rounds", "s", "sav. prefill", "per token", "total"]
    setups = [v.measured.generation.setup for v in variants if v.measured.generation.setup]  # type: ignore[union-attr]
    setup = (
        f"; of each prefill's bytes, {_mb(max(s.bytes for s in setups))} MB at most open the weights' masks once, "
        "reused by every later token (crypten.weight_masks: reuse)"
        if setups
        else ""
    )
    footer = (
        f"MB: bytes both parties sent (1 MB = 1e6 B); t: positions attended to; decode steps timed once each{setup}; "
        f"savings against {variants[0].label}."
    )
    return (
        f"generation: {n} tokens, the prefill then {n - 1} decode steps (KV cache)\n"
        + tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
        + "\n"
        + textwrap.fill(footer, 120, subsequent_indent="  ")
    )
