"""No module of pibench imports another that imports it back, directly or through others, counting
imports inside functions too (a lazy import still ties two modules together)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pibench"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The pibench modules `name` imports, anywhere in its file."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from pibench.x import y`: y may be a module of its own
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert len(graph) > 30 and graph["pibench.measuring.runner"]  # the walk found the package
    assert _cycles(graph) == []


def test_the_walk_sees_lazy_imports_and_finds_a_cycle():
    modules = {"p.a": Path("a"), "p.b": Path("b")}
    graph = {"p.a": {"p.b"}, "p.b": {"p.a"}}
    assert _cycles(graph) == [["p.a", "p.b"]]
    code = "def f():\n    from pibench.results.records import read_record\n"
    tmp = Path(__file__).with_name("_lazy_probe.py")
    try:
        tmp.write_text(code)
        assert _imports("x", tmp, {**modules, "pibench.results.records": Path()}) == {"pibench.results.records"}
    finally:
        tmp.unlink()


# The stages, lowest first: a module may import its own stage and those below, never one above.
STAGES = (
    "util",
    "models",
    "counting",
    "backends",
    "suites",
    "measuring",
    "calibration",
    "results",
    "quality",
    "sweeps",
    "cli",
)
# Files of the same role in each backend's own package share their names on purpose.
SAME_ROLE = {"__init__", "__main__", "session", "settings"}


def _stage(module: str) -> int:
    """The stage of a module: its folder under pibench (the package itself and its __main__: outside)."""
    parts = module.split(".")
    if len(parts) < 3 and (len(parts) == 1 or parts[1] in ("__main__", "_version")):
        return len(STAGES) if len(parts) == 2 else -1  # `python -m pibench` is the CLI; pibench is its version
    return STAGES.index(parts[1])


def test_every_module_is_in_a_stage_and_imports_only_downwards():
    modules = _modules()
    # beside the stages: `python -m pibench`, and the version setuptools-scm writes when pibench is built
    outside = ("__main__", "_version")
    assert all(len(m.split(".")) == 1 or m.split(".")[1] in (*STAGES, *outside) for m in modules), sorted(modules)
    upward = [
        f"{name} ({STAGES[_stage(name)]}) imports {target} ({STAGES[_stage(target)]})"
        for name, path in modules.items()
        for target in _imports(name, path, modules)
        if 0 <= _stage(name) < len(STAGES) and _stage(target) > _stage(name)
    ]
    assert upward == []


def test_no_two_modules_share_a_name_and_every_folder_says_its_job():
    names: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        names.setdefault(path.stem, []).append(str(path.relative_to(PACKAGE)))
    shared = {n: p for n, p in names.items() if len(p) > 1 and n not in SAME_ROLE}
    assert shared == {}
    for folder in [p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__" and any(p.glob("*.py"))]:
        init = folder / "__init__.py"
        assert init.exists(), folder
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.split(".")[0]) > 20, f"{init} says nothing of its folder's job"


def test_records_are_read_by_attribute_not_by_string_key():
    """Records are typed from the party to the file (`pibench.measuring.measured`, `pibench.results.records`):
    no module looks up a record's fields by string key (`rec["measured"]["wall_s"]` once appeared about
    60 times across reports, gate and CLI)."""
    import re

    fields = ("measured", "variants", "analytic", "parties", "by_kind", "environment", "quality", "predicted")
    # not records: a suite's raw YAML before validation, messages between processes, JSON being built
    # for stdout, the calibration's running sums of a prediction
    not_records = ("data", "event", "obj", "out", "totals")
    pattern = re.compile(r"""(\w+)\[["'](""" + "|".join(fields) + r""")["']\]""")
    found = [
        f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        for m in pattern.finditer(line)
        if m.group(1) not in not_records
    ]
    assert found == []
