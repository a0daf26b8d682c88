import keras
import numpy as np
import pytest

from keras_efficient.pruning import compare_to_dense
from keras_efficient.pruning import prune_potential


def test_compare_identical_and_noise():
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(40, 6)).astype("float32")
    y = keras.ops.convert_to_numpy(m(x)).argmax(-1)
    stats = compare_to_dense(m, m, x, y, eps=(0.0, 5.0), draws=3)
    assert stats["top1_agreement"] == 1.0
    assert stats["softmax_l2"] == pytest.approx(0.0, abs=1e-6)
    assert stats["dense_accuracy"] == 1.0
    assert stats["noise"][0]["pruned_accuracy"] == 1.0
    assert stats["noise"][1]["pruned_accuracy"] < 1.0
    other = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    s2 = compare_to_dense(m, other, x, y, eps=(), draws=1)
    assert s2["top1_agreement"] < 1.0 and s2["softmax_l2"] > 0


def test_prune_potential():
    res = [(0.5, 0.90), (0.8, 0.896), (0.9, 0.85), (0.95, 0.2)]
    assert prune_potential(0.90, res) == 0.8
    assert prune_potential(0.90, res, delta=0.06) == 0.9
    assert prune_potential(0.99, res) == 0.0
