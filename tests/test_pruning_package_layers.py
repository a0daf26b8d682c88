"""MagnitudePruning on this package's layers, and when it retraces."""

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

JIT = keras.backend.backend() != "torch"


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
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=JIT,
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 16)).astype("float32")
    y = rng.integers(0, 3, size=(64,))
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=[cb])
    return x


def _zeros(variable):
    w = keras.ops.convert_to_numpy(variable.value)
    return int((w == 0).sum()), w.size


@pytest.mark.parametrize(
    "build, expected",
    [
        (
            _laurel_moe_model,
            {
                "fx",
                "laurel/lr_kernel_a",
                "laurel/lr_kernel_b",
                "moe/kernel_in",
                "moe/kernel_out",
                "head",
            },
        ),
        (_altup_model, {"inner", "readout", "head"}),
    ],
)
def test_package_layers_pruned_exactly_and_stay_zero(build, expected):
    model = build()
    cb = MagnitudePruning(ConstantSparsity(0.75, 0, 0))
    x = _fit(model, cb, epochs=3)
    weights = cb.target_weights
    assert expected <= set(weights)
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
        ConstantSparsity(0.5, 0, 0), n_m=(2, 4), targets=["moe"]
    )
    _fit(model, cb, epochs=1)
    w = keras.ops.convert_to_numpy(cb.target_weights["moe/kernel_in"].value)
    groups = (w.reshape(4, 16 // 4, 4, 8) != 0).sum(axis=2)  # (E, D/4, H)
    np.testing.assert_array_equal(groups, 2)


def test_retrace_only_when_a_mask_changes():
    # ConstantSparsity prunes every 2 steps, but after the first event the
    # masks stay the same: only the attach retrace, on every backend; a
    # second fit reuses the train function.
    model = _laurel_moe_model()
    cb = MagnitudePruning(ConstantSparsity(0.6, 0, frequency=2))
    _fit(model, cb, epochs=2)
    if keras.backend.backend() == "jax":
        assert cb.retraces == 2  # attach, then the first (changed) mask
    else:
        assert cb.retraces == 1
    before = cb.retraces
    _fit_again = model.fit
    rng = np.random.default_rng(1)
    _fit_again(
        rng.normal(size=(32, 8, 16)).astype("float32"),
        rng.integers(0, 3, size=(32,)),
        batch_size=16,
        verbose=0,
        callbacks=[cb],
    )
    assert cb.retraces == before
    for key, variable in cb.target_weights.items():
        zeros, n = _zeros(variable)
        assert zeros == n - max(round(n * 0.4), 1), key


def test_polynomial_retraces_per_changed_mask_on_jax():
    model = _laurel_moe_model()
    cb = MagnitudePruning(PolynomialDecay(0.0, 0.8, 0, 6, frequency=2))
    _fit(model, cb, epochs=2)  # 8 steps, events at 0 (s=0), 2, 4, 6
    if keras.backend.backend() == "jax":
        assert cb.retraces == 4  # attach + the 3 events that change masks
    else:
        assert cb.retraces == 1
    assert cb.achieved_sparsity() == pytest.approx(0.8, abs=0.01)


def test_zero_initialised_kernel_trains_before_first_pruning_step():
    # LAuReL's lr_kernel_b starts at zero; attaching the masks must not pin
    # it there (masks are rebuilt from zeros only when resuming).
    model = _laurel_moe_model()
    cb = MagnitudePruning(ConstantSparsity(0.5, begin_step=100))
    _fit(model, cb, epochs=1)
    zeros, n = _zeros(cb.target_weights["laurel/lr_kernel_b"])
    assert zeros < n
