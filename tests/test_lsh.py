"""Tests of `keras_efficient.layers.LSHHash`."""

import os
import tempfile

import keras
import numpy as np
import pytest

from keras_efficient.layers import LSHHash
from tests.harness import run_layer_test
from tests.harness import to_numpy


def _unit(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype("float32")


@pytest.mark.parametrize("kind", ["hyperplane", "euclidean"])
def test_harness(kind):
    x = np.random.default_rng(0).normal(size=(4, 5, 8)).astype("float32")
    out = run_layer_test(
        lambda: LSHHash(num_tables=3, num_bits=6, kind=kind, seed=1),
        x,
        expected_output_shape=(4, 5, 3),
        run_training=False,
        run_saving=False,
    )
    ids = to_numpy(out)
    assert ids.dtype == np.int32
    assert ids.min() >= 0 and ids.max() < 2**6


def test_hyperplane_matches_numpy_sign_pattern():
    x = np.random.default_rng(1).normal(size=(50, 8)).astype("float32")
    layer = LSHHash(num_tables=2, num_bits=5, seed=3)
    ids = to_numpy(layer(x))
    planes = to_numpy(layer.projections).reshape(8, 2, 5)
    bits = (np.einsum("nd,dlm->nlm", x, planes) > 0).astype(np.int64)
    expected = (bits * 2 ** np.arange(5)).sum(-1)
    np.testing.assert_array_equal(ids, expected)


def test_euclidean_matches_numpy_hash():
    x = 3 * np.random.default_rng(2).normal(size=(50, 8)).astype("float32")
    layer = LSHHash(
        num_tables=2, num_bits=7, kind="euclidean", bucket_width=0.5, seed=4
    )
    ids = to_numpy(layer(x))
    proj = x @ to_numpy(layer.projections) + to_numpy(layer.offsets)
    codes = np.floor(proj / 0.5).astype(np.int64).reshape(50, 2, 7)
    mult = to_numpy(layer.multipliers).astype(np.int64)
    expected = np.mod((codes * mult).sum(-1), 2**7)
    np.testing.assert_array_equal(ids, expected)


@pytest.mark.parametrize("kind", ["hyperplane", "euclidean"])
def test_deterministic_for_a_seed(kind):
    x = np.random.default_rng(3).normal(size=(64, 8)).astype("float32")
    a = to_numpy(LSHHash(4, 8, kind=kind, seed=7)(x))
    b = to_numpy(LSHHash(4, 8, kind=kind, seed=7)(x))
    c = to_numpy(LSHHash(4, 8, kind=kind, seed=8)(x))
    np.testing.assert_array_equal(a, b)
    assert np.mean(a == c) < 0.5


@pytest.mark.parametrize("kind", ["hyperplane", "euclidean"])
def test_near_vectors_collide_more_than_far_ones(kind):
    d, n = 16, 2000
    x = _unit(n, d, 0)
    noise = np.random.default_rng(1).normal(size=(n, d)).astype("float32")
    near = x + 0.03 * noise
    far = _unit(n, d, 2)
    layer = LSHHash(
        num_tables=4, num_bits=8, kind=kind, bucket_width=2.0, seed=0
    )
    ids = to_numpy(layer(x))
    near_rate = np.mean(ids == to_numpy(layer(near)))
    far_rate = np.mean(ids == to_numpy(layer(far)))
    # Hyperplanes: P(collide) = (1 - angle / pi) ** 8: ~0.9 near, ~0 far.
    # Euclidean (width 2): ~(1 - E|a.(x - y)| / 2) ** 8: ~0.7 near, ~0 far.
    assert near_rate > 0.5, near_rate
    assert far_rate < 0.1, far_rate
    assert near_rate > 5 * far_rate


def test_collision_rate_decreases_with_distance():
    d, n = 16, 2000
    x = _unit(n, d, 0)
    noise = np.random.default_rng(1).normal(size=(n, d)).astype("float32")
    layer = LSHHash(num_tables=2, num_bits=6, seed=0)
    ids = to_numpy(layer(x))
    rates = [
        np.mean(ids == to_numpy(layer(x + s * noise)))
        for s in (0.01, 0.1, 0.3, 1.0)
    ]
    assert all(a > b for a, b in zip(rates, rates[1:])), rates


def test_serializes_with_its_hyperplanes():
    x = np.random.default_rng(4).normal(size=(16, 8)).astype("float32")
    inputs = keras.Input((8,))
    layer = LSHHash(num_tables=2, num_bits=10, kind="euclidean")
    model = keras.Model(inputs, layer(inputs))
    expected = to_numpy(model(x))
    assert len(layer.non_trainable_weights) == 3
    assert not layer.trainable_weights
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "lsh.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(to_numpy(loaded(x)), expected)
    np.testing.assert_array_equal(
        to_numpy(loaded.layers[-1].projections), to_numpy(layer.projections)
    )


def test_same_ids_under_mixed_precision():
    x = np.random.default_rng(5).normal(size=(32, 8)).astype("float32")
    layer = LSHHash(2, 8, seed=0)
    expected = to_numpy(layer(x))
    keras.config.set_dtype_policy("mixed_bfloat16")
    mixed = LSHHash(2, 8, seed=0)
    np.testing.assert_array_equal(to_numpy(mixed(x)), expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_bits": 31}, "num_bits"),
        ({"num_bits": 0}, "num_bits"),
        ({"num_tables": 0}, "num_tables"),
        ({"kind": "cosine"}, "kind"),
        ({"kind": "euclidean", "bucket_width": 0}, "bucket_width"),
        ({"seed": "a"}, "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LSHHash(**kwargs)


def test_weight_names_multipliers_and_unknown_width():
    layer = LSHHash(num_tables=4, num_bits=16, kind="euclidean", seed=0)
    layer.build((None, 8))
    assert {w.name for w in layer.weights} == {
        "projections",
        "offsets",
        "multipliers",
    }
    # Odd int32 multipliers spread over [1, 2**31): positive (no wrap) and
    # large enough that combining the bits rarely collides.
    m = to_numpy(layer.multipliers).astype("int64")
    assert (m % 2 == 1).all() and m.min() > 0 and m.max() < 2**31
    assert m.max() > 2**24
    with pytest.raises(ValueError, match="`LSHHash` needs a known last axis"):
        LSHHash(num_tables=2, num_bits=4).build((None, None))
