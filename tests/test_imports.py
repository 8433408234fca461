"""The shape of ``src/nbr_contrast``: no import cycle, no oversized module.

Import graph: every ``import`` and ``from ... import`` of an ``nbr_contrast`` module is an
edge, wherever it stands (module level, inside a function, under ``if TYPE_CHECKING``), so a
circle hidden behind a function-level import fails too. Relative imports are resolved
against the importing module's package (a package's ``__init__`` is its own package).
``from pkg import name`` points at the submodule ``pkg.name`` when there is one, else at
``pkg`` itself (its ``__init__``); ``import a.b.c`` points at the deepest module of the path
that exists. Importing a submodule is not counted as importing its parent packages: Python
runs them first, but a package being half-initialised while its submodules load is normal.

Module size: a module holds at most :data:`MAX_LINES` lines unless its docstring says why
it needs more, on a line of its own starting with ``Size:`` followed by the reason, e.g.
``Size: one dataclass per config group; splitting them would scatter the schema.``
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = "nbr_contrast"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE
MAX_LINES = 400
SIZE_MARKER = "Size:"


def module_name(path: Path, root: Path = SRC, package: str = PACKAGE) -> str:
    """Dotted name of the module in ``path`` (a package's ``__init__`` is the package)."""
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    """Every module below ``root``, by dotted name."""
    return {module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}


def _resolve(target: str, known: Iterable[str]) -> str | None:
    """The deepest known module that ``target`` (a dotted path) names, if any."""
    known = set(known)
    parts = target.split(".")
    while parts:
        name = ".".join(parts)
        if name in known:
            return name
        parts.pop()
    return None


def imports_of(
    name: str, path: Path, known: Mapping[str, Path], package: str = PACKAGE
) -> set[str]:
    """The known modules that module ``name`` (source in ``path``) imports anywhere."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here[: len(here) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target == package or target.startswith(f"{package}."):
                resolved = _resolve(target, known)
                if resolved is not None and resolved != name:
                    found.add(resolved)
    return found


def import_graph(root: Path = SRC, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    known = modules(root, package)
    return {name: imports_of(name, path, known, package) for name, path in known.items()}


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or ``None`` if it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle is not None:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle is not None:
                return cycle
    return None


def docstring_states_size_reason(path: Path) -> bool:
    """Whether the module docstring has a ``Size: <reason>`` line."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return any(
        line.strip().startswith(SIZE_MARKER) and line.strip()[len(SIZE_MARKER) :].strip()
        for line in doc.splitlines()
    )


# ---------------------------------------------------------------------------------- checks


def test_cycle_finder_reports_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]


def test_cycle_finder_accepts_a_diamond() -> None:
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None


def test_graph_resolves_relative_function_level_and_package_imports(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("from pkg.sub import helper\n")
    (root / "sub" / "__init__.py").write_text("from .helper import f\nVALUE = 1\n")
    (root / "sub" / "helper.py").write_text("def f():\n    from .. import top\n")
    (root / "top.py").write_text("from pkg.sub import VALUE\nimport pkg.sub.helper\n")
    graph = import_graph(root, "pkg")
    assert graph == {
        "pkg": {"pkg.sub.helper"},
        "pkg.sub": {"pkg.sub.helper"},
        "pkg.sub.helper": {"pkg.top"},
        "pkg.top": {"pkg.sub", "pkg.sub.helper"},
    }
    assert find_cycle(graph) == ["pkg.sub.helper", "pkg.top", "pkg.sub", "pkg.sub.helper"]


def test_no_import_cycle_in_src() -> None:
    graph = import_graph()
    assert len(graph) > 20, "found too few modules; is SRC right?"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_size_marker_needs_a_reason(tmp_path: Path) -> None:
    stated = tmp_path / "stated.py"
    stated.write_text('"""Big.\n\nSize: one table per format; they share nothing.\n"""\n')
    empty = tmp_path / "empty.py"
    empty.write_text('"""Big.\n\nSize:\n"""\n')
    assert docstring_states_size_reason(stated)
    assert not docstring_states_size_reason(empty)


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_size(name: str) -> None:
    path = modules()[name]
    lines = len(path.read_text().splitlines())
    if lines > MAX_LINES:
        assert docstring_states_size_reason(path), (
            f"{path.relative_to(SRC.parents[1])} has {lines} lines (> {MAX_LINES}): split it, "
            f"or state why not on a '{SIZE_MARKER} <reason>' line of its module docstring."
        )


LIBRARY = ("losses", "neighbours", "data", "models", "methods", "monitors", "utils")
"""The library's packages: importable without Hydra, and never importing the application."""


def test_library_never_imports_the_application() -> None:
    graph = import_graph()
    upward = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name.split(".")[1:2] and name.split(".")[1] in LIBRARY
        for target in targets
        if target.startswith(f"{PACKAGE}.app")
    )
    assert upward == []
    assert any(name.startswith(f"{PACKAGE}.app.") for name in graph)


def test_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    root = tmp_path / "nbr_contrast"
    (root / "methods").mkdir(parents=True)
    (root / "app").mkdir()
    (root / "app" / "build.py").write_text("X = 1\n")
    (root / "methods" / "m.py").write_text("def f():\n    from nbr_contrast.app import build\n")
    graph = import_graph(root)
    assert graph["nbr_contrast.methods.m"] == {"nbr_contrast.app.build"}
