"""The generation table of a record: what the prefill, each generated token and the whole answer cost.

A row per variant: the prefill (GB, seconds), a token (the last decode step, the dearest: MB, rounds,
seconds, and its latency projected onto the record's networks), the total over the N tokens (GB,
minutes), and the savings of the prefill, of a token and of the total against the suite's first
variant (the baseline, SM + LN + G in the papers' suites). Bytes are both parties' (1 GB = 1e9 B).
The footer says what the head sampling and the tokens were, where the run was end to end.
"""

from __future__ import annotations

import textwrap

from tabulate import tabulate

from pibench.counting.network import PROFILES, NetworkProfile, project
from pibench.counting.notation import BYTE_UNITS, unit_for
from pibench.measuring.measured import Generation, TokenStep
from pibench.results.records import Record, VariantRecord
from pibench.results.report import rounds_are_round_trips, rtt_per_round


def _ratio(base: float, mine: float) -> str:
    return f"{base / mine:.2f}×" if mine else "-"


def token_projected_s(step: TokenStep, profile: str | NetworkProfile, rtt: float = 1.0) -> float:
    """A pass's seconds projected onto `profile` (`pibench.counting.network.project`; the parties send
    equal halves of the bytes), charging `rtt` RTTs per round trip (`Backend.rtt_per_round`)."""
    comm = sum(k.comm_s for k in step.by_kind.values())
    link = PROFILES[profile] if isinstance(profile, str) else profile
    return project(step.wall_s, comm, step.latency_rounds * rtt, step.bytes // 2, link)


def generating(record: Record) -> list[VariantRecord]:
    """The record's variants that generate (a `measured.generation`), in order."""
    return [v for v in record.variants if v.measured.generation is not None]


def _generation(v: VariantRecord) -> Generation:
    assert v.measured.generation is not None
    return v.measured.generation


def generation_table(record: Record) -> str | None:
    """The tables (cost, then savings), or None where the record's variants do not generate."""
    variants = generating(record)
    if not variants:
        return None
    profiles = [p for p in record.run.project if p in PROFILES] if record.run.network == "loopback" else []
    rtt = rtt_per_round(record)
    gens = [_generation(v) for v in variants]
    big = unit_for([g.bytes for g in gens], BYTE_UNITS)  # the prefill and all tokens
    small = unit_for([g.steps[-1].bytes for g in gens], BYTE_UNITS)  # a token
    rows = []
    for v, gen in zip(variants, gens, strict=True):
        prefill, last = gen.steps[0], gen.steps[-1]
        row = [v.label, big.show(prefill.bytes), f"{prefill.wall_s:.1f}"]
        row += [small.show(last.bytes), f"{last.rounds:,}", f"{last.wall_s:.2f}"]
        row += [f"{token_projected_s(last, p, rtt):.1f}" for p in profiles]
        rows.append([*row, big.show(gen.bytes), f"{sum(s.wall_s for s in gen.steps) / 60:.2f}"])
    first = _generation(variants[0])
    n, t = len(first.steps), first.steps[-1].context
    headers = ["variant", f"pre. {big.name}", "s", f"tok. {small.name}", "rounds", "s"]
    headers += [f"{p} proj." for p in profiles]
    headers += [f"all {big.name}", "min"]
    return (
        f"generation: {n} tokens, the prefill (pre.), then {n - 1} decode steps (KV cache); tok.: the last (t={t})\n"
        + tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
        + "\n\n"
        + _savings_table(variants, profiles, rtt)
        + "\n"
        + textwrap.fill(_footer(variants, profiles, rtt, rounds_are_round_trips(record)), 120, subsequent_indent="  ")
    )


def _savings_table(variants: list[VariantRecord], profiles: list[str], rtt: float) -> str:
    """Savings against the first variant of the prefill, a token (the last decode step) and all N
    tokens: of bytes, of measured seconds, and of seconds projected onto each profile."""

    def figures(v: VariantRecord) -> list[float]:
        steps = _generation(v).steps
        parts = (steps[:1], steps[-1:], steps)  # the prefill, a token, all
        out = [float(sum(s.bytes for s in p)) for p in parts] + [sum(s.wall_s for s in p) for p in parts]
        return out + [sum(token_projected_s(s, net, rtt) for s in p) for net in profiles for p in parts]

    base = figures(variants[0])
    rows = [[v.label, *(_ratio(b, m) for b, m in zip(base, figures(v), strict=True))] for v in variants]
    headers = ["\n\nsavings (×) of", "comm.\n\npre.", "\n\ntok.", "\n\nall", "lat.\n\npre.", "\n\ntok.", "\n\nall"]
    for net in profiles:  # projected, not measured: said in the header
        headers += [f"{net}\nproj.\npre.", "\n\ntok.", "\n\nall"]
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def _footer(variants: list[VariantRecord], profiles: list[str], rtt: float, round_trips: bool) -> str:
    setups = [g.setup.bytes for g in map(_generation, variants) if g.setup]
    parts = ["bytes both parties sent (1 GB = 1e9 B); decode steps timed once each"]
    if setups:
        parts.append(
            f"of each prefill's bytes, {max(setups) / 1e6:,.2f} MB at most open the weights' masks once, "
            "reused by every later token (crypten.weight_masks: reuse)"
        )
    if profiles:
        how = (
            "round trips x RTT included (an all_reduce of 3 or more elements is 2: docs/networks.md)"
            if round_trips
            else f"messages x {rtt:g} RTT: the backend's rounds are messages both parties send at once"
        )
        parts.append(f"{', '.join(profiles)}: a token's seconds projected onto the network ({how})")
    heads = {tuple(g.head_steps) for g in map(_generation, variants) if g.head_steps}
    if heads:
        steps = " and ".join(str(j) for j in sorted({j for h in heads for j in h}))
        parts.append(
            f"end to end, the head (embedding lookup, logits, argmax: the same shapes at every step) ran at decode "
            f"steps {steps}, the others counting its bytes, rounds and seconds (--full: every step, and the tokens)"
        )
    chosen = [(v, v.measured.tokens) for v in variants if v.measured.tokens is not None]
    if chosen:
        changed = [f"{v.label} at token {t.first_difference + 1}" for v, t in chosen if t.first_difference is not None]
        parts.append(
            "tokens revealed to the client: "
            + (
                f"MPC error changed the plaintext's greedy choice for {', '.join(changed)}"
                if changed
                else f"the plaintext interpreter's greedy ones, for every variant ({len(chosen[0][1].generated)} each)"
            )
        )
    return "; ".join(parts) + f"; savings (×) against {variants[0].label}."
