"""Regression: the fitted estimator on outputs of rank > 2 (sequences).

`TeacherAccuracy.interpolate` used `ops.searchsorted` on the margins as
they came; TensorFlow's searchsorted matches leading dimensions, so a
(batch, time, classes) teacher output raised "Leading dim_size of both
tensors must match" for `SLaMLoss` and `DebiasedDistillationLoss` with a
fitted estimator (JAX and torch were fine).
"""

import keras
import numpy as np

from keras_efficient.losses import DebiasedDistillationLoss
from keras_efficient.losses import SLaMLoss
from keras_efficient.losses import TeacherAccuracy
from tests.harness import JIT
from tests.harness import to_numpy


def _estimator(c=5, n=300, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(c) * 0.5, size=n)
    y = np.where(rng.random(n) < 0.7, p.argmax(-1), rng.integers(0, c, n))
    return TeacherAccuracy().fit(p, y)


def _sequences(c=5, seed=1):
    rng = np.random.default_rng(seed)
    t = rng.dirichlet(np.ones(c) * 0.5, size=(4, 6)).astype("float32")
    s = rng.normal(size=(4, 6, c)).astype("float32")
    return t, s


def test_estimator_rank3_matches_flat_and_numpy():
    est = _estimator()
    t, _ = _sequences()
    alpha = to_numpy(est(t))
    assert alpha.shape == (4, 6)
    flat = to_numpy(est(t.reshape(-1, 5))).reshape(4, 6)
    np.testing.assert_allclose(alpha, flat, atol=1e-6)
    expected = est.predict_numpy(t.reshape(-1, 5)).reshape(4, 6)
    np.testing.assert_allclose(alpha, expected, atol=1e-5)


def test_losses_on_sequences_equal_flattened():
    est = _estimator()
    t, s = _sequences()
    pool = t.reshape(-1, 5)
    for loss in (
        SLaMLoss(teacher_accuracy=est, reduction=None),
        DebiasedDistillationLoss(
            est, pool_teacher_outputs=pool, reduction=None
        ),
    ):
        seq = to_numpy(loss(t, s))
        assert seq.shape == (4, 6)
        flat = to_numpy(loss(pool, s.reshape(-1, 5))).reshape(4, 6)
        np.testing.assert_allclose(seq, flat, rtol=1e-5, atol=1e-6)


def test_slam_trains_a_sequence_model():
    est = _estimator()
    t, _ = _sequences()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 3)), keras.layers.Dense(5)])
    model.compile(
        optimizer="sgd", loss=SLaMLoss(teacher_accuracy=est), jit_compile=JIT
    )
    x = np.random.default_rng(2).normal(size=(4, 6, 3)).astype("float32")
    history = model.fit(x, t, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
