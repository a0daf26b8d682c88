"""The package's shape: imports point one way, signatures show everything.

These tests read the source with `ast` (imports) and `inspect` (signatures),
so a new module or class is covered without being listed here.
"""

import ast
import importlib
import inspect
import pathlib
import pkgutil

import keras
import pytest

import keras_efficient

ROOT = pathlib.Path(keras_efficient.__file__).parent
PACKAGE = "keras_efficient"


def _module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(node, module, is_package):
    """The absolute module an `ImportFrom` / `Import` names, per alias."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _imported_modules(node, module, is_package, modules):
    """The package modules an import statement names.

    `from pkg import name` imports the submodule `pkg.name` when there is
    one; `pkg` itself counts only when a plain name is taken from it.
    """
    resolved = _resolve(node, module, is_package)
    if isinstance(node, ast.Import):
        return [n for n in resolved if n in modules]
    base, named = resolved[0], resolved[1:]
    submodules = [n for n in named if n in modules]
    plain = len(submodules) < len(named)
    return submodules + ([base] if plain and base in modules else [])


def _package_imports(tree, module, is_package, modules, top_level):
    """(line, imported module) for each import of a package module."""
    found = []
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(node, scopes)
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if inside != top_level:
                    for name in _imported_modules(
                        child, module, is_package, modules
                    ):
                        if name.startswith(PACKAGE):
                            found.append((child.lineno, name))
            visit(child, inside)

    visit(tree, False)
    return found


def _import_graph():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"
        # Importing a submodule also runs its package's __init__; that is
        # not an arrow of this module's own, so only named modules count.
        graph[name] = {
            target
            for _, target in _package_imports(
                tree, name, is_package, modules, top_level=True
            )
            if target != name
        }
    return graph


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def connect(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return result


def test_no_import_cycle_inside_the_package():
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_resolves_relative_and_submodule_imports():
    graph = _import_graph()
    assert (
        "keras_efficient._validation" in graph["keras_efficient.layers.laurel"]
    )
    # The top-level package imports its subpackages.
    assert "keras_efficient.layers" in graph["keras_efficient"]


def test_no_function_level_import_of_a_package_module():
    modules = _modules()
    offenders = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        for line, target in _package_imports(
            tree,
            name,
            path.name == "__init__.py",
            modules,
            top_level=False,
        ):
            offenders.append(f"{path.relative_to(ROOT.parent)}:{line} {target}")
    assert not offenders, "imports inside functions:\n" + "\n".join(
        sorted(set(offenders))
    )


def test_the_function_level_scan_sees_an_import_in_a_function():
    source = "def f():\n    from keras_efficient import layers\n"
    found = _package_imports(
        ast.parse(source),
        "keras_efficient.x",
        False,
        {"keras_efficient", "keras_efficient.layers"},
        top_level=False,
    )
    assert found == [(2, "keras_efficient.layers")]


# -- Signatures name every config key. ------------------------------------

# Classes whose constructor needs arguments: the smallest valid call.
REQUIRED_ARGUMENTS = {
    "AltUp": lambda cls: cls(keras.layers.Dense(4)),
    "AltUpEmbedding": lambda cls: cls(input_dim=8, output_dim=4),
    "AltUpStack": lambda cls: cls([keras.layers.Dense(4)]),
    "CausalSelfAttention": lambda cls: cls(hidden_dim=8, num_heads=2),
    "ConstantSparsity": lambda cls: cls(0.5),
    "DistillationLossAdapter": lambda cls: cls(
        keras_efficient.losses.KnowledgeDistillationLoss()
    ),
    "IterativePruning": lambda cls: cls([0.5], steps_per_cycle=2),
    "LaurelBlock": lambda cls: cls(keras.layers.Dense(4)),
    "LaurelStack": lambda cls: cls([keras.layers.Dense(4)]),
    "LayerWrapper": lambda cls: cls(keras.layers.Dense(4)),
    "MagnitudePruning": lambda cls: cls(
        keras_efficient.pruning.ConstantSparsity(0.5)
    ),
    "MixtureOfExperts": lambda cls: cls(num_experts=2, hidden_dim=4),
    "PolynomialDecay": lambda cls: cls(0.0, 0.5, 0, 10),
    "PositionEmbedding": lambda cls: cls(sequence_length=4),
    "SequenceAltUp": lambda cls: cls(keras.layers.Dense(4)),
    "SparseLookupTable": lambda cls: cls(num_entries=8),
    "TransformerBlock": lambda cls: cls(hidden_dim=8, num_heads=2),
}


def _public_classes_with_config():
    seen = set()
    for info in pkgutil.walk_packages(keras_efficient.__path__, PACKAGE + "."):
        if any(p.startswith("_") for p in info.name.split(".")[1:]):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                name.startswith("_")
                or not inspect.isclass(obj)
                or not obj.__module__.startswith(PACKAGE)
                or any(p.startswith("_") for p in obj.__module__.split("."))
                or id(obj) in seen
                or "get_config" not in dir(obj)
                or inspect.isabstract(obj)
            ):
                continue
            seen.add(id(obj))
            yield obj


def _instance(cls):
    if cls.__name__ in REQUIRED_ARGUMENTS:
        return REQUIRED_ARGUMENTS[cls.__name__](cls)
    return cls()


# Keys Keras's own base classes put in every config.
BASE_CONFIG_KEYS = {
    "name",
    "trainable",
    "dtype",
    "reduction",
    "seed",
}


@pytest.mark.parametrize(
    "cls", list(_public_classes_with_config()), ids=lambda c: c.__name__
)
def test_signature_names_every_config_key(cls):
    try:
        instance = _instance(cls)
    except TypeError as error:
        pytest.fail(
            f"{cls.__name__}() needs arguments; add its smallest valid call "
            f"to REQUIRED_ARGUMENTS ({error})"
        )
    except ValueError:
        pytest.skip(f"{cls.__name__} has no default construction")
    config = instance.get_config()
    parameters = inspect.signature(cls.__init__).parameters
    named = {
        n
        for n, p in parameters.items()
        if p.kind
        not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    # Keys the Keras base class owns travel through **kwargs.
    base = set(BASE_CONFIG_KEYS)
    if isinstance(instance, keras.layers.Layer):
        base |= set(keras.layers.Layer().get_config())
    if isinstance(instance, keras.optimizers.Optimizer):
        base |= set(keras.optimizers.SGD().get_config())
    missing = sorted(set(config) - named - base)
    assert not missing, (
        f"{cls.__name__}.get_config() returns {missing}, which "
        f"inspect.signature({cls.__name__}) does not name"
    )
