"""The package's shape: imports run one way (no circles) and no module reaches into
another's private names. Read from the source, so it holds for imports inside functions
too, which a circle at import time would not reveal."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "prefdelta"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every prefdelta import in ``path``."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] == "prefdelta":
                found.append((base, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "prefdelta":
                    found.append((alias.name, [], node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, names, _ in _imports(path):
            # `from pkg import mod` names a module; `from mod import func` names the module
            for n in names:
                if f"{target}.{n}" in modules:
                    graph[name].add(f"{target}.{n}")
            if target in modules and not all(f"{target}.{n}" in modules for n in names or [""]):
                graph[name].add(target)
        graph[name].discard(name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_circles() -> None:
    graph = _graph()
    # a package's __init__ re-exports its modules; it is not a circle that the modules
    # import each other through it, so the check runs on modules only
    modules_only = {
        m: {t for t in targets if not (PACKAGE / Path(*t.split(".")[1:]) / "__init__.py").exists()}
        for m, targets in graph.items()
        if not (PACKAGE / Path(*m.split(".")[1:]) / "__init__.py").exists()
    }
    assert _cycles(modules_only) == []


def test_no_module_imports_another_modules_private_names() -> None:
    offences = [
        f"{_module_name(path)}:{line} imports {n} from {target}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for target, names, line in _imports(path)
        for n in names
        if n.startswith("_") and not n.startswith("__") and target != _module_name(path)
    ]
    assert offences == []


RECIPE_MODULES = sorted(_module_name(p) for p in (PACKAGE / "recipe").glob("*.py"))


@pytest.mark.parametrize("module", RECIPE_MODULES)
def test_the_recipe_layer_imports_nothing_above_it(module: str) -> None:
    """The recipe is the bottom of cli -> train/review -> loading/push -> builders -> recipe."""
    above = ("prefdelta.builders", "prefdelta.push", "prefdelta.train", "prefdelta.review")
    above += ("prefdelta.cli", "prefdelta.loading")
    assert not [t for t in _graph()[module] if t.startswith(above)]


def test_the_project_names_no_file_outside_its_repository() -> None:
    """No design note, shared folder or machine path from where it was written."""
    root = PACKAGE.parents[1]
    outside = ("/" + "work/", "../" + "shared", "DESIGN" + ".md")
    texts = [
        p
        for folder in ("src", "tests", "bench", "recipes", "scripts", "docs")
        for p in (root / folder).rglob("*")
        if p.is_file() and p.suffix in {".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".jinja2"}
    ] + [root / "README.md", root / "pyproject.toml", root / "Makefile"]
    found = [
        f"{p.relative_to(root)}: {needle}"
        for p in texts
        for needle in outside
        if needle in p.read_text(encoding="utf-8", errors="replace")
    ]
    assert found == []


MAX_LINES = 500


def test_no_module_is_over_500_lines() -> None:
    """Modules earn their size by being split where they grow, not by a docstring that
    says why they stay whole."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            long.append(f"{path.relative_to(PACKAGE)}: {lines} lines")
    assert long == []


def test_no_module_re_exports_a_name_it_imports() -> None:
    """A name is imported from the module that defines it: a plain module neither lists an
    imported name in ``__all__`` nor imports one ``as`` itself (packages' ``__init__`` may:
    that is their public face)."""
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prefdelta"):
                for alias in node.names:
                    imported[alias.asname or alias.name] = node.lineno
                    if alias.asname == alias.name:
                        offences.append(
                            f"{_module_name(path)}:{node.lineno} {alias.name} as itself"
                        )
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                for name in ast.literal_eval(node.value):
                    if name in imported:
                        offences.append(f"{_module_name(path)}: __all__ lists imported {name}")
    assert offences == []
