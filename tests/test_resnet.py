"""Tests of the ResNet applications (plain and LAuReL residuals)."""

import os
import tempfile

import keras
import numpy as np
import pytest

from keras_efficient.applications import ResNet
from keras_efficient.applications import ResNet18
from keras_efficient.applications import ResNet20
from keras_efficient.applications import ResNet50
from keras_efficient.applications import ResNet56
from keras_efficient.layers.laurel import LaurelResidual
from tests.harness import JIT
from tests.harness import assert_allclose

VARIANTS = [None, "rw", "lr", "rw+lr", "rw+lr+pa"]


def _small(laurel=None, **kwargs):
    # Two stages so PA histories and a shape change both occur.
    kwargs.setdefault("input_shape", (8, 8, 1))
    return ResNet([2, 2], [4, 8], laurel=laurel, laurel_rank=2, **kwargs)


def _laurel_layers(model):
    return [
        layer for layer in model.layers if isinstance(layer, LaurelResidual)
    ]


def _data(n=8, shape=(8, 8, 1), classes=10):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n,) + shape).astype("float32")
    y = rng.integers(0, classes, size=(n,)).astype("int32")
    return x, y


@pytest.mark.parametrize("laurel", VARIANTS)
def test_parameter_overhead(laurel):
    plain = ResNet20(input_shape=(8, 8, 1))
    model = ResNet20(input_shape=(8, 8, 1), laurel=laurel)
    layers = _laurel_layers(model)
    overhead = model.count_params() - plain.count_params()
    assert overhead == sum(layer.count_params() for layer in layers)
    assert not _laurel_layers(plain)
    if laurel is None:
        assert overhead == 0
        return
    assert len(layers) == 9
    channels = [16] * 3 + [32] * 3 + [64] * 3
    if laurel == "rw":
        assert overhead == 2 * 9
    elif laurel == "lr":
        assert overhead == sum(2 * c * 16 for c in channels)
    elif laurel == "rw+lr":
        assert overhead == sum(2 + 2 * c * 16 for c in channels)
    else:
        # A block's previous inputs are the inputs of earlier blocks of
        # its shape: stage 1 (no shape change) gives 1, 2, 3 activations;
        # in stages 2 and 3 the first block changes the shape, so the next
        # blocks get 1 and 2.
        expected = 0
        for c, k in zip(channels, [1, 2, 3, 1, 1, 2, 1, 1, 2]):
            expected += 2 + k + k * 2 * c * 16
        assert overhead == expected


@pytest.mark.parametrize("laurel", ["rw", "lr", "rw+lr", "rw+lr+pa"])
def test_identity_at_init(laurel):
    plain = _small()
    model = _small(laurel)
    for layer in plain.layers:
        weights = layer.get_weights()
        if weights:
            model.get_layer(layer.name).set_weights(weights)
    x, _ = _data()
    assert_allclose(
        model.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-5
    )


@pytest.mark.parametrize(
    "laurel",
    # rw+lr runs the rw+lr+pa code path without PA: slow run only.
    [None, pytest.param("rw+lr", marks=pytest.mark.slow), "rw+lr+pa"],
)
def test_train_step_and_save(laurel):
    model = _small(laurel)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        jit_compile=JIT,
    )
    x, y = _data()
    before = [np.array(w) for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    after = [np.array(w) for w in model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    expected = model.predict(x, verbose=0)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)


@pytest.mark.parametrize("pooling", [None, "avg", "max"])
def test_include_top_false(pooling):
    model = _small("rw", include_top=False, pooling=pooling)
    x, _ = _data(n=2)
    out = model.predict(x, verbose=0)
    assert out.shape == ((2, 4, 4, 8) if pooling is None else (2, 8))


def test_width_multiplier_and_logits():
    model = ResNet20(
        input_shape=(8, 8, 1),
        width_multiplier=0.5,
        classes=3,
        classifier_activation=None,
    )
    assert model.get_layer("stem_conv").filters == 8
    assert model.output.shape == (None, 3)


@pytest.mark.parametrize(
    "builder",
    # ResNet50 in the slow run; its blocks train below on every run.
    [ResNet18, pytest.param(ResNet50, marks=pytest.mark.slow)],
)
def test_imagenet_style_small_input(builder):
    model = builder(
        input_shape=(32, 32, 3),
        classes=5,
        laurel="rw+lr",
        laurel_rank=4,
        width_multiplier=0.125,
    )
    assert len(_laurel_layers(model)) == (8 if builder is ResNet18 else 16)
    x, y = _data(n=4, shape=(32, 32, 3), classes=5)
    model.compile(
        optimizer="sgd",
        loss="sparse_categorical_crossentropy",
        jit_compile=JIT,
    )
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_bottleneck_blocks_train():
    # ResNet50's block and stem in a two-stage model (the full ResNet50
    # trains in the slow run).
    model = ResNet(
        stack_sizes=[1, 2],
        filters=[4, 8],
        block="bottleneck",
        stem="imagenet",
        input_shape=(32, 32, 3),
        classes=5,
        laurel="rw+lr",
        laurel_rank=4,
    )
    assert len(_laurel_layers(model)) == 3
    x, y = _data(n=4, shape=(32, 32, 3), classes=5)
    model.compile(
        optimizer="sgd",
        loss="sparse_categorical_crossentropy",
        jit_compile=JIT,
    )
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_resnet56_builds():
    model = ResNet56(input_shape=(8, 8, 1), laurel="rw")
    assert len(_laurel_layers(model)) == 27


def test_input_tensor():
    inputs = keras.Input(shape=(8, 8, 1))
    model = ResNet20(input_tensor=inputs, width_multiplier=0.25)
    assert model.inputs[0] is inputs


def test_errors():
    with pytest.raises(ValueError, match="laurel"):
        ResNet20(laurel="bogus")
    with pytest.raises(ValueError, match="weights"):
        ResNet20(weights="imagenet")
    with pytest.raises(ValueError, match="input_shape"):
        ResNet20(input_shape=(2, 2, 1))
    with pytest.raises(ValueError, match="input_shape"):
        ResNet18(input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="pooling"):
        ResNet20(include_top=False, pooling="mean")
    with pytest.raises(ValueError, match="laurel_rank"):
        ResNet20(laurel="lr", laurel_rank=0)
    with pytest.raises(ValueError, match="width_multiplier"):
        ResNet20(width_multiplier=0)
