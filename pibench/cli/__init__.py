"""`pibench` command line: one subcommand per module of this package (see SUBCOMMANDS)."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence

from pibench import __version__
from pibench.util.errors import PibenchError

SUBCOMMANDS = ("list", "cost", "run", "sweep", "party", "report", "compare", "gate", "calibrate", "train")

QUICK_START = """\
quick start:
  pibench list                                   variants and their papers' labels
  pibench cost suites/gpt2_t128.yaml             nonlinear ops and FLOPs of every variant (instant)
  pibench --include my_variants.py cost my.yaml  the same for architectures of your own file
  pibench cost suites/gpt2_t128.yaml --format json --flops exact
  pibench cost suites/gpt2_t512.yaml --predict   predicted CrypTen bytes, rounds, minutes (instant)
  pibench run suites/gpt2_t128.yaml              the main job: every variant under CrypTen 2PC
  pibench report results/gpt2_t128-*.json --format latex
  pibench sweep suites/sweeps/papers_t.yaml     a grid of cells, cached and resumable (--executor ray)
  pibench report results/sweeps/papers_t        one table over a sweep's folder
  pibench gate old.json new.json                 fail (exit 1) when bytes or rounds grew
"""


# argparse reads every help text as a %-format ("%(default)s"): a bare "%" ("the change in %") is a
# crash of --help, so every "%" that does not start a "%(name)s" is doubled.
_BARE_PERCENT = re.compile(r"%(?!\(\w+\)s)")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option with a default says it (none for flags and unset ones);
    a "%" in a help text is a percent sign, never a format."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = _BARE_PERCENT.sub("%%", action.help or "")
        default = action.default
        if "%(default)" in text or "default:" in text or default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    include = "register the variants of a .py file, or of every .py file of a folder (repeatable)"
    parser = argparse.ArgumentParser(
        prog="pibench",
        description="Cost of private (2PC) inference of transformer language-model variants.",
        epilog=QUICK_START,
        formatter_class=HelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"pibench {__version__}")
    parser.add_argument("--include", action="append", default=[], metavar="PATH", help=include)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"pibench.cli.{name}_cmd")
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            parents=[common],
            epilog=getattr(module, "EPILOG", None),
            formatter_class=HelpFormatter,
        )
        module.add_arguments(p)
        # after the command's name too (`pibench cost --include mine.py s.yaml`): kept apart, joined in `main`
        p.add_argument(
            "--include", action="append", dest="include_after", default=argparse.SUPPRESS, metavar="PATH", help=include
        )
        p.set_defaults(handler=module.main)
    return parser


def entry() -> None:
    """The `pibench` program (console script and `python -m pibench`): `main`, then the process ends at
    once with its exit code. Everything a command writes is written and closed by then (records are
    renamed into place, parties ended by PID); what is skipped is the interpreter's teardown of torch,
    CrypTen and JAX, 0.6-0.8 s on these machines, which every party of every run would otherwise pay."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): nothing more can reach it
            pass
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    given = sys.argv[1:] if argv is None else list(argv)
    if not given:  # bare `pibench`: what it does, not an error
        parser.print_help()
        return 0
    args = parser.parse_args(given)
    args.include = [*args.include, *getattr(args, "include_after", [])]
    debug = getattr(args, "debug", False)
    try:
        from pibench.models.plugins import include, load_entry_points

        load_entry_points()  # installed packages' variants (`pibench.variants`)
        args.include = [str(p) for p in include(args.include)]  # and the user's own files
        return int(args.handler(args) or 0)
    except PibenchError as err:
        if debug:
            raise
        print(f"pibench: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("pibench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as err:  # the last line of defence: one line, not a traceback
        if debug:
            raise
        print(f"pibench: internal error: {type(err).__name__}: {err} (rerun with --debug)", file=sys.stderr)
        return 1
