"""Every tutorial in `examples/` runs end to end in `--quick` mode on the
current backend.

The examples run in this process (through `runpy`, as `python example.py
--quick` would) rather than in a subprocess: a fresh interpreter would pay
the backend's import again for each of them, which on TensorFlow is most of
a quick run. `conftest.py` resets Keras's global state after each one.
"""

import glob
import os
import runpy
import sys

import matplotlib
import pytest

EXAMPLES = sorted(
    glob.glob(os.path.join(os.path.dirname(__file__), "..", "examples", "*.py"))
)


def test_every_tutorial_is_collected():
    names = {os.path.basename(p) for p in EXAMPLES}
    assert {"quickstart.py", "prune_to_speed.py"} <= names
    assert len(names) >= 9


@pytest.mark.parametrize(
    "path", EXAMPLES, ids=[os.path.basename(p)[:-3] for p in EXAMPLES]
)
def test_example_runs_quick(path, monkeypatch, capsys):
    matplotlib.use("Agg")
    monkeypatch.setattr(sys, "argv", [path, "--quick"])
    monkeypatch.syspath_prepend(os.path.dirname(path))
    runpy.run_path(path, run_name="__main__")
    out = capsys.readouterr().out
    # Every tutorial ends with a plain summary of what it measured.
    assert out.strip(), f"{os.path.basename(path)} printed nothing"
    # A --quick summary says its numbers mean nothing.
    tail = "\n".join(out.strip().splitlines()[-3:])
    assert "smoke run" in tail, f"{os.path.basename(path)}: no smoke-run label"
    if os.path.basename(path) == "prune_to_speed.py":
        # Output to a file (not a terminal): no progress-bar redraws.
        assert "\r" not in out and "\x1b" not in out
        lines = out.splitlines()
        params = next(line for line in lines if line.startswith("parameters"))
        assert ".00" not in params, params  # counts print as integers
        assert "0 epochs" not in out
