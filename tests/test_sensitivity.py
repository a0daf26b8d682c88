"""Sensitivity analysis, plot and the sparsity policy."""

import os
import tempfile

import keras
import numpy as np
import pytest

from keras_efficient.pruning.cost import model_cost
from keras_efficient.pruning.policy import sparsity_policy
from keras_efficient.pruning.sensitivity import SensitivityTable
from keras_efficient.pruning.sensitivity import plot_sensitivity
from keras_efficient.pruning.sensitivity import sensitivity_analysis
from keras_efficient.pruning.shrink import shrink

L = keras.layers


def _model():
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU()(x)
    y = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = L.Add()([x, y])
    x = L.Conv2D(12, 3, padding="same", activation="relu", name="c3")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(3, name="out")(x))


def _data(n=48):
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8, 1)).astype("float32"), rng.integers(0, 3, n)


def test_table_and_restore():
    model = _model()
    x, y = _data()
    before = [w.copy() for w in model.get_weights()]
    table = sensitivity_analysis(model, x, y, sparsities=(0.5, 0.25),
                                 verbose=0)  # fmt: skip
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert set(table) == {"layer", "sparsity", "metric", "drop", "params",
                          "flops"}  # fmt: skip
    assert table["layer"] == ["c1", "c1", "c3", "c3"]
    assert table["sparsity"] == [0.25, 0.5, 0.25, 0.5]
    for row in table.rows():
        assert row["drop"] == pytest.approx(table.base_metric - row["metric"])
        assert row["params"] > 0 and row["flops"] > 0
    # c1's group: c1 (72+8), bn1 (4x8), c2 (8*72+8) and c3's input rows.
    per_unit = (80 + 32 + 584) / 8 + 9 * 12
    assert table["params"][1] == pytest.approx(4 * per_unit)


def test_unstructured_metric_and_groups():
    model = _model()
    x, y = _data()
    metric = keras.metrics.SparseCategoricalAccuracy()
    table = sensitivity_analysis(model, x, y, sparsities=[0.5], groups=["c3"],
                                 metric=metric, structure="unstructured",
                                 verbose=0)  # fmt: skip
    assert table["layer"] == ["c3"]
    table = sensitivity_analysis(
        model, x, y, sparsities=[0.9], metric=lambda t, p: 1.0, verbose=0
    )
    assert table["drop"] == [0.0, 0.0]


def test_bad_arguments():
    model = _model()
    x, y = _data()
    with pytest.raises(ValueError, match="sparsities"):
        sensitivity_analysis(model, x, y, sparsities=(1.0,), verbose=0)
    with pytest.raises(ValueError, match="structure"):
        sensitivity_analysis(model, x, y, structure="block", verbose=0)
    with pytest.raises(ValueError, match="groups"):
        sensitivity_analysis(model, x, y, groups=["nope"], verbose=0)
    with pytest.raises(ValueError, match="metric"):
        sensitivity_analysis(model, x, y, metric="f1", verbose=0)


def test_progbar_follows_verbose(capsys):
    model = _model()
    x, y = _data()
    sensitivity_analysis(model, x, y, sparsities=[0.5], verbose=0)
    assert capsys.readouterr().out == ""
    sensitivity_analysis(model, x, y, sparsities=[0.5], verbose=1)
    assert "2/2" in capsys.readouterr().out


def test_plot(tmp_path):
    model = _model()
    x, y = _data()
    table = sensitivity_analysis(model, x, y, verbose=0)
    path = os.path.join(tmp_path, "sensitivity.png")
    figure = plot_sensitivity(table, path)
    assert os.path.getsize(path) > 0
    assert len(figure.axes[0].lines) == 2


@pytest.mark.parametrize("budget", ["params", "flops", "latency"])
def test_policy_meets_target(budget):
    model = _model()
    x, y = _data()
    table = sensitivity_analysis(model, x, y, verbose=0)
    policy = sparsity_policy(table, 0.3, budget=budget)
    assert set(policy) == {"c1", "c3"}
    # The target holds on the model the policy produces, measured on it
    # (latency budgets use FLOPs as their stand-in).
    small = shrink(model, ratio=policy)
    key = "params" if budget == "params" else "flops"
    before, after = model_cost(model)[key], model_cost(small)[key]
    assert after <= 0.7 * before + 1e-9, (before, after, policy)


def test_policy_prefers_cheap_layers():
    table = SensitivityTable(1.0, total_params=100, total_flops=100)
    rows = [
        ("a", 0.5, 0.3, 20), ("a", 0.75, 0.5, 30),
        ("b", 0.5, 0.0, 20), ("b", 0.75, 0.05, 30),
    ]  # fmt: skip
    for layer, s, drop, saved in rows:
        for column, v in zip(table, (layer, s, 1 - drop, drop, saved, saved)):
            table[column].append(v)
    assert sparsity_policy(table, 0.3) == {"a": 0.0, "b": 0.75}
    assert sparsity_policy(table, 0.4) == {"a": 0.5, "b": 0.75}
    with pytest.raises(ValueError, match="at most 0.6"):
        sparsity_policy(table, 0.7)
    with pytest.raises(ValueError, match="budget"):
        sparsity_policy(table, 0.3, budget="energy")
    with pytest.raises(ValueError, match="table"):
        sparsity_policy({"layer": []}, 0.3)


def test_policy_output_feeds_shrink_round_trip():
    model = _model()
    x, y = _data()
    table = sensitivity_analysis(model, x, y, verbose=0)
    small = shrink(model, ratio=sparsity_policy(table, 0.2))
    path = os.path.join(tempfile.mkdtemp(), "small.keras")
    small.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(small(x)),
        atol=1e-6,
    )


def test_policy_target_holds_on_coupled_resnet():
    """Exact savings: the removed ResNet meets the target for real."""
    import keras_efficient

    model = keras_efficient.applications.ResNet(
        [1, 1], [8, 16], input_shape=(8, 8, 1), laurel="rw+lr", laurel_rank=4
    )
    x, y = _data(16)
    table = sensitivity_analysis(
        model, x, y, metric=lambda t, p: 0.0, verbose=0
    )
    for target in (0.4, 0.6):
        policy = sparsity_policy(table, target)
        small = shrink(model, ratio=policy)
        assert small.count_params() <= (1 - target) * model.count_params()


@pytest.mark.parametrize("verbose", ["1", True, 3, -1, None])
def test_verbose_checked(verbose):
    with pytest.raises(ValueError, match="verbose"):
        sensitivity_analysis(_model(), *_data(), verbose=verbose)
