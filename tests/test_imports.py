"""The project's import graph, read from the source (ast, nothing imported): no cycles, and
dependencies point one way, app -> tabs -> eval -> s2s (DESIGN.md); the README's module map
lists exactly the modules there are.

Every import counts, at the top of a file or inside a function (a lazy import is still a
dependency), except those under `if __name__ == "__main__":`: that block is a program's entry,
never run on import, so it can neither close a cycle nor make the library depend on anything.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("s2s", "eval", "tabs")
# Lower layers may not import higher ones: s2s is the library, eval scores it, the tabs and
# app.py are the UI, scripts/ are programs over all of it.
LAYERS = {"s2s": 0, "eval": 1, "tabs": 2, "app": 3, "scripts": 4}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: file} for app.py, scripts/*.py and every package's modules."""
    found = {"app": root / "app.py"}
    for path in sorted((root / "scripts").glob("*.py")):
        found[f"scripts.{path.stem}"] = path
    for package in PACKAGES:
        for path in sorted((root / package).glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return {name: path for name, path in found.items() if path.is_file()}


def _is_main_guard(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and any(isinstance(c, ast.Constant) and c.value == "__main__"
                                                   for c in test.comparators))


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """{project module imported by `name`: first line}, `if __name__ == "__main__":` blocks skipped."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    out: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        if target in modules and target != name:
            out.setdefault(target, line)

    def visit(node: ast.AST) -> None:
        if _is_main_guard(node):
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:  # `from s2s import patterns` imports the module s2s.patterns
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base, node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    modules = project_modules(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_in(group, graph) for group in groups]


def _cycle_in(group: list[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """A shortest cycle through the group's first module, for the message."""
    start = group[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    return paths[v] + [start]
                if w in group and w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return group


def layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def test_the_graph_sees_the_project():
    graph = import_graph()
    assert {"app", "s2s.pipeline", "s2s.codec", "eval.run"} <= set(graph)
    assert "s2s.codec" in graph["s2s.pipeline"]  # a top-level import
    assert "s2s.checkpoint" in graph["eval.run"]  # an import inside a function counts too


def test_no_import_cycles():
    graph = import_graph()
    cycles = find_cycles(graph)
    lines = [" -> ".join(f"{a} (line {graph[a][b]})" if b else a for a, b in zip(c, c[1:] + [None]))
             for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(lines)


def test_dependencies_point_one_way():
    graph = import_graph()
    wrong = [f"{a} imports {b} (line {line})" for a, targets in sorted(graph.items())
             for b, line in sorted(targets.items()) if layer(b) > layer(a)]
    assert not wrong, "app -> tabs -> eval -> s2s only:\n" + "\n".join(wrong)


def test_readme_module_map_matches_the_tree():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## Module map\n" in text, "README.md needs its '## Module map' section"
    section = text.split("\n## Module map\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^- `([^`]+)`", section, re.M))
    modules = {path.relative_to(ROOT).as_posix() for path in project_modules().values()} | {"tests/"}
    assert listed == modules, f"not in the map: {sorted(modules - listed)}; not in the tree: {sorted(listed - modules)}"


def test_a_cycle_and_an_upward_import_are_caught(tmp_path):
    (tmp_path / "s2s").mkdir()
    (tmp_path / "eval").mkdir()
    (tmp_path / "app.py").write_text("import eval.b\n")
    (tmp_path / "s2s" / "a.py").write_text("def f():\n    from s2s import c\n")
    (tmp_path / "s2s" / "c.py").write_text("from s2s.a import f\nimport eval.b\n")
    (tmp_path / "eval" / "b.py").write_text("if __name__ == '__main__':\n    import app\n")
    graph = import_graph(tmp_path)
    assert find_cycles(graph) == [["s2s.a", "s2s.c", "s2s.a"]]
    assert graph["s2s.c"] == {"s2s.a": 1, "eval.b": 2} and graph["eval.b"] == {}
