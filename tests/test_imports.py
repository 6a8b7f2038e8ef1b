"""The project's import graph, read from the source (ast, nothing imported), at every folder depth:
no cycles, and dependencies point one way (DESIGN.md): app -> tabs -> eval -> s2s, and inside s2s
from the later stages of the data flow to the earlier ones, one rank per subpackage. The README's
module map lists exactly the modules there are.

Every import counts for the ranks, at the top of a file, inside a function (a lazy import is
still a dependency) or under `if __name__ == "__main__":` (a command's entry is part of its
package: the library's own commands may not reach up into eval or the UI). The cycle check leaves
out the `__main__` blocks: a program's entry never runs on import, so it cannot close a cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("s2s", "eval", "tabs")
# Lower ranks may not import higher ones. Inside s2s, by stage of the data flow: files in (audio,
# manifests, packaged weights), codecs, the model and its front-ends, speech-to-text scoring, the
# turn and the live server, data building, training; then s2s's front door and its old command
# names; eval scores it; `python -m s2s.finetune` is a command over training and eval (it keeps that
# name whatever the layout, issue 21); the tabs and app.py are the UI; scripts/ are programs over all of it.
RANKS = {"s2s.io": 0, "s2s.codecs": 1, "s2s.models": 2, "s2s.asr": 3, "s2s.serve": 4, "s2s.data": 5,
         "s2s.training": 6, "s2s": 7, "eval": 8, "s2s.finetune": 9, "tabs": 10, "app": 11, "scripts": 12}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: file} for app.py, scripts/*.py and every package's modules, at any depth."""
    found = {"app": root / "app.py"}
    for path in sorted((root / "scripts").glob("*.py")):
        found[f"scripts.{path.stem}"] = path
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return {name: path for name, path in found.items() if path.is_file()}


def _is_main_guard(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and any(isinstance(c, ast.Constant) and c.value == "__main__"
                                                   for c in test.comparators))


def imported_modules(name: str, path: Path, modules: dict[str, Path], entry: bool = True) -> dict[str, int]:
    """{project module imported by `name`: first line}; entry=False leaves out `__main__` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    out: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        if target in modules and target != name:
            out.setdefault(target, line)

    def visit(node: ast.AST) -> None:
        if not entry and _is_main_guard(node):
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:  # `from s2s.models import patterns` imports the module s2s.models.patterns
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base, node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def import_graph(root: Path = ROOT, entry: bool = True) -> dict[str, dict[str, int]]:
    modules = project_modules(root)
    return {name: imported_modules(name, path, modules, entry) for name, path in modules.items()}


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


def group(module: str) -> str:
    """The RANKS key a module belongs to: its longest dotted prefix there (s2s.serve.vad -> s2s.serve)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in RANKS:
            return ".".join(parts[:n])
    raise KeyError(module)


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every edge into another group of the same or a higher rank, named with its line."""
    return [f"{a} imports {b} (line {line}): rank {RANKS[group(a)]} ({group(a)}) may only import lower ranks, "
            f"{group(b)} is {RANKS[group(b)]}"
            for a, targets in sorted(graph.items()) for b, line in sorted(targets.items())
            if group(a) != group(b) and RANKS[group(b)] >= RANKS[group(a)]]


def test_the_graph_sees_the_project():
    graph = import_graph()
    assert {"app", "s2s.serve.pipeline", "s2s.codecs.codec", "eval.run", "s2s.io"} <= set(graph)
    assert "s2s.codecs.codec" in graph["s2s.serve.pipeline"]  # a top-level import
    assert "s2s.models.checkpoint" in graph["eval.run"]  # an import inside a function counts too
    assert "s2s.codecs.world_vq_tools" in graph["s2s.codecs.world_vq"]  # and one under __main__


def test_every_subpackage_has_a_rank():
    folders = {".".join(p.relative_to(ROOT).parts[:-1]) for package in PACKAGES
               for p in (ROOT / package).rglob("__init__.py")}
    assert folders <= set(RANKS), f"give these folders a rank in RANKS: {sorted(folders - set(RANKS))}"


def test_no_import_cycles():
    graph = import_graph(entry=False)
    cycles = find_cycles(graph)
    lines = [" -> ".join(f"{a} (line {graph[a][b]})" if b else a for a, b in zip(c, c[1:] + [None]))
             for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(lines)


def test_dependencies_point_one_way():
    wrong = upward_imports(import_graph())
    assert not wrong, "dependencies point down the data flow only:\n" + "\n".join(wrong)


def test_the_old_command_names_only_forward():
    """s2s/*.py besides the front door are the old names of moved commands: nothing imports them."""
    graph = import_graph()
    forwarders = {m for m in graph if group(m) == "s2s" and m != "s2s"}
    users = [f"{a} imports {b}" for a, targets in graph.items() for b in targets if b in forwarders]
    assert not users, "import the new module path:\n" + "\n".join(users)
    for name in forwarders:
        assert set(graph[name]) <= {m for m in graph if group(m) != "s2s"} and len(graph[name]) == 1, name


def test_readme_module_map_matches_the_tree():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## Module map\n" in text, "README.md needs its '## Module map' section"
    section = text.split("\n## Module map\n", 1)[1].split("\n## ", 1)[0]
    listed = {name for line in re.findall(r"^- (.+?) — ", section, re.M) for name in re.findall(r"`([^`]+)`", line)}
    modules = {path.relative_to(ROOT).as_posix() for path in project_modules().values()} | {"tests/"}
    assert listed == modules, f"not in the map: {sorted(modules - listed)}; not in the tree: {sorted(listed - modules)}"


def test_a_cycle_and_an_upward_import_are_caught(tmp_path):
    for folder in ("s2s/io", "s2s/serve", "eval"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "app.py").write_text("import eval.b\n")
    (tmp_path / "s2s" / "serve" / "a.py").write_text("def f():\n    from s2s.serve import c\n")
    (tmp_path / "s2s" / "serve" / "c.py").write_text("from s2s.serve.a import f\nimport s2s.io\n")
    (tmp_path / "s2s" / "io" / "d.py").write_text("if __name__ == '__main__':\n    from s2s.serve.a import f\n")
    (tmp_path / "eval" / "b.py").write_text("import s2s.io.d\n")
    graph = import_graph(tmp_path)
    assert find_cycles(import_graph(tmp_path, entry=False)) == [["s2s.serve.a", "s2s.serve.c", "s2s.serve.a"]]
    assert graph["s2s.serve.c"] == {"s2s.serve.a": 1, "s2s.io": 2} and graph["s2s.io.d"] == {"s2s.serve.a": 2}
    assert upward_imports(graph) == [
        "s2s.io.d imports s2s.serve.a (line 2): rank 0 (s2s.io) may only import lower ranks, s2s.serve is 4"]


def test_old_command_names_still_run():
    """`python -m s2s.train` and the other old names run the moved command; `import s2s.pipeline`
    is the moved module itself (one module object, not a copy)."""
    import importlib
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "s2s.train", "--help"], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert "--preset" in out and "--frontend" in out
    assert importlib.import_module("s2s.pipeline") is importlib.import_module("s2s.serve.pipeline")
