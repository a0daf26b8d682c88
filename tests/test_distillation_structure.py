"""The shape of the distillation area (`distillation/`, `losses/`,
`callbacks/`, `selection.py`): no import loops, no package import inside a
function, modules of at most ~400 lines, and one home module per public
name, every other public path being a re-export in an `__init__.py`.

Read from the source (`ast`), so a loop that Python's import order happens
to tolerate, or one dodged by an import inside a function, still fails.
"""

import ast
import glob
import os

import keras_efficient
from keras_efficient import callbacks
from keras_efficient import distillation
from keras_efficient import losses
from keras_efficient.distillation import active

PACKAGE = os.path.dirname(keras_efficient.__file__)
ROOT = os.path.dirname(PACKAGE)
AREA = sorted(
    glob.glob(
        os.path.join(PACKAGE, "distillation", "**", "*.py"), recursive=True
    )
    + [
        os.path.join(PACKAGE, "losses", "__init__.py"),
        os.path.join(PACKAGE, "callbacks", "__init__.py"),
        os.path.join(PACKAGE, "selection.py"),
    ]
)
MAX_LINES = 400


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
    if rel[-1] == "__init__":
        rel = rel[:-1]
    return ".".join(rel)


def _path_of(module):
    """The source file of a `keras_efficient` module, or None."""
    base = os.path.join(ROOT, *module.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.exists(path):
            return path
    return None


def _tree(path):
    with open(path) as f:
        return ast.parse(f.read(), path)


def _imported_modules(tree):
    """`keras_efficient` modules a file imports: `from a.b import c` is an
    edge to `a.b.c` when that is a module, else to `a.b`."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if _path_of(sub) else node.module)
    return {m for m in out if m.split(".")[0] == "keras_efficient"}


def _graph():
    graph, todo = {}, [_module_name(p) for p in AREA]
    while todo:
        module = todo.pop()
        if module in graph:
            continue
        path = _path_of(module)
        graph[module] = _imported_modules(_tree(path)) if path else set()
        todo.extend(graph[module])
    return graph


def _cycle(graph, modules):
    """An import loop through one of `modules`, as a list, or None.

    Loops elsewhere in the package (outside this area) are left to their
    own areas' checks.
    """
    for start in sorted(modules):
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop(0)
            for dep in sorted(graph.get(path[-1], ())):
                if dep == start:
                    return path + [start]
                if dep not in seen:
                    seen.add(dep)
                    paths.append(path + [dep])
    return None


def test_no_import_loop():
    loop = _cycle(_graph(), [_module_name(p) for p in AREA])
    assert loop is None, " -> ".join(loop)


def test_the_loop_check_can_fail():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph, ["a"]) == ["a", "b", "c", "a"]
    assert _cycle(graph, ["d"]) is None
    assert _cycle({"a": {"b"}, "b": set()}, ["a", "b"]) is None


def test_no_package_import_inside_a_function():
    found = []
    for path in AREA:
        for fn in ast.walk(_tree(path)):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or "."]
                if any(n.startswith(("keras_efficient", ".")) for n in names):
                    rel = os.path.relpath(path, ROOT)
                    found.append(f"{rel}:{node.lineno} in {fn.name}")
    assert not found, found


def test_modules_stay_small():
    long = {}
    for path in AREA:
        with open(path) as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            long[os.path.relpath(path, ROOT)] = n
    assert not long, long


def test_one_home_per_public_name():
    """Every public name is defined in a public, non-package module of the
    area; a non-`__init__` module re-exports nothing (no `__all__`)."""
    faces = [distillation, active, losses, callbacks]
    for face in faces:
        for name in face.__all__:
            obj = getattr(face, name)
            home = getattr(obj, "__module__", None)
            if isinstance(obj, dict):  # STRATEGIES: defined with the base
                continue
            if not home.startswith("keras_efficient.distillation"):
                assert face is callbacks, (face.__name__, name, home)
                continue
            path = _path_of(home)
            assert not path.endswith("__init__.py"), (name, home)
            assert not any(p.startswith("_") for p in home.split(".")), (
                name,
                home,
            )
    for path in AREA:
        if path.endswith("__init__.py") or path.endswith("selection.py"):
            continue
        tree = _tree(path)
        assigned = {
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        assert "__all__" not in assigned, path
