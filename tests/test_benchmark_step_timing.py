"""The benchmarks' shared step timing: the compile counter and the
interleaved CPU-time loop, on a tiny model (no timing is asserted)."""

import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import step_timing  # noqa: E402

JIT = keras.backend.backend() != "torch"


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse", jit_compile=JIT)
    return model


def test_compile_counter_counts_a_rebuilt_train_function():
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    models = {"a": _model(), "b": _model()}
    for model in models.values():
        model.fit(x, y, batch_size=2, verbose=0)
    with step_timing.CompileCounter(models) as counted:
        models["a"].fit(x, y, batch_size=2, verbose=0)
    assert counted.rebuilds == 0 and counted.train_step == 0
    with step_timing.CompileCounter(models) as counted:
        models["b"].compile(optimizer="sgd", loss="mse", jit_compile=JIT)
        models["b"].fit(x, y, batch_size=2, verbose=0)
        _model().fit(x, y, batch_size=2, verbose=0)  # a first compile
    assert counted.rebuilds == 1
    if keras.backend.backend() == "jax":
        assert counted.train_step >= 1 and counted.all >= counted.train_step


def test_interleaved_cpu_times_ratios_against_the_baseline():
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    models = {"unchecked": _model(), "checked": _model()}
    times = step_timing.interleaved_cpu_times(
        models, x, y, batch=2, steps=2, repeats=3, baseline="unchecked"
    )
    assert times["unchecked"]["cpu_ratios"] == [1.0, 1.0, 1.0]
    assert times["unchecked"]["wall_ratios"] == [1.0, 1.0, 1.0]
    checked = times["checked"]
    assert len(checked["cpu"]) == len(checked["wall"]) == 3
    assert checked["cpu_ratios"] == [
        a / b for a, b in zip(checked["cpu"], times["unchecked"]["cpu"])
    ]


class _RecordingModel:
    """Stands in for a compiled model: `fit` records its name."""

    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def fit(self, x, y, **kwargs):
        self.calls.append(self.name)


def test_compare_step_times_alternates_the_order_of_rounds():
    calls = []
    models = {n: _RecordingModel(n, calls) for n in ("a", "b", "c")}
    x = y = np.zeros((8, 1), "float32")
    res = step_timing.compare_step_times(
        models, x, y, batch_size=2, steps=4, repeats=3, baseline="a"
    )
    # Two warm-up epochs each, then rounds a b c / c b a / a b c.
    assert calls[6:] == list("abccbaabc")
    assert res["a"]["ratios"] == [1.0, 1.0, 1.0]
    assert len(res["c"]["step_seconds"]) == 3
    assert len(res["c"]["cpu_step_seconds"]) == len(res["c"]["cpu_ratios"]) == 3


class _SpinningModel:
    """`fit` burns `seconds` of CPU time in this thread."""

    def __init__(self, seconds):
        self.seconds = seconds

    def fit(self, x, y, **kwargs):
        import time

        end = time.process_time() + self.seconds
        while time.process_time() < end:
            pass


def test_compare_step_times_records_cpu_time_per_step():
    models = {"base": _SpinningModel(0.004), "twice": _SpinningModel(0.008)}
    x = y = np.zeros((8, 1), "float32")
    res = step_timing.compare_step_times(
        models, x, y, batch_size=2, steps=2, repeats=3, baseline="base"
    )
    # 4 ms of CPU over 2 steps: about 2 ms a step; twice that, about 2x.
    for cpu in res["base"]["cpu_step_seconds"]:
        assert 0.0019 <= cpu < 0.004
    for ratio in res["twice"]["cpu_ratios"]:
        assert 1.5 < ratio < 2.6
