"""The harness passes a correct layer / loss and catches broken ones."""

import keras
import numpy as np
import pytest

from tests.harness import assert_gradients_reach
from tests.harness import run_layer_test
from tests.harness import run_loss_test


class _ForgetsConfig(keras.layers.Layer):
    """A layer whose get_config drops its `scale` argument."""

    def __init__(self, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        return x * self.scale

    def get_config(self):
        config = super().get_config()
        config.pop("scale", None)
        return config


class _UnusedWeight(keras.layers.Layer):
    def build(self, input_shape):
        self.used = self.add_weight(shape=(), initializer="ones")
        self.unused = self.add_weight(shape=(), initializer="ones")

    def call(self, x):
        return x * self.used


def test_harness_passes_keras_dense():
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    out = run_layer_test(
        lambda: keras.layers.Dense(5), x, expected_output_shape=(4, 5)
    )
    assert out.shape == (4, 5)


def test_harness_catches_config_that_does_not_round_trip():
    x = np.ones((2, 3), "float32")
    with pytest.raises(AssertionError):
        run_layer_test(
            lambda: _ForgetsConfig(scale=3.0),
            x,
            run_training=False,
            run_saving=False,
            run_mixed_precision=False,
        )


def test_gradient_check_catches_unused_weight():
    x = np.ones((2, 3), "float32")
    with pytest.raises(AssertionError, match="unused"):
        assert_gradients_reach(_UnusedWeight(), x)
    assert_gradients_reach(keras.layers.Dense(2), x)


def test_harness_passes_keras_crossentropy():
    rng = np.random.default_rng(0)
    y_true = rng.dirichlet(np.ones(4), size=6).astype("float32")
    y_pred = rng.normal(size=(6, 4)).astype("float32")
    per_example = run_loss_test(
        lambda **kw: keras.losses.CategoricalCrossentropy(
            from_logits=True, **kw
        ),
        y_true,
        y_pred,
    )
    assert per_example.shape == (6,)


def test_loss_check_catches_ignored_sample_weight():
    class IgnoresWeights(keras.losses.MeanSquaredError):
        def __call__(self, y_true, y_pred, sample_weight=None):
            return super().__call__(y_true, y_pred)

    y = np.ones((4, 2), "float32")
    p = np.arange(8, dtype="float32").reshape(4, 2)
    with pytest.raises(AssertionError):
        run_loss_test(
            lambda **kw: IgnoresWeights(**kw), y, p, run_training=False
        )
