"""The shape of vtoonify_core: imports go one way, modules stay small and say what they are for.

The import graph is read from the source (ast), counting imports inside functions too, so a cycle
hidden behind a function-local import fails here as well as one at module level.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "vtoonify_core"
PACKAGE = "vtoonify_core"
MAX_LINES = 700
MAX_DOC_LINES = 12
#: Subpackages that use the core and that nothing else in the core may import.
ON_TOP = ("batch", "testing")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def core_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def _resolve(mod: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a relative import ``from <level dots><target> import ...`` in ``mod``."""
    if level == 0:
        return target or ""
    base = mod.split(".") if is_package else mod.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, list[str]]]:
    """``(imported module, line, names)`` for every import of a core module in ``path`` (anywhere in it)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    out.append((alias.name, node.lineno, []))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, is_package, node.level, node.module)
            if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
                continue
            names = [a.name for a in node.names]
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            others = [n for n in names if f"{target}.{n}" not in modules]
            if others:  # names defined in ``target`` itself (for a package: in its __init__)
                out.append((target, node.lineno, others))
            out.extend((s, node.lineno, []) for s in subs)
    return out


def import_graph() -> dict[str, set[str]]:
    """Edges ``a -> b``: running ``a`` imports ``b``. Importing ``p.q.m`` from outside ``p.q`` also runs
    ``p.q``'s ``__init__``, so that edge is added too (the root package's ``__init__`` excepted: it is
    the public facade and is checked separately)."""
    modules = core_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for target, _, _ in imports_of(mod, path, modules):
            chain = target.split(".")
            for i in range(2, len(chain) + 1):
                parent = ".".join(chain[:i])
                inside = mod == parent or mod.startswith(parent + ".")
                if parent in modules and parent != mod and (parent == target or not inside):
                    graph[mod].add(parent)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function():
    """The checker itself: a function-local import that closes a loop is reported."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert cycles({"a": {"a"}}) == [["a"]]


def test_imports_are_read_inside_functions_too(tmp_path):
    src = "def f():\n    from .pipeline.clip import plan_clip\n"
    path = tmp_path / "x.py"
    path.write_text(src)
    modules = core_modules()
    found = imports_of("vtoonify_core.video.x", path, modules)
    assert ("vtoonify_core.video.pipeline.clip", 2, ["plan_clip"]) in found  # one dot: inside video/


def defined_names(path: Path) -> set[str]:
    """Top-level names of a module: definitions, assignments and imports."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def test_every_core_import_resolves():
    """An import that names a moved or missing module fails here, not at run time in a rarely used
    branch (imports inside functions run only when the function does)."""
    modules = core_modules()
    bad = []
    for mod, path in modules.items():
        for target, line, names in imports_of(mod, path, modules):
            where = f"{path.relative_to(CORE.parent)}:{line}"
            if target not in modules:
                bad.append(f"{where}: no module {target}")
            elif names:
                missing = set(names) - defined_names(modules[target]) - {"*"}
                if missing:
                    bad.append(f"{where}: {target} has no {sorted(missing)}")
    assert bad == []


def test_no_import_cycle_in_the_core():
    graph = import_graph()
    assert len(graph) > 40  # the walk found the package
    assert "vtoonify_core.pipeline.clip" in graph["vtoonify_core.video.jobs"]
    assert cycles(graph) == []


def test_no_submodule_imports_the_package_facade():
    """``from . import load_vtoonify`` in a submodule makes the package's ``__init__`` a hub; only
    submodules may be imported from a package, and the root package is never imported from inside."""
    modules = core_modules()
    bad = []
    for mod, path in modules.items():
        for target, line, names in imports_of(mod, path, modules):
            if target == PACKAGE and mod != PACKAGE:
                bad.append(f"{path.relative_to(CORE.parent)}:{line} imports the root package")
            elif names and target in modules and modules[target].name == "__init__.py" and \
                    (mod == target or mod.startswith(target + ".")):
                bad.append(f"{path.relative_to(CORE.parent)}:{line} imports {names} from its own package {target}")
    assert bad == []


def test_batch_and_testing_sit_on_top():
    graph = import_graph()
    for mod, deps in graph.items():
        if mod == PACKAGE:
            continue
        for top in ON_TOP:
            sub = f"{PACKAGE}.{top}"
            if mod == sub or mod.startswith(sub + "."):
                continue
            assert not any(d == sub or d.startswith(sub + ".") for d in deps), f"{mod} imports {top}"
    root_deps = graph[PACKAGE]
    assert not any(d.startswith(f"{PACKAGE}.{top}") for d in root_deps for top in ON_TOP)


@pytest.mark.parametrize("name", sorted(core_modules()))
def test_module_is_small_and_says_what_it_is_for(name):
    path = core_modules()[name]
    text = path.read_text()
    assert text.count("\n") <= MAX_LINES, f"{path.name}: {text.count(chr(10))} lines (limit {MAX_LINES})"
    doc = ast.get_docstring(ast.parse(text), clean=False)
    assert doc and doc.strip(), f"{name} has no docstring"
    assert doc.count("\n") + 1 <= MAX_DOC_LINES, f"{name}: a {doc.count(chr(10)) + 1}-line docstring; move notes to docs/"


def test_no_module_shadows_the_standard_library():
    import sys

    names = {p.stem for p in CORE.rglob("*.py")} | {p.name for p in CORE.iterdir() if p.is_dir()}
    allowed = {"types"}  # only ever imported relatively (``from .types import``); never top-level
    assert (names & set(sys.stdlib_module_names)) - allowed == set()


def test_each_error_derives_from_the_one_base():
    import inspect

    from vtoonify_core import errors

    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) >= 8
    assert all(issubclass(c, errors.VToonifyError) for c in classes)
    others = []
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error") and path.name != "errors.py":
                others.append(f"{path.name}:{node.name}")
    assert others == []
