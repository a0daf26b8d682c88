"""The README's usage examples run as written on the current backend."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def _python_blocks():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_has_usage_examples():
    # One per capability: LAuReL, AltUp, lookup/MoE, losses, active
    # selection, pruning.
    assert len(_python_blocks()) >= 6


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_example_runs(index, capsys):
    code = _python_blocks()[index]
    exec(compile(code, f"README.md[python block {index}]", "exec"), {})
