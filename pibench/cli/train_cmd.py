"""`pibench train SUITE`: train every variant of a suite small and measure perplexity and attention entropy."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from pibench.cli.common import add_out_options, say_record, write_or_keep
from pibench.results.records import check_writable, default_record_path
from pibench.suites.loader import load_suite
from pibench.suites.train_section import MAX_SEEDS
from pibench.util.errors import PibenchError

HELP = "train a suite's variants as small byte-level language models; measure perplexity and attention entropy"
EPILOG = """\
The corpus is this Python's standard library (.py files, split by file into train and validation);
tokens are bytes, so perplexity is per byte. The suite's `train:` section sets the token budget,
batch, learning rate and schedule, evaluation and EReg (see README, "Quality"). A variant that
diverges (loss or gradient not finite, or loss blow-up) is reported and the next one trains.
Exit codes: 0 done (also when a variant diverged: the record says which), 2 bad input.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="suite YAML file, e.g. suites/quality_small.yaml")
    add_out_options(parser, "results/SUITE-quality-TIME.json")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--checkpoints",
        metavar="DIR",
        help="where each trained variant's weights go, NAME.safetensors (default: the suite's "
        "'weights: {checkpoint: DIR}', else beside the record, RECORD-weights/)",
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="train on the CPU or on the machine's first GPU"
    )
    parser.add_argument(
        "--seeds",
        metavar="S[,S...]",
        type=_seeds,
        help="train each variant once per seed, e.g. 0,1,2 (default: the suite's train.seeds, else train.seed)",
    )


def _seeds(text: str) -> tuple[int, ...]:
    """--seeds: distinct non-negative integers, comma-separated."""
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text[:40]}' is not a comma-separated list of seeds, e.g. 0,1,2") from None
    if any(s < 0 or s > 2**62 for s in seeds) or len(set(seeds)) != len(seeds) or len(seeds) > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"'{text[:40]}': at most {MAX_SEEDS} distinct seeds from 0 to 2^62")
    return seeds


def checkpoint_name(entry: str, seed_index: int, seed: int) -> str:
    """The file a variant's weights trained with its `seed_index`-th seed go to: NAME.safetensors for the
    first seed (what `weights: {checkpoint: DIR}` runs), NAME.seedS.safetensors for the others."""
    return f"{entry}.safetensors" if seed_index == 0 else f"{entry}.seed{seed}.safetensors"


def main(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite)
    out = args.out or default_record_path(f"{suite.name}-quality")
    check_writable(out, force=args.force)
    import torch

    from pibench.util.progress import Progress

    if args.device == "cuda" and not torch.cuda.is_available():
        raise PibenchError("--device cuda: this machine has no GPU that torch can use")

    from pibench.quality.summary import quality_table
    from pibench.quality.train import train_variant
    from pibench.quality.training_record import build_quality_record
    from pibench.suites.corpus import load_corpus

    corpus = load_corpus(max_bytes=suite.train.corpus_bytes)
    # --checkpoints, else the folder the suite runs its weights from, else beside the record
    weights_dir = Path(args.checkpoints or suite.checkpoint_dir or Path(out).with_name(f"{Path(out).stem}-weights"))
    results = []
    for entry in suite.entries:
        settings = entry.train or suite.train
        seeds = args.seeds or settings.seed_list
        runs = []
        for k, seed in enumerate(seeds):
            desc = entry.name if len(seeds) == 1 else f"{entry.name} seed {seed}"
            bar = Progress(None, "step", not args.no_progress, desc=desc, leave=False)

            def progress(step: int, steps: int, loss: float, bar: Progress = bar) -> None:
                bar.advance(step - bar.n, total=steps)
                bar.note(f"loss={loss:.3f}")

            where = weights_dir / checkpoint_name(entry.name, k, seed)
            s = dataclasses.replace(settings, seed=seed)
            runs.append(train_variant(entry.config, entry.variant.ereg, corpus, s, progress, args.device, where))
            bar.close()
            r = runs[-1]
            said = (
                f"diverged at step {r.diverged.step}: {r.diverged.reason}"
                if r.diverged
                else (f"val ppl {r.val_ppl:.3f} per byte, {r.wall_s:.0f} s")
            )
            print(f"{desc}: {said}", file=sys.stderr, flush=True)
        results.append(runs)
    if args.seeds:
        suite = dataclasses.replace(suite, train=dataclasses.replace(suite.train, seeds=args.seeds))
    record = build_quality_record(suite, corpus, results)
    path, lost = write_or_keep(Path(out), record, unique=not args.out)
    print(quality_table(record))
    if lost:
        raise PibenchError(lost)
    say_record(path)
    return 0
