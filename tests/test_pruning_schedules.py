import keras
import numpy as np
import pytest

from keras_efficient.pruning import ConstantSparsity
from keras_efficient.pruning import IterativePruning
from keras_efficient.pruning import PolynomialDecay


def test_polynomial_formula_and_steps():
    s = PolynomialDecay(
        0.1, 0.9, begin_step=100, end_step=1100, power=3, frequency=50
    )
    for step in range(0, 1500, 7):
        p = min(max((step - 100) / 1000, 0.0), 1.0)
        expect = 0.9 + (0.1 - 0.9) * (1 - p) ** 3
        prune, sp = s(step)
        assert sp == pytest.approx(expect, abs=1e-12)
        assert prune == (100 <= step <= 1100 and (step - 100) % 50 == 0)


def test_constant_steps():
    s = ConstantSparsity(0.5, begin_step=10, frequency=5)
    assert s(10) == (True, 0.5)
    assert s(12)[0] is False and s(9)[0] is False
    assert s(10**6)[0] is True
    s = ConstantSparsity(0.5, begin_step=10, end_step=20, frequency=5)
    assert s(20)[0] and not s(25)[0]


def test_iterative_geometric():
    sp = IterativePruning.geometric_sparsities(0.9, prune_fraction=0.1)
    keep = 1 - np.array(sp)
    np.testing.assert_allclose(keep[:-1], 0.9 ** np.arange(1, len(sp)))
    assert sp[-1] == 0.9 and keep[-2] > 0.1
    s = IterativePruning([0.5, 0.7, 0.8], steps_per_cycle=10, begin_step=5)
    assert s(5) == (True, 0.5) and s(15) == (True, 0.7)
    assert s(25) == (True, 0.8) and s(35)[0] is False and s(12)[0] is False
    assert s(100)[1] == 0.8


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantSparsity(0.3, 5, 50, 10),
        PolynomialDecay(0.0, 0.8, 0, 100, power=2, frequency=3),
        IterativePruning([0.2, 0.4], 7, 1),
    ],
)
def test_serialization(schedule):
    config = keras.saving.serialize_keras_object(schedule)
    back = keras.saving.deserialize_keras_object(config)
    assert type(back) is type(schedule)
    assert back.get_config() == schedule.get_config()


def test_errors():
    # Each message names its argument exactly, as `name` must be ...
    with pytest.raises(ValueError, match="^`target_sparsity` must"):
        ConstantSparsity(1.0, 0)
    with pytest.raises(ValueError, match="^`begin_step` must"):
        ConstantSparsity(0.5, -1)
    with pytest.raises(ValueError, match="^`prune_fraction` must"):
        IterativePruning.geometric_sparsities(0.9, prune_fraction=0.0)
    with pytest.raises(ValueError, match="final_sparsity"):
        PolynomialDecay(0.0, -0.1, 0, 10)
    with pytest.raises(ValueError, match="end_step"):
        PolynomialDecay(0.0, 0.5, 10, 10)
    with pytest.raises(ValueError, match="frequency"):
        ConstantSparsity(0.5, 0, frequency=0)
    with pytest.raises(ValueError, match="steps_per_cycle"):
        IterativePruning([0.5], 0)


def _numpy_schedule(kind, step, begin, end, frequency, **kw):
    """tfmot's rule and each schedule's sparsity, written out for NumPy."""
    prune = step >= begin and (end == -1 or step <= end)
    prune = prune and (step - begin) % frequency == 0
    if kind == "constant":
        return prune, kw["target"]
    if kind == "polynomial":
        p = np.clip((step - begin) / (end - begin), 0.0, 1.0)
        a, b = kw["initial"], kw["final"]
        return prune, b + (a - b) * (1.0 - p) ** kw["power"]
    values = kw["sparsities"]
    cycle = np.clip((step - begin) // frequency, 0, len(values) - 1)
    return prune, values[cycle] if step >= begin else 0.0


@pytest.mark.parametrize(
    "schedule, kind, begin, end, frequency, kw",
    [
        (
            ConstantSparsity(0.6, begin_step=4, frequency=3),
            "constant",
            4,
            -1,
            3,
            {"target": 0.6},
        ),
        (
            ConstantSparsity(0.4, begin_step=2, end_step=11, frequency=3),
            "constant",
            2,
            11,
            3,
            {"target": 0.4},
        ),
        (
            PolynomialDecay(0.2, 0.7, 3, 19, power=2, frequency=4),
            "polynomial",
            3,
            19,
            4,
            {"initial": 0.2, "final": 0.7, "power": 2},
        ),
        (
            IterativePruning([0.3, 0.5, 0.65], steps_per_cycle=5, begin_step=2),
            "iterative",
            2,
            12,
            5,
            {"sparsities": [0.3, 0.5, 0.65]},
        ),
    ],
)
def test_tensor_call_and_call_match_the_rule(
    schedule, kind, begin, end, frequency, kw
):
    # The compiled train step uses `tensor_call`; reports use `__call__`.
    for step in range(0, 30):
        prune, sparsity = _numpy_schedule(
            kind, step, begin, end, frequency, **kw
        )
        assert schedule(step) == (prune, pytest.approx(sparsity, abs=1e-12))
        should, value = schedule.tensor_call(np.int32(step))
        assert bool(keras.ops.convert_to_numpy(should)) == prune, step
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(value), sparsity, atol=1e-6
        )
    assert schedule.end_step == end


def test_peak_sparsity_and_geometric_constructor():
    assert ConstantSparsity(0.35).peak_sparsity() == 0.35
    assert PolynomialDecay(0.1, 0.8, 0, 10).peak_sparsity() == 0.8
    assert PolynomialDecay(0.8, 0.1, 0, 10).peak_sparsity() == 0.8
    assert IterativePruning([0.2, 0.6, 0.4], 3).peak_sparsity() == 0.6
    s = IterativePruning.geometric(
        0.8, prune_fraction=0.5, steps_per_cycle=7, begin_step=3
    )
    # Keep ratios 0.5, 0.25, then 0.125 <= 0.2: clipped to 0.8.
    assert s.sparsities == [0.5, 0.75, 0.8]
    assert (s.steps_per_cycle, s.begin_step, s.end_step) == (7, 3, 17)
    assert IterativePruning.geometric(0.5, prune_fraction=0.5).sparsities == [
        0.5
    ]
