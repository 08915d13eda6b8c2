"""`pibench cost SUITE`: nonlinear operations and FLOPs of every variant, from the symbolic
interpreter (shapes only: instant, no torch, no CrypTen)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
from pibench.models.variants import BASELINE
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
    parser.add_argument(
        "--format",
        choices=("table", "markdown", "latex", "csv", "json"),
        default="table",
        help="output format (markdown and latex: with --predict, the papers' table of the predictions)",
    )
    parser.add_argument("--flops", choices=FLOP_CONVENTIONS.names(), default="paper", help="FLOP convention")
    parser.add_argument(
        "--predict", action="store_true", help="add the suite's backend's predicted bytes, rounds and minutes"
    )
    parser.add_argument("--calibration", metavar="FILE", help="calibration for --predict (default: the shipped one)")
    add_backend_option(parser)
    parser.add_argument(
        "--network",
        action="append",
        metavar="PROFILE",
        help="with --predict: minutes projected onto PROFILE (repeatable; default: the suite's network.project)",
    )
    parser.add_argument("--baseline", help="with --predict: the variant savings are against (default: sm_ln_g)")
    parser.add_argument(
        "--columns",
        metavar="GROUP[,GROUP]",
        help="with --predict: the column groups of the predictions' table, or all (`pibench report --help`)",
    )
    parser.add_argument("--plot", metavar="DIR", help="with --predict: write the report's plots (PNG and SVG) to DIR")


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

    profiles = [parse_profile(n) for n in args.network] if args.network else list(suite.project)
    cal = load_calibration(args.calibration) if args.calibration else shipped_calibration(suite.backend)
    cal.check_settings(suite.backend, suite.settings_dict, f"suite '{suite.path}'")
    backend = BACKENDS.get(suite.backend)
    about = (
        f"predicted for {cal.describe(backend)}; bytes sent by both parties; "
        f"time model from {cal.time_model(suite.settings_dict)}"
    )
    if [p for p in profiles if p.bandwidth_bps]:
        rtt = (
            " + round trips x RTT (the calibration's: an exchange of 3 or more elements is 2, docs/networks.md)"
            if backend.rounds_are_round_trips
            else f" + messages x {backend.rtt_per_round:g} RTT (both parties send at once, docs/networks.md)"
        )
        about += f"; minutes on a network: compute + max(exchange CPU, wire){rtt}"
    return list(predicted(cal, costs, profiles, suite.settings_dict, gens)), about


def cost_frame(
    suite: Suite,
    costs: list[VariantCost],
    preds: list[Predicted],
    gens: list[GenerationCost] | None = None,
    baseline: str | None = None,
) -> pd.DataFrame:
    """One row per variant, numbers as numbers, units in the names (as `pibench report --format csv`):
    operations and elements per nonlinear kind, FLOPs, and with predictions GB, rounds, minutes and their
    savings against the baseline (the same step's). A suite that generates has a row per variant and step
    (prefill, decode_first, decode_last, total)."""
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
    base = next((e.name for e in suite.entries if (baseline or BASELINE) in (e.name, e.variant.name)), None)
    if preds and base is not None:
        for column in [c for c in frame.columns if c == "pred_comm_gb" or c.startswith("pred_lat_min_")]:
            saving = "pred_comm_savings" if column == "pred_comm_gb" else column.replace("_min_", "_savings_")
            steps = frame["step"] if gens else pd.Series(["prefill"] * len(frame))
            of_base = dict(
                zip(steps[frame["variant"] == base], frame.loc[frame["variant"] == base, column], strict=True)
            )
            frame[saving] = [
                of_base.get(step, float("nan")) / x if x else float("nan")
                for step, x in zip(steps, frame[column], strict=True)
            ]
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


def _generation_table(suite: Suite, gens: list[GenerationCost], width: int, fmt: str = "table") -> str:
    """The generation table: a row per variant and step (`generation_steps`), within `width` on a terminal."""
    from pibench.results.tables import fit_table, wrap_lines

    n = suite.new_tokens
    rows = []
    for gen in gens:
        for step, t, c in generation_steps(gen):
            ops = nonlinear_totals(c) if t is None else nonlinear_notation(c)
            row = [c.variant, _step_name(step, len(gen.decode)), "-" if t is None else str(t), ops]
            row += [billions(c.flops_ffn), billions(c.flops_attn)]
            rows.append(row + ([billions(c.flops_head)] if suite.scope == "end_to_end" else []))
    headers = ["variant", "step", "t", "#nonlinear ops", "FLOPs FFN", "FLOPs attn"]
    headers += ["FLOPs head"] if suite.scope == "end_to_end" else []
    spare = ["FLOPs head", "FLOPs attn", "FLOPs FFN"]
    table, left_out = fit_table(
        headers, rows, width if fmt == "table" else 10**6, ["#nonlinear ops"], spare, TABLE_FORMATS[fmt]
    )
    head = (
        f"{n} token{'s' * (n > 1)} after a prompt of {suite.entries[0].config.T}: the prefill yields the first, "
        f"each of {n - 1} decode steps one more (KV cache)"
    )
    notes = ["t: positions attended to; total: the prefill and every decode step, operations per kind (el.: elements)"]
    if left_out:
        notes.append(f"Not shown, to fit {width} columns: {', '.join(left_out)} (--format csv has every column).")
    return f"{wrap_lines([head], width)}\n{table}\n{wrap_lines(notes, width)}"


def _predicted_generation_table(
    gens: list[GenerationCost], preds: list[Predicted], backend: str, width: int, fmt: str = "table"
) -> str:
    """Predicted bytes, rounds and seconds of the passes `generation_steps` names, and the set-up, each
    column in one unit, named in its header."""
    from pibench.results.tables import fit_table, wrap_lines

    passes: list[tuple[str, str, int, int | None, dict[str, float] | None]] = []
    for gen, p in zip(gens, preds, strict=True):
        assert p.generation is not None
        for step, (bytes_, rounds, minutes) in predicted_passes(p, len(gen.decode)).items():
            passes.append((gen.prefill.variant, _step_name(step, len(gen.decode)), bytes_, rounds, minutes))
        if p.generation.setup_bytes is not None:
            passes.append((gen.prefill.variant, "set-up", p.generation.setup_bytes, None, None))
    comm = unit_for((b for _, _, b, _, _ in passes), BYTE_UNITS)
    networks = list(preds[0].minutes)
    lat = unit_for((m * 60 for *_, ms in passes if ms for m in ms.values()), TIME_UNITS)
    rows = [
        [variant, step, comm.show(b), "-" if r is None else f"{r:,}"]
        + ([lat.show(ms[n] * 60) for n in networks] if ms else ["-"] * len(networks))
        for variant, step, b, r, ms in passes
    ]
    headers = ["variant", "step", f"comm\n({comm.name})", "rounds"] + [f"{n}\n({lat.name})" for n in networks]
    spare = [h for h in headers if h.startswith("loopback")]  # the loopback minutes go first where too wide
    table, left_out = fit_table(headers, rows, width if fmt == "table" else 10**6, (), spare, TABLE_FORMATS[fmt])
    if any(p.generation and p.generation.setup_bytes is not None for p in preds):
        footer = (
            "set-up: every weight products use opened once (crypten.weight_masks: reuse), within the prefill's "
            "bytes; decode steps open none"
        )
    else:
        footer = f"no set-up: under {backend} and these settings every product with a weight opens it again"
    notes = [
        f"comm: bytes both parties sent (1 {comm.name} = {int(comm.per):,} B); {', '.join(networks)}: the pass's "
        f"latency, on loopback and projected onto each network; total: every pass, without the set-up; {footer}."
    ]
    if left_out:
        shown = ", ".join(h.replace("\n", " ") for h in left_out)
        notes.append(f"Not shown, to fit {width} columns: {shown} (--format csv has every column).")
    return "predicted, every pass of the generation\n" + table + "\n" + wrap_lines(notes, width)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def main(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite, backend=args.backend, device=args.device)
    given = [f"--{k}" for k in ("calibration", "network", "baseline", "plot", "columns") if getattr(args, k)]
    if given and not args.predict:
        raise PibenchError(f"{', '.join(given)}: {'go' if len(given) > 1 else 'goes'} with --predict")
    if args.plot:
        from pibench.results.records import check_folder

        check_folder(args.plot, "--plot")
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
        print(cost_frame(suite, costs, preds, gens, args.baseline).to_csv(index=False).rstrip("\n"))
        return 0
    from pibench.results.tables import parse_columns, render, terminal_width

    report = None
    if preds:
        from pibench.results.report import predicted_report

        report = predicted_report(suite, costs, preds, about, args.baseline, suite.path)
    if report is not None and args.plot:
        from pibench.results.plots import plot

        for path in plot(report, args.plot, suite.name):
            print(f"plot: {path}", file=sys.stderr)
    width = terminal_width()
    required = ["projected"] if args.network else []  # networks asked for by name: their columns are shown
    if args.format in ("markdown", "latex"):
        if report is not None:
            print(render([report], args.format, parse_columns(args.columns), required=required))
        else:
            print(_analytic_table(suite, costs, args.flops, width, args.format))
        if gens:
            print()
            print(_generation_table(suite, gens, width, args.format))
        if gens and preds:
            print()
            print(_predicted_generation_table(gens, preds, suite.backend, width, args.format))
        return 0
    print(_analytic_table(suite, costs, args.flops, width, "table", weight_notes))
    if report is not None:
        print()
        print(render([report], "table", parse_columns(args.columns), width=width, required=required))
    if gens:
        print()
        print(_generation_table(suite, gens, width))
    if gens and preds:
        print()
        print(_predicted_generation_table(gens, preds, suite.backend, width))
    return 0


TABLE_FORMATS = {"table": "simple", "markdown": "github", "latex": "latex_booktabs"}


def _analytic_table(
    suite: Suite, costs: list[VariantCost], flops: str, width: int, fmt: str, notes: Sequence[str] = ()
) -> str:
    """The suite's title, the table of nonlinear operations and FLOPs (within `width` on a terminal: the
    notation one kind a line, then the registry name left out and said), and what the columns count."""
    from pibench.results.tables import fit_table, wrap_lines

    columns, rows = list(COST_COLUMNS), cost_rows(costs)
    e2e = suite.scope == "end_to_end"
    if e2e:
        columns.append("FLOPs head")
        for row, c in zip(rows, costs, strict=True):
            row.append(billions(c.flops_head))
    limit = width if fmt == "table" else 10**6
    table, left_out = fit_table(columns, rows, limit, ["#nonlinear ops"], ["variant"], TABLE_FORMATS[fmt])
    scope = (
        "head: the embedding lookup and the LM head (end to end), beside the papers' columns"
        if e2e
        else "embeddings and LM head excluded"
    )
    footer = [f"FLOPs: {flops} convention, 2 per multiply-accumulate; {scope}."]
    if suite.weights is not None:
        kind, where = suite.weights
        footer.append(f"Weights: {kind} '{where}', its description checked against every variant.")
    footer += [f"Weights: {note}." for note in notes]
    if left_out:
        footer.append(f"Not shown, to fit {width} columns: {', '.join(left_out)} (--format csv has every column).")
    head = [suite_header(suite)]
    if suite.new_tokens:
        head.append(f"the prefill over the prompt's {suite.entries[0].config.T} positions (generation below)")
    if fmt != "table":
        return "\n".join(head) + f"\n\n{table}\n\n" + "\n\n".join(footer)
    return f"{wrap_lines(head, width)}\n{table}\n{wrap_lines(footer, width)}"
