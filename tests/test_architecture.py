"""The package's import structure (issue 18): no import cycles between ltxengine's modules, and no
module importing another module's private (``_name``) names.

Imports are read with ast, at module level and inside functions alike: a lazy import hides a cycle
from the interpreter, not from the design. ``kernels/`` is part of the package (``ltxengine.kernels``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (importing module, source module, name): private imports let through. Empty: every shared name
# has a public home. A new entry needs a comment saying why the name cannot be public and where
# it will go.
ALLOWED_PRIVATE: set[tuple[str, str, str]] = set()


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for ltxengine/ and kernels/ (installed as ltxengine.kernels)."""
    out = {}
    for base, prefix in ((root / "ltxengine", "ltxengine"), (root / "kernels", "ltxengine.kernels")):
        for f in sorted(base.rglob("*.py")):
            parts = [prefix, *f.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def _top_level_names(path: Path) -> set[str]:
    """Names a package's __init__ binds: ``from pkg import x`` of any other x is a submodule."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _imports(module: str, path: Path):
    """(target module, imported name or None, line) of every import statement, anywhere in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = node.module
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                yield target, alias.name, node.lineno


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    """-> (module -> ltxengine modules it imports, ["module:line imports source._name"])."""
    modules = package_modules(root)
    bound = {m: _top_level_names(p) for m, p in modules.items() if p.name == "__init__.py"}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private = []
    for module, path in modules.items():
        for target, name, line in _imports(module, path):
            if name is not None and f"{target}.{name}" in modules:
                graph[module].add(f"{target}.{name}")  # a submodule
                continue
            if name is not None and target in bound and name not in bound[target]:
                continue  # a submodule that is no .py file: the compiled extension ltxengine._C
            if target not in modules:
                continue  # outside the package
            if target != module:
                graph[module].add(target)
            private_name = name is not None and name.startswith("_") and not name.startswith("__")
            if private_name and target != module and (module, target, name) not in ALLOWED_PRIVATE:
                private.append(f"{module}:{line} imports {target}.{name}")
    return graph, private


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) per strongly connected component of more than one module."""
    cycles, done = [], set()
    for start in sorted(graph):
        if start in done:
            continue
        path = _path_back(graph, start)
        if path:
            cycles.append(path)
            done |= set(path)
    return cycles


def _path_back(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """The shortest import path from ``start`` back to itself, or None (breadth first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for m in frontier:
            for d in sorted(graph[m]):
                if d == start:
                    path = [m]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if m != start else [start, start]
                if d not in parents:
                    parents[d] = m
                    nxt.append(d)
        frontier = nxt
    return None


def test_the_package_has_no_import_cycles():
    graph, _ = import_graph()
    assert len(graph) > 50 and "ltxengine.ltx2.engine" in graph["ltxengine"]  # the walk sees the package
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_another_modules_private_names():
    _, private = import_graph()
    assert not private, "private names imported across modules:\n" + "\n".join(private)


FAMILIES = ("ltxengine.ltx_video", "ltxengine.ltx2")
# the package's front and the commands above both families, which may use either
APPLICATION = ("ltxengine", "ltxengine.cli", "ltxengine.cli_generate", "ltxengine.demo", "ltxengine.info")


def test_the_families_are_peers_the_core_imports_neither():
    """engine.py (the core) and the shared floors import no family package, and neither family
    imports the other (a family reaches the core and the shared floors only)."""
    graph, _ = import_graph()

    def family(module: str) -> str | None:
        return next((f for f in FAMILIES if module == f or module.startswith(f + ".")), None)

    crossing = [f"{m} imports {t}" for m, targets in graph.items() for t in targets
                if family(t) is not None and family(m) != family(t)
                and m not in APPLICATION]
    assert crossing == [], "\n".join(crossing)
    assert {"ltxengine.ltx_video.engine", "ltxengine.ltx2.engine"} <= graph["ltxengine"]  # the walk sees both


def test_the_walk_sees_lazy_imports_and_reports_cycles_and_private_names(tmp_path):
    """The checks on a toy package: a function-level import closing a cycle, a private import."""
    pkg = tmp_path / "ltxengine"
    (pkg / "sub").mkdir(parents=True)
    (tmp_path / "kernels").mkdir()
    (pkg / "__init__.py").write_text("from .a import A\n")
    (pkg / "a.py").write_text("from .sub.b import B\nA = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("B = 2\n\ndef f():\n    from ..a import _hidden\n    return _hidden\n")
    graph, private = import_graph(tmp_path)
    assert find_cycles(graph) == [["ltxengine.a", "ltxengine.sub.b", "ltxengine.a"]]
    assert private == ["ltxengine.sub.b:4 imports ltxengine.a._hidden"]


def imports_of_test_modules(root: Path = ROOT) -> list[str]:
    """["tests/x.py:line imports tests.y.test_z"] for every import, anywhere in a file under tests/, of a
    test module (a file named test_*.py): shared fixtures live in non-test modules beside the tests."""
    files = {".".join(f.relative_to(root).with_suffix("").parts): f for f in sorted((root / "tests").rglob("*.py"))}
    modules = {(m[: -len(".__init__")] if m.endswith(".__init__") else m): f for m, f in files.items()}
    test_modules = {m for m, f in modules.items() if f.name.startswith("test_")}
    found = []
    for module, path in modules.items():
        for target, name, line in _imports(module, path):
            imported = f"{target}.{name}" if f"{target}.{name}" in test_modules else target
            if imported in test_modules and imported != module:
                found.append(f"{path.relative_to(root).as_posix()}:{line} imports {imported}")
    return list(dict.fromkeys(found))  # one line per statement, not per imported name


def test_no_test_module_imports_another_test_module(tmp_path):
    """Fixtures shared by several test files live in fixture modules (tests/models/*_fixtures.py,
    tests/loading/formats.py, ...), never in a test module another file imports: importing one runs
    its module-level set-up and skips, and hides which file owns what. Checked on a toy tree first."""
    (tmp_path / "tests" / "models").mkdir(parents=True)
    for name in ("__init__.py", "models/__init__.py", "models/fixtures.py", "models/test_a.py"):
        (tmp_path / "tests" / name).write_text("X = 1\n")
    (tmp_path / "tests" / "models" / "test_b.py").write_text(
        "from tests.models.test_a import X\nfrom tests.models import test_a\nfrom .test_a import X\n"
        "from . import fixtures, test_a\nimport tests.models.test_a\nfrom .fixtures import X\n\n"
        "def f():\n    from ..models.test_a import X\n")
    assert imports_of_test_modules(tmp_path) == [f"tests/models/test_b.py:{n} imports tests.models.test_a"
                                                 for n in (1, 2, 3, 4, 5, 9)]
    found = imports_of_test_modules()
    assert not found, "test modules imported by other modules (move what they share to a fixture module):\n" + \
        "\n".join(found)
