"""`pibench sweep SWEEP.yaml`: a grid of cells (variant x axes of a base suite), each measured as
`pibench run` measures it, kept in a folder and resumed; run here, or on a Ray cluster."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING

from pibench.sweeps.spec import MAX_CELLS
from pibench.util.errors import PibenchError

if TYPE_CHECKING:
    from pibench.sweeps.spec import Sweep
    from pibench.sweeps.store import Store

HELP = "measure a grid of cells (axes over a suite), cached and resumable, here or on a Ray cluster"
EPILOG = f"""\
Each cell's record goes to DIR/cells/ as it finishes, kept under a digest of what decides its counts;
a rerun measures only cells without a record (a changed axis: only the new cells), and again a cell
whose record is not its own or was measured by another version of pibench's measuring code (said). A sweep has at most
{MAX_CELLS} cells. `pibench report DIR` makes one table over the folder. Exit codes: 0 done, 2 bad
input or a failed cell (the others are kept), 3 done but a cell's MPC output is unusable.
Executors: local (default; one cell at a time, nothing to install) and ray (`pip install
'pibench[ray]'`; --address HOST:PORT joins a cluster, none starts a local instance on 127.0.0.1).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pibench.cli.common import UNUSABLE_EXIT

    parser.add_argument("sweep", help="sweep YAML file, e.g. suites/sweeps/papers_t.yaml")
    parser.add_argument("--out", metavar="DIR", help="the sweep's folder (default: results/sweeps/NAME)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local", help="where cells run")
    parser.add_argument("--address", metavar="HOST:PORT", help="a Ray cluster's head (--executor ray)")
    parser.add_argument("--retry-failed", action="store_true", help="run the cells that failed before again")
    parser.add_argument(
        "--reuse-other-versions",
        action="store_true",
        help="keep cells measured by another version of pibench's measuring code (default: measure them again)",
    )
    parser.add_argument("--list", action="store_true", help="list the cells and which are finished; run nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--accept-unusable",
        action="store_true",
        help=f"exit 0 even when a cell's MPC output is unusable (else exit {UNUSABLE_EXIT})",
    )


def _list(sweep: Sweep, store: Store) -> None:
    from pibench.sweeps.store import other_version

    for cell in sweep.cells:
        found = store.lookup(cell)
        if found.record is not None:
            state = "other version" if other_version(found.record) else "finished"
        else:
            state = "misplaced" if found.problem else "failed" if store.failure(cell) else "to run"
        print(f"{state:<13} {cell.describe()}  ({cell.file})")


def main(args: argparse.Namespace) -> int:
    from pibench.cli.common import UNUSABLE_EXIT
    from pibench.results.records import check_folder
    from pibench.sweeps.frame import render_sweep, sweep_frame
    from pibench.sweeps.spec import load_sweep
    from pibench.sweeps.store import Store, default_folder
    from pibench.sweeps.sweep import Executor, describe, run_sweep

    if args.address and args.executor != "ray":
        raise PibenchError("--address names a Ray cluster; add --executor ray")
    sweep = load_sweep(args.sweep)
    folder = args.out or default_folder(sweep.name)
    check_folder(folder, "--out")
    store = Store(folder)
    if args.list:
        _list(sweep, store)
        return 0
    executor: Executor
    if args.executor == "ray":
        from pibench.sweeps.ray_executor import RayExecutor

        executor = RayExecutor(sweep, args.include, args.accept_unusable, args.address)
    else:
        from pibench.sweeps.local import LocalExecutor

        executor = LocalExecutor(sweep, args.include, args.accept_unusable)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cells in flight are stopped, records kept
    try:
        summary = run_sweep(
            sweep,
            store,
            executor,
            retry_failed=args.retry_failed,
            progress=not args.no_progress,
            reuse_other_versions=args.reuse_other_versions,
        )
    finally:
        executor.close()  # a local Ray instance stops; cells in flight are stopped, finished records kept
    df, manifest, notes = sweep_frame(folder)
    if not df.empty:
        print(render_sweep(df, manifest, notes, "table"))
    print(f"sweep: {describe(summary)}; report: pibench report {folder}", file=sys.stderr)
    failed = summary.failed or [(c, "failed before") for c in summary.skipped_failed]
    if failed:
        cell, why = failed[0]
        raise PibenchError(
            f"{len(failed)} of {summary.total} cells failed (first: {cell.describe()}: {why}); their errors are in "
            f"{store.folder / 'failed'}; --retry-failed runs them again"
        )
    if summary.unusable and not args.accept_unusable:
        names = "; ".join(c.describe() for c in summary.unusable[:3])
        print(
            f"pibench: error: unusable MPC output in {len(summary.unusable)} cells ({names}); "
            "--accept-unusable to accept",
            file=sys.stderr,
        )
        return UNUSABLE_EXIT
    return 0
