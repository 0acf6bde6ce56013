"""The package's import structure: no module imports, directly or through others, a module that
imports it back. Every import counts, at module level or inside a function (a lazy import only
hides a circle until the first call), relative imports resolved, and so does
``importlib.import_module("trcgl...")``: a lower layer never reaches up to a higher one."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "trcgl"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = (root.name,) + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, name: str) -> set[str]:
    """The absolute names every import in the file at ``path`` (module ``name``) asks for."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            out.add(origin)
            out.update(f"{origin}.{alias.name}" for alias in node.names)    # `from . import stages`
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.add(node.args[0].value)
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports (a name that is not a module, e.g. a function
    imported from one, stands for the module that defines it)."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        targets = set()
        for wanted in imported_names(path, name):
            while wanted and wanted not in files:       # `from .graph import Request` -> trcgl.graph
                wanted = wanted.rpartition(".")[0]
            if wanted and wanted != name:
                targets.add(wanted)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import circle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle(graph, component) for component in components]


def _circle(graph, component: set[str]) -> list[str]:
    """A shortest circle through the component's first module (breadth-first, inside it)."""
    start = min(component)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                todo.append(w)
    raise AssertionError(f"no circle through {start}")   # cannot happen in a strongly connected component


def test_the_package_has_no_import_circle():
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_check_sees_lazy_relative_and_importlib_imports(tmp_path):
    """The graph the test above checks holds function-level, relative and importlib imports: a
    planted circle of each kind is found (and printed as a circle)."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .low import X\n")
    (pkg / "sub" / "low.py").write_text("def f():\n    from ..high import Y\n")
    (pkg / "high.py").write_text("from .sub import low\n")
    (pkg / "engine.py").write_text("import importlib\ndef load():\n    importlib.import_module('pkg.decl')\n")
    (pkg / "decl.py").write_text("from pkg.engine import load\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub.low"] == {"pkg.high"} and graph["pkg.high"] == {"pkg.sub", "pkg.sub.low"}
    assert graph["pkg.sub"] == {"pkg.sub.low"}
    found = sorted(cycles(graph))
    assert found == [["pkg.decl", "pkg.engine", "pkg.decl"], ["pkg.high", "pkg.sub.low", "pkg.high"]]
