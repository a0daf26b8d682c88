"""MagnitudePruning on this package's layers (`get_prunable_weights`)."""

import keras
import numpy as np
import pytest

from keras_efficient.callbacks import MagnitudePruning
from keras_efficient.layers import AltUp
from keras_efficient.layers import AltUpInput
from keras_efficient.layers import AltUpReadout
from keras_efficient.layers import LaurelResidual
from keras_efficient.layers import MixtureOfExperts
from keras_efficient.pruning import ConstantSparsity
from keras_efficient.pruning import PolynomialDecay
from keras_efficient.pruning import sparsity_report
from keras_efficient.pruning import strip_pruning
from tests.callback_harness import classification_data
from tests.callback_harness import fit


def _laurel_moe_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 16))
    fx = keras.layers.Dense(16, activation="relu", name="fx")(inp)
    h = LaurelResidual("rw+lr", rank=4, name="laurel")(inp, fx)
    h = MixtureOfExperts(
        4,
        8,
        router="softmax",
        output_dim=16,
        capacity_factor=None,
        implementation="reference",
        name="moe",
    )(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inp, keras.layers.Dense(3, name="head")(h))


def _altup_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 16))
    h = AltUpInput(2, mode="split")(inp)
    h = AltUp(keras.layers.Dense(8, name="inner"), num_blocks=2)(h)
    h = AltUpReadout(2, mode="projection", name="readout")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inp, keras.layers.Dense(3, name="head")(h))


def _fit(model, cb, epochs=2):
    data = classification_data(input_shape=(8, 16))
    fit(model, [cb], data, epochs)
    return data[0]


def _zeros(variable):
    w = keras.ops.convert_to_numpy(variable.value)
    return int((w == 0).sum()), w.size


@pytest.mark.parametrize(
    "build, expected",
    [
        (
            _laurel_moe_model,
            {
                ("fx", "kernel"),
                ("laurel", "lr_kernel_a"),
                ("laurel", "lr_kernel_b"),
                ("moe", "kernel_in"),
                ("moe", "kernel_out"),
                ("head", "kernel"),
            },
        ),
        (
            _altup_model,
            {("inner", "kernel"), ("readout", "kernel"), ("head", "kernel")},
        ),
    ],
)
def test_package_layers_pruned_exactly_and_stay_zero(build, expected):
    model = build()
    cb = MagnitudePruning(ConstantSparsity(0.75, 1, 1))
    x = _fit(model, cb, epochs=3)
    weights = cb.target_weights
    altup = [lay for lay in model.layers if isinstance(lay, AltUp)]
    inner = {"inner": lambda: altup[0].layer}
    paths = {
        getattr(inner[n]() if n in inner else model.get_layer(n), a).path
        for n, a in expected
    }
    assert paths <= set(weights)
    for key, variable in weights.items():
        zeros, n = _zeros(variable)
        # Exactly n - k zeros after many optimizer steps.
        assert zeros == n - max(round(n * 0.25), 1), key
    report = sparsity_report(model)
    assert set(report["layers"]) == set(weights)
    stripped = strip_pruning(model)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(stripped(x[:4])),
        keras.ops.convert_to_numpy(model(x[:4])),
        atol=1e-5,
    )


def test_moe_n_m_groups_along_input_axis():
    model = _laurel_moe_model()
    cb = MagnitudePruning(
        ConstantSparsity(0.5, 1, 1), n_m=(2, 4), targets=["moe"]
    )
    _fit(model, cb, epochs=1)
    kernel_in = model.get_layer("moe").kernel_in
    assert set(cb.target_weights) == {
        kernel_in.path,
        model.get_layer("moe").kernel_out.path,
    }
    w = keras.ops.convert_to_numpy(kernel_in.value)
    groups = (w.reshape(4, 16 // 4, 4, 8) != 0).sum(axis=2)  # (E, D/4, H)
    np.testing.assert_array_equal(groups, 2)


def test_second_fit_reuses_the_mask_variables():
    model = _laurel_moe_model()
    cb = MagnitudePruning(ConstantSparsity(0.6, 0, frequency=2))
    _fit(model, cb, epochs=2)
    masks = cb.mask_variables
    n_vars = len(model.optimizer.variables)
    _fit_again = model.fit
    rng = np.random.default_rng(1)
    _fit_again(
        rng.normal(size=(32, 8, 16)).astype("float32"),
        rng.integers(0, 3, size=(32,)),
        batch_size=16,
        verbose=0,
        callbacks=[cb],
    )
    assert len(model.optimizer.variables) == n_vars
    assert all(a is b for a, b in zip(masks, cb.mask_variables))
    for key, variable in cb.target_weights.items():
        zeros, n = _zeros(variable)
        assert zeros == n - max(round(n * 0.4), 1), key


def test_polynomial_reaches_final_sparsity():
    model = _laurel_moe_model()
    cb = MagnitudePruning(PolynomialDecay(0.0, 0.8, 0, 6, frequency=2))
    _fit(model, cb, epochs=2)  # 8 steps, events at steps 2, 4, 6
    assert cb.achieved_sparsity() == pytest.approx(0.8, abs=0.01)


def test_zero_initialised_kernel_trains_before_first_pruning_step():
    # LAuReL's lr_kernel_b starts at zero; attaching the masks must not pin
    # it there (masks are rebuilt from zeros only when resuming).
    model = _laurel_moe_model()
    cb = MagnitudePruning(ConstantSparsity(0.5, begin_step=100))
    _fit(model, cb, epochs=1)
    zeros, n = _zeros(cb.target_weights["laurel/lr_kernel_b"])
    assert zeros < n
