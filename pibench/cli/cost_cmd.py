"""`pibench cost SUITE`: nonlinear operations and FLOPs of every variant, from the symbolic
interpreter (shapes only: instant, no torch, no CrypTen)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from pibench.cli.common import add_backend_option
from pibench.counting.cost import FLOP_CONVENTIONS, GenerationCost, VariantCost
from pibench.counting.notation import (
    BYTE_UNITS,
    COST_COLUMNS,
    TIME_UNITS,
    billions,
    cost_rows,
    nonlinear_notation,
    nonlinear_totals,
    unit_for,
)
from pibench.models.opkinds import NONLINEAR, kinds_in
from pibench.suites.analytic import check_described_weights, suite_costs, suite_generations
from pibench.suites.loader import Suite, load_suite
from pibench.util.errors import PibenchError

if TYPE_CHECKING:
    import pandas as pd

    from pibench.calibration.fit import Predicted

HELP = "count nonlinear operations and FLOPs of a suite's variants (analytic, instant)"
EPILOG = """\
FLOPs are 2 per multiply-accumulate. --flops paper (default) reproduces the papers' columns;
--flops exact counts every matrix product the forward pass executes (see README).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="suite YAML file, e.g. suites/gpt2_t128.yaml")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument("--flops", choices=FLOP_CONVENTIONS.names(), default="paper", help="FLOP convention")
    parser.add_argument(
        "--predict", action="store_true", help="add the suite's backend's predicted bytes, rounds and minutes"
    )
    parser.add_argument("--calibration", metavar="FILE", help="calibration for --predict (default: the shipped one)")
    add_backend_option(parser)
    parser.add_argument(
        "--network", action="append", metavar="PROFILE", help="with --predict: minutes under PROFILE too (repeatable)"
    )


def suite_header(suite: Suite) -> str:
    """ "smoke (L=2, H=2, d=32, T=8): description", as report tables title a suite."""
    dims = ", ".join(f"{k}={v}" for k, v in suite.dims.items())
    return f"{suite.name} ({dims})" + (f": {suite.description}" if suite.description else "")


def _predictions(
    suite: Suite, costs: list[VariantCost], gens: list[GenerationCost], args: argparse.Namespace
) -> tuple[list[Predicted], str]:
    from pibench.backends import BACKENDS
    from pibench.calibration.fit import load_calibration, predicted, shipped_calibration
    from pibench.counting.network import parse_profile

    profiles = [parse_profile(n) for n in args.network or []]
    cal = load_calibration(args.calibration) if args.calibration else shipped_calibration(suite.backend)
    cal.check_settings(suite.backend, suite.settings_dict, f"suite '{suite.path}'")
    backend = BACKENDS.get(suite.backend)
    about = (
        f"predicted for {cal.describe(backend)}; bytes sent by both parties; "
        f"time model from {cal.time_model(suite.settings_dict)}"
    )
    if profiles:
        rtt = (
            " + rounds x RTT (measured runs count round trips: up to 2 per round, docs/networks.md)"
            if backend.rounds_are_round_trips
            else f" + messages x {backend.rtt_per_round:g} RTT (both parties send at once, docs/networks.md)"
        )
        about += f"; minutes on a network: compute + max(exchange CPU, wire){rtt}"
    return list(predicted(cal, costs, profiles, suite.settings_dict, gens)), about


def cost_frame(
    suite: Suite, costs: list[VariantCost], preds: list[Predicted], gens: list[GenerationCost] | None = None
) -> pd.DataFrame:
    """One row per variant, numbers as numbers, units in the names (as `pibench report --format csv`):
    operations and elements per nonlinear kind, FLOPs, and with predictions GB, rounds and minutes.
    A suite that generates has a row per variant and step (prefill, decode_first, decode_last, total)."""
    import pandas as pd

    rows = []
    predicted: list[Predicted | None] = [*preds] if preds else [None] * len(costs)
    for i, (c, p) in enumerate(zip(costs, predicted, strict=True)):
        steps = generation_steps(gens[i]) if gens else [("prefill", c.config.T, c)]
        passes: dict[str, tuple[int, int, dict[str, float]]] = {}
        if p:
            passes = predicted_passes(p, len(gens[i].decode)) if gens else {"prefill": (p.bytes, p.rounds, p.minutes)}
        for step, t, part in steps:
            row = _cost_row(suite, part) | ({"step": step, "context": t} if gens else {})
            if step in passes:
                bytes_, rounds, minutes = passes[step]
                row |= {"pred_comm_gb": bytes_ / 1e9, "pred_rounds": rounds}
                row |= {f"pred_lat_min_{_slug(net)}": m for net, m in minutes.items()}
            rows.append(row)
    frame = pd.DataFrame(rows)
    if gens:
        frame["context"] = frame["context"].astype("Int64")  # the total's is empty
    return frame


def _cost_row(suite: Suite, c: VariantCost) -> dict[str, Any]:
    nonlinear = c.to_json()["nonlinear"]
    row: dict[str, Any] = {"suite": suite.name, "variant": c.variant, "label": c.label}
    row["nonlinear"] = nonlinear_notation(c)
    for kind in NONLINEAR:
        if kind in kinds_in(suite.scope):
            row[f"{kind}_ops"] = nonlinear.get(kind, {}).get("count", 0)
            row[f"{kind}_elements"] = nonlinear.get(kind, {}).get("elements", 0)
    row |= {"flops_ffn": c.flops_ffn, "flops_attn": c.flops_attn}
    if suite.scope == "end_to_end":
        row["flops_head"] = c.flops_head
    return row | {"flops_convention": c.convention}


def predicted_passes(p: Predicted, decode_steps: int) -> dict[str, tuple[int, int, dict[str, float]]]:
    """(bytes, rounds, minutes by network) of the passes `generation_steps` names, from a prediction
    with its generation's (the total: every pass, without the set-up)."""
    gen = p.generation
    assert gen is not None
    steps = gen.steps
    out = {"prefill": (steps[0].bytes, steps[0].rounds, steps[0].minutes)}
    if decode_steps:
        out["decode_first"] = (steps[1].bytes, steps[1].rounds, steps[1].minutes)
    if decode_steps > 1:
        out["decode_last"] = (steps[-1].bytes, steps[-1].rounds, steps[-1].minutes)
    minutes = {net: sum(s.minutes[net] for s in steps) for net in steps[0].minutes}
    out["total"] = (sum(s.bytes for s in steps), sum(s.rounds for s in steps), minutes)
    return out


def generation_steps(gen: GenerationCost) -> list[tuple[str, int | None, VariantCost]]:
    """(step, context, cost) of the prefill, the first and the last decode step, and the total: what
    `pibench cost` shows of a suite that generates (context: positions attended to; None: a sum)."""
    cfg = gen.prefill.config
    steps: list[tuple[str, int | None, VariantCost]] = [("prefill", cfg.T, gen.prefill)]
    if gen.decode:
        steps.append(("decode_first", cfg.T + 1, gen.decode[0]))
    if len(gen.decode) > 1:
        steps.append(("decode_last", cfg.context, gen.decode[-1]))
    return [*steps, ("total", None, gen.total)]


def _generation_json(gen: GenerationCost) -> dict[str, Any]:
    return {
        "new_tokens": gen.prefill.config.new_tokens,
        "decode_steps": len(gen.decode),
        **{step: {"context": t, **_counts_json(c)} for step, t, c in generation_steps(gen)},
    }


def _counts_json(c: VariantCost) -> dict[str, Any]:
    whole = c.to_json()
    return {"nonlinear": whole["nonlinear"], "flops": whole["flops"]}


def _step_name(step: str, decode_steps: int) -> str:
    return {"decode_first": "decode 1", "decode_last": f"decode {decode_steps}"}.get(step, step)


def _generation_table(suite: Suite, gens: list[GenerationCost]) -> str:
    """The generation table, 120 columns at GPT-2 size: a row per variant and step (`generation_steps`)."""
    n = suite.new_tokens
    rows = []
    for gen in gens:
        for step, t, c in generation_steps(gen):
            ops = nonlinear_totals(c) if t is None else nonlinear_notation(c)
            row = [c.variant, _step_name(step, len(gen.decode)), "-" if t is None else t, ops]
            row += [billions(c.flops_ffn), billions(c.flops_attn)]
            rows.append(row + ([billions(c.flops_head)] if suite.scope == "end_to_end" else []))
    headers = ["variant", "step", "t", "#nonlinear ops", "FLOPs FFN", "FLOPs attn"]
    headers += ["FLOPs head"] if suite.scope == "end_to_end" else []
    return (
        f"{n} token{'s' * (n > 1)} after a prompt of {suite.entries[0].config.T}: the prefill yields the first, "
        f"each of {n - 1} decode steps one more (KV cache)\n"
        + tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
        + "\nt: positions attended to; total: the prefill and every decode step, operations per kind (el.: elements)"
    )


def _predicted_generation_table(gens: list[GenerationCost], preds: list[Predicted], backend: str) -> str:
    """Predicted bytes, rounds and minutes of the passes `generation_steps` names, and the set-up."""
    rows = []
    for gen, p in zip(gens, preds, strict=True):
        assert p.generation is not None
        for step, (bytes_, rounds, minutes) in predicted_passes(p, len(gen.decode)).items():
            row = [gen.prefill.variant, _step_name(step, len(gen.decode)), f"{bytes_ / 1e6:,.2f}", f"{rounds:,}"]
            rows.append(row + [f"{m:,.2f}" for m in minutes.values()])
        setup = p.generation.setup_bytes
        if setup is not None:
            rows.append([gen.prefill.variant, "set-up", f"{setup / 1e6:,.2f}", "-"] + ["-"] * len(p.minutes))
    headers = ["variant", "step", "pred. MB", "pred. rounds", *(f"min {n}" for n in preds[0].minutes)]
    if any(p.generation and p.generation.setup_bytes is not None for p in preds):
        footer = (
            "set-up: each weight's mask opened once (crypten.weight_masks: reuse), within the prefill's bytes; "
            "decode steps open none"
        )
    elif backend == "crypten":
        footer = "every product opens its weight again (crypten.weight_masks: fresh)"
    else:
        footer = f"no set-up: {backend} keeps nothing from one pass for the next"
    return (
        "predicted, every pass of the generation\n"
        + tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
        + "\n"
        + textwrap.fill(
            f"MB: bytes both parties sent (1 MB = 1e6 B); total: every pass, without the set-up; {footer}.", 120
        )
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def main(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite, backend=args.backend, device=args.device)
    if (args.calibration or args.network) and not args.predict:
        raise PibenchError("--calibration and --network go with --predict")
    weight_notes = check_described_weights(suite)
    costs = suite_costs(suite, args.flops)
    gens = suite_generations(suite, args.flops)
    preds, about = _predictions(suite, costs, gens, args) if args.predict else ([], "")
    if args.format == "json":
        out = [c.to_json() for c in costs]
        for obj, p in zip(out, preds, strict=False):  # no predictions: nothing to add
            obj["predicted"] = p.model_dump(mode="json")
        for obj, g in zip(out, gens, strict=False):
            obj["generation"] = _generation_json(g)
        json.dump(out, sys.stdout, indent=2, ensure_ascii=False)
        print()
        return 0
    if args.format == "csv":
        print(cost_frame(suite, costs, preds, gens).to_csv(index=False).rstrip("\n"))
        return 0
    columns, rows = list(COST_COLUMNS), cost_rows(costs)
    e2e = suite.scope == "end_to_end"
    if e2e:
        columns.append("FLOPs head")
        for row, c in zip(rows, costs, strict=True):
            row.append(billions(c.flops_head))
    if preds:
        comm = unit_for((p.bytes for p in preds), BYTE_UNITS)
        lat = unit_for((m * 60 for p in preds for m in p.minutes.values()), TIME_UNITS)
        columns += [
            f"pred. comm ({comm.name})",
            "pred. rounds",
            *(f"pred. lat. ({lat.name}) {n}" for n in preds[0].minutes),
        ]
        for row, p in zip(rows, preds, strict=True):
            row += [comm.show(p.bytes), f"{p.rounds:,}", *(lat.show(m * 60) for m in p.minutes.values())]
    print(suite_header(suite))
    if gens:
        print(f"the prefill over the prompt's {suite.entries[0].config.T} positions (generation below)")
    print(tabulate(rows, headers=columns, tablefmt="simple", disable_numparse=True))
    scope = (
        "head: the embedding lookup and the LM head (end to end), beside the papers' columns"
        if e2e
        else "embeddings and LM head excluded"
    )
    print(f"FLOPs: {args.flops} convention, 2 per multiply-accumulate; {scope}")
    if suite.weights is not None:
        kind, where = suite.weights
        print(f"weights: {kind} '{where}', its description checked against every variant")
    for note in weight_notes:
        print(f"weights: {note}")
    if preds:
        print(f"pred.: {about}.")
    if gens:
        print()
        print(_generation_table(suite, gens))
    if gens and preds:
        print()
        print(_predicted_generation_table(gens, preds, suite.backend))
    return 0
