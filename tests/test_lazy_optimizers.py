"""Tests of `keras_efficient.optimizers.LazyAdam` and `LazySGD`."""

import keras
import numpy as np
import pytest

from keras_efficient.optimizers import LazyAdam
from keras_efficient.optimizers import LazySGD
from tests.harness import JIT
from tests.harness import to_numpy

N, D = 64, 3
IDS = [
    np.array([[1, 5, 5, 9]]),
    np.array([[5, 2, 40, 2]]),
    np.array([[7, 7, 7, 7]]),
]


def _numpy_lazy_adam(
    table, grads, lr=0.01, b1=0.9, b2=0.999, eps=1e-7, moments=False
):
    """The documented update on rows with a nonzero gradient only."""
    w, m, v = table.copy(), np.zeros_like(table), np.zeros_like(table)
    w, m, v = (a.astype("float64") for a in (w, m, v))
    for t, g in enumerate(grads, start=1):
        touched = np.any(g != 0, axis=1)
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        m[touched] += (g[touched] - m[touched]) * (1 - b1)
        v[touched] += (g[touched] ** 2 - v[touched]) * (1 - b2)
        w[touched] -= alpha * m[touched] / (np.sqrt(v[touched]) + eps)
    return (w, m, v) if moments else w


def _numpy_lazy_sgd(table, grads, lr=0.1, momentum=0.9):
    w, u = table.copy(), np.zeros_like(table)
    for g in grads:
        touched = np.any(g != 0, axis=1)
        u[touched] = momentum * u[touched] - lr * g[touched]
        w[touched] += u[touched]
    return w


def _train(optimizer, steps=IDS, model_out=None):
    """Embedding -> sum, loss = sum(out * c): gradient rows are known."""
    keras.utils.set_random_seed(0)
    ids = keras.Input((4,), dtype="int32")
    embed = keras.layers.Embedding(N, D)
    out = embed(ids)
    model = keras.Model(ids, out)
    c = np.arange(1, 4 * D + 1, dtype="float32").reshape(1, 4, D) / 10

    def loss(y_true, y_pred):
        return keras.ops.sum(y_pred * keras.ops.convert_to_tensor(c))

    model.compile(optimizer, loss, jit_compile=JIT)
    table = to_numpy(embed.embeddings).copy()
    grads = []
    for ids_step in steps:
        g = np.zeros((N, D), "float32")
        np.add.at(g, ids_step[0], c[0])
        grads.append(g)
        model.train_on_batch(ids_step, np.zeros((1, 4, D)))
    if model_out is not None:
        model_out.append(model)
    return table, grads, to_numpy(embed.embeddings)


def test_lazy_adam_matches_numpy_and_leaves_other_rows():
    table, grads, got = _train(LazyAdam(0.01))
    np.testing.assert_allclose(
        got, _numpy_lazy_adam(table, grads), rtol=1e-5, atol=1e-6
    )
    untouched = np.setdiff1d(np.arange(N), np.concatenate(IDS, axis=None))
    np.testing.assert_array_equal(got[untouched], table[untouched])
    # Plain Adam keeps moving row 9 after step 1 (its moment decays).
    _, _, dense = _train(keras.optimizers.Adam(0.01))
    assert not np.allclose(dense[9], got[9])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_lazy_sgd_matches_numpy(momentum):
    table, grads, got = _train(LazySGD(0.1, momentum=momentum))
    expected = _numpy_lazy_sgd(table, grads, momentum=momentum)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_config_round_trip_and_bad_arguments():
    opt = LazyAdam(0.02, beta_1=0.8)
    clone = LazyAdam.from_config(opt.get_config())
    assert clone.beta_1 == 0.8
    assert float(clone.learning_rate) == pytest.approx(0.02)
    assert isinstance(
        keras.optimizers.deserialize(
            keras.optimizers.serialize(LazySGD(0.1, momentum=0.5))
        ),
        LazySGD,
    )
    with pytest.raises(ValueError, match="amsgrad"):
        LazyAdam(amsgrad=True)


# Rows read, skipped for a step or two, then read again (3, 5 and 9), and
# row 11 read once and never again: a row's moments must not decay while
# it is not read, or its next update differs from lazy Adam's.
READ_SKIP_READ = [
    np.array([[3, 5, 9, 11]]),
    np.array([[5, 20, 20, 21]]),
    np.array([[20, 21, 22, 22]]),
    np.array([[3, 9, 9, 5]]),
    np.array([[9, 3, 21, 30]]),
]


def test_lazy_adam_rows_read_skipped_and_read_again():
    models = []
    table, grads, got = _train(LazyAdam(0.01), READ_SKIP_READ, models)
    want, want_m, want_v = _numpy_lazy_adam(table, grads, moments=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    optimizer = models[0].optimizer
    (embeddings,) = models[0].trainable_weights
    index = optimizer._get_variable_index(embeddings)
    got_m = to_numpy(optimizer._momentums[index])
    got_v = to_numpy(optimizer._velocities[index])
    np.testing.assert_allclose(got_m, want_m, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-5, atol=1e-12)
    # Row 11 was read at step 1 only: its moments keep their step-1 values
    # (a non-lazy update would have decayed m by 0.9 ** 4).
    g11 = grads[0][11]
    np.testing.assert_allclose(got_m[11], 0.1 * g11, rtol=1e-6)
    np.testing.assert_allclose(got_v[11], 0.001 * g11**2, rtol=1e-5)
    never = np.setdiff1d(np.arange(N), np.concatenate(READ_SKIP_READ, None))
    np.testing.assert_array_equal(got_m[never], 0)
    np.testing.assert_array_equal(got_v[never], 0)
    np.testing.assert_array_equal(got[never], table[never])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_lazy_sgd_rows_read_skipped_and_read_again(momentum):
    table, grads, got = _train(LazySGD(0.1, momentum=momentum), READ_SKIP_READ)
    expected = _numpy_lazy_sgd(table, grads, momentum=momentum)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
