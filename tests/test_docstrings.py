"""Every example in every docstring of the package runs as written.

Keras-style examples (```python fences) and doctest examples (`>>>`) are
both collected from the module, class, function and method docstrings of
every module under `keras_efficient`. Fenced examples are executed; doctest
examples are run with `doctest` so their printed output is checked too, on
every backend (a backend's shape type is read as the tuple it holds).
"""

import doctest
import importlib
import inspect
import pkgutil
import re

import matplotlib
import pytest

import keras_efficient

matplotlib.use("Agg")  # the tests never open a window; examples may plot

FENCE = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _modules():
    for info in pkgutil.walk_packages(
        keras_efficient.__path__, prefix="keras_efficient."
    ):
        yield importlib.import_module(info.name)


def _docstrings(module):
    """`(qualified name, docstring)` of the module and what it defines."""
    yield module.__name__, inspect.getdoc(module) or ""
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield f"{module.__name__}.{name}", inspect.getdoc(obj) or ""
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if isinstance(member, property):
                    member = member.fget
                if inspect.isfunction(member) or isinstance(
                    member, (classmethod, staticmethod)
                ):
                    doc = inspect.getdoc(member) or ""
                    yield f"{module.__name__}.{name}.{attr}", doc


def _examples():
    seen = set()
    for module in _modules():
        for qualname, doc in _docstrings(module):
            for i, code in enumerate(FENCE.findall(doc)):
                key = (qualname, code)
                if key not in seen:
                    seen.add(key)
                    yield pytest.param(code, id=f"{qualname}[{i}]")


def _doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    for module in _modules():
        for test in finder.find(module):
            if test.examples and test.name.startswith(module.__name__):
                yield pytest.param(test, id=test.name)


EXAMPLES = list(_examples())
DOCTESTS = list(_doctests())


def test_examples_are_collected():
    # Guards against the collector silently finding nothing.
    assert len(EXAMPLES) + len(DOCTESTS) >= 20


@pytest.mark.parametrize("code", EXAMPLES)
def test_docstring_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may save files
    exec(compile(code, "<docstring example>", "exec"), {})


# A docstring prints a shape as a tuple, as JAX and NumPy do; TensorFlow
# prints `TensorShape([4, 10])` and torch `torch.Size([4, 10])`.
BACKEND_SHAPE = re.compile(r"(?:TensorShape|torch\.Size)\(\[([^\]]*)\]\)")


def _as_tuple(match):
    dims = [d.strip() for d in match.group(1).split(",") if d.strip()]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


class ShapeAsTupleChecker(doctest.OutputChecker):
    def check_output(self, want, got, optionflags):
        got = BACKEND_SHAPE.sub(_as_tuple, got)
        return super().check_output(want, got, optionflags)


@pytest.mark.parametrize("test", DOCTESTS)
def test_doctest_passes(test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(
        checker=ShapeAsTupleChecker(),
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    test.globs = dict(test.globs)
    result = runner.run(test, out=lambda s: print(s, end=""))
    assert result.failed == 0, f"{result.failed} doctest example(s) failed"
