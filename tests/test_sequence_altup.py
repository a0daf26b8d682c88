import keras
import numpy as np
import pytest
from keras import ops

from keras_efficient.layers import SequenceAltUp
from tests.harness import assert_allclose
from tests.harness import assert_gradients_reach
from tests.harness import run_layer_test
from tests.harness import to_numpy

RNG = np.random.default_rng(0)
D = 8


@keras.saving.register_keras_serializable(package="keras_efficient_tests")
class CausalMix(keras.layers.Layer):
    """A causal residual layer: x_t + tanh(W cumulative_mean(x)_t)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(D, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        steps = ops.cast(ops.arange(1, ops.shape(x)[1] + 1), x.dtype)
        mean = ops.cumsum(x, axis=1) / steps[None, :, None]
        return x + ops.tanh(self.dense(mean))


def reference(x, layer_fn, gains):
    s = len(gains)
    anchors = x[:, ::s]
    innovation = layer_fn(anchors) - anchors
    out = x.copy()
    for t in range(x.shape[1]):
        out[:, t] += gains[t % s] * innovation[:, t // s]
    return out


def numpy_causal_mix(layer, x):
    kernel, bias = (to_numpy(w) for w in layer.dense.weights)
    mean = np.cumsum(x, 1) / np.arange(1, x.shape[1] + 1)[None, :, None]
    return x + np.tanh(mean @ kernel + bias)


def test_harness():
    x = RNG.normal(size=(3, 10, D)).astype("float32")
    run_layer_test(
        lambda: SequenceAltUp(CausalMix(), stride=3),
        x,
        expected_output_shape=x.shape,
    )


@pytest.mark.parametrize("stride,length", [(1, 7), (2, 8), (3, 10), (4, 3)])
def test_matches_numpy(stride, length):
    x = RNG.normal(size=(2, length, D)).astype("float32")
    inner = CausalMix()
    layer = SequenceAltUp(inner, stride=stride)
    layer(x)
    gains = RNG.normal(size=(stride,)).astype("float32")
    layer.gains.assign(gains)
    expected = reference(x, lambda a: numpy_causal_mix(inner, a), gains)
    assert_allclose(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_stride_one_is_the_plain_layer():
    x = RNG.normal(size=(2, 6, D)).astype("float32")
    inner = CausalMix()
    assert_allclose(SequenceAltUp(inner, stride=1)(x), inner(x), atol=1e-6)


def test_anchors_get_the_layer_output_at_init():
    x = RNG.normal(size=(2, 9, D)).astype("float32")
    inner = CausalMix()
    out = to_numpy(SequenceAltUp(inner, stride=3)(x))
    y = to_numpy(inner(x[:, ::3]))
    assert_allclose(out[:, ::3], y, atol=1e-5)
    # Skipped tokens get their anchor's residual update.
    assert_allclose(out[:, 1::3], x[:, 1::3] + (y - x[:, ::3]), atol=1e-5)


def test_wrapped_layer_runs_on_anchors_only():
    seen = []

    class Probe(keras.layers.Layer):
        def call(self, x):
            seen.append(tuple(x.shape))
            return x

    SequenceAltUp(Probe(), stride=4)(np.ones((2, 10, D), "float32"))
    assert seen == [(2, 3, D)]


@pytest.mark.parametrize("stride", [2, 3])
def test_causal(stride):
    x = RNG.normal(size=(2, 11, D)).astype("float32")
    layer = SequenceAltUp(CausalMix(), stride=stride)
    layer(x)
    layer.gains.assign(RNG.normal(size=(stride,)))
    base = to_numpy(layer(x))
    for t in range(x.shape[1] - 1):
        perturbed = x.copy()
        perturbed[:, t + 1 :] += RNG.normal(size=perturbed[:, t + 1 :].shape)
        out = to_numpy(layer(perturbed))
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)
        assert np.abs(out[:, t + 1 :] - base[:, t + 1 :]).max() > 1e-3


def test_gradients_reach():
    x = RNG.normal(size=(2, 7, D)).astype("float32")
    layer = SequenceAltUp(CausalMix(), stride=2)
    layer(x)
    layer.gains.assign([0.5, 1.5])
    assert_gradients_reach(layer, x)


def test_errors():
    with pytest.raises(ValueError, match="stride"):
        SequenceAltUp(CausalMix(), stride=0)
    with pytest.raises(ValueError, match="stride"):
        SequenceAltUp(CausalMix(), stride=1.5)
    with pytest.raises(ValueError, match="layer"):
        SequenceAltUp(None)
    with pytest.raises(ValueError, match="rank"):
        SequenceAltUp(keras.layers.Dense(D))(np.ones((2, D), "float32"))
