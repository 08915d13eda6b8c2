"""What the README and docs state about the code holds: defaults in settings tables, tolerances of the gate."""

from __future__ import annotations

import dataclasses
import re

from pibench.backends import BACKENDS
from pibench.results.gate import METRICS
from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ROW = re.compile(r"^\| (`[\w.]+`(?:, `[\w.]+`)*) \| ([^|]+) \|", re.M)


def _shown(value: object) -> str:
    """A default as the docs write it: false, 0, tanh (backticks stripped)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_settings_tables_state_the_defaults_the_code_has():
    """Every table row `| `key`, `key` | default, default | ...` whose keys are fields of a backend's
    settings states those fields' defaults (the SPU table once said false where the code says true)."""
    checked = 0
    for page in PAGES:
        for keys, values in ROW.findall(page.read_text(encoding="utf-8")):
            names = [k.strip("`") for k in keys.split(", ")]
            for entry in BACKENDS:
                defaults = entry.value.default_settings()
                if all(n in {f.name for f in dataclasses.fields(defaults)} for n in names):
                    stated = [v.strip().strip("`") for v in values.split(", ")]
                    assert stated == [_shown(getattr(defaults, n)) for n in names], (page.name, names)
                    checked += 1
    assert checked >= 5  # the SPU table's rows, at least


def test_the_gate_table_states_the_tolerances_the_code_applies():
    text = (ROOT / "docs" / "gate.md").read_text(encoding="utf-8")
    for name in ("wall_s", "time_savings", "max_abs_error"):
        row = next(
            ln for ln in text.splitlines() if ln.startswith(f"| `{name}`") and re.search(r"\| (lower|higher) \|", ln)
        )
        m = METRICS[name]
        assert f"{'+' if m.lower_is_better else '-'}{m.tolerance:.0%}" in row, row


def _command_lines() -> list[tuple[str, str]]:
    """Every `pibench ...` command line of README and docs: in code blocks (prompts and comments
    stripped) and in inline code, with the page it is on."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
        lines = [(ln, True) for block in blocks for ln in block.splitlines()]
        # in prose, `pibench cost --predict` names a feature: its command and options must exist
        lines += [(ln, False) for ln in re.findall(r"`(pibench [^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))]
        for line, whole in lines:
            line = re.sub(r"^\s*(\S+\$\s+)?", "", line).split("  #")[0].split(" # ")[0].strip()
            if line.startswith("pibench ") and not line.startswith("pibench: "):
                found.append((page.name, line if whole else f"[{line}]"))
    return found


def test_every_command_shown_in_readme_and_docs_parses():
    """Each command line a page shows is one pibench parses (options, choices, values), and its
    `--help` prints; a synopsis line (with [OPTIONS]) names only options its subcommand has."""
    import contextlib
    import io
    import shlex

    import pytest

    from pibench.cli import SUBCOMMANDS, build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    lines = _command_lines()
    assert len(lines) > 20 and {p for p, _ in lines} >= {"README.md", "running.md", "reports.md"}
    for page, line in lines:
        words = shlex.split(line.strip("[]"))[1:]
        if "[" in line or "]" in line or "|" in line:  # a synopsis, or a mention in prose
            command = next((w for w in words if w in SUBCOMMANDS), None)
            assert command in SUBCOMMANDS or all(w.startswith("-") for w in words), (page, line)
            where = subparsers[command] if command else parser
            known = {o for a in where._actions for o in a.option_strings}
            named = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line))
            assert named <= known | {"--include"}, (page, line, named - known)
            continue
        for argv in (words, [*words, "--help"]):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
                build_parser().parse_args(argv)
                raise SystemExit(0)  # parsed: the command line is one pibench takes
            assert exit_.value.code == 0, (page, line, err.getvalue()[-300:])


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_of_readme_and_docs_resolves():
    """Issue 32: docs/reports.md linked its five images as `docs/...png` from inside docs/, and running.md
    `docs/security.md`. Every relative link and image of README and docs now names a file that exists,
    and a link to a heading (`page.md#anchor`) one that page has."""
    links = 0
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.exists(), f"{page.name}: {target} does not exist"
            if anchor and resolved.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", resolved.read_text(encoding="utf-8"), flags=re.M)
                assert anchor in {_anchor(h) for h in headings}, f"{page.name}: {target}: no such heading"
            links += 1
    assert links > 30
