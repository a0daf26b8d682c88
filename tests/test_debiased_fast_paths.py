"""Debiased distillation's torch fast paths (alpha(x) of a fitted
`TeacherAccuracy`, the weights w(x)) against their `keras.ops` references
and a NumPy formula: values and gradients, on every backend (the fast
paths run on torch; elsewhere `dispatch` must give the reference)."""

import contextlib

import keras
import numpy as np
import pytest
from keras import ops

from keras_efficient import _backend
from keras_efficient.distillation import teacher_accuracy as ta
from keras_efficient.losses import DebiasedDistillationLoss
from keras_efficient.losses import TeacherAccuracy

# Every fast path the debiased loss takes (its checks' aside).
DEBIASED_FAST_PATHS = (
    "teacher_accuracy",
    "debiased_weights",
    "soft_ce",
    "margin",
    "interpolate_tables",
)

ESTIMATORS = {
    # A fit on data: many knots, flat runs.
    "fitted": None,
    # A repeated knot (a jump at 0.4) and ends inside (0, 1).
    "jump": ([0.1, 0.4, 0.4, 0.7], [0.3, 0.5, 0.8, 0.9]),
    # One knot: constant.
    "single": ([0.5], [0.75]),
}


@contextlib.contextmanager
def _reference_only():
    """The `keras.ops` references of debiased's fast paths in the block."""
    saved = {
        n: _backend._REGISTERED.pop(n)
        for n in DEBIASED_FAST_PATHS
        if n in _backend._REGISTERED
    }
    try:
        yield
    finally:
        _backend._REGISTERED.update(saved)


def _estimator(name):
    if ESTIMATORS[name] is None:
        rng = np.random.default_rng(0)
        p = rng.dirichlet(np.ones(6) * 0.3, size=600)
        order = np.argsort(-p, -1)
        y = np.where(rng.random(600) < 0.6, order[:, 0], order[:, 1])
        return TeacherAccuracy().fit(p, y)
    xs, ys = ESTIMATORS[name]
    return TeacherAccuracy(knots_x=xs, knots_y=ys)


def _teacher(shape=(40, 6), seed=1):
    rng = np.random.default_rng(seed)
    t = rng.dirichlet(np.ones(shape[-1]) * 0.4, size=shape[:-1])
    assert shape[-1] == 6
    flat = t.reshape(-1, shape[-1])
    flat[0] = 1.0 / shape[-1]  # all tied: margin 0
    flat[1, :2] = flat[1, :2].sum() / 2  # the top two tied
    flat[2] = np.eye(shape[-1])[3]  # margin 1
    # Margin 0.55 - 0.15, in float32 the knot 0.4 itself (the jump); no
    # tie for the second place (its gradient would split differently).
    flat[3] = [0.15, 0.55, 0.08, 0.07, 0.06, 0.09]
    return t.astype("float32")


def _np_alpha(est, t):
    top2 = np.sort(t.astype("float64"), -1)[..., -2:]
    xs, ys = list(est.knots_x), list(est.knots_y)
    if len(xs) == 1:
        xs, ys = xs + [xs[0] + 1.0], ys + ys
    return np.interp(top2[..., 1] - top2[..., 0], xs, ys)


def _value_and_grad(fn, x):
    """`fn(x)` and the gradient of `sum(fn(x) * w)` to `x` (fixed `w`)."""
    backend = keras.backend.backend()
    x = ops.convert_to_tensor(np.asarray(x, "float32"))
    w = np.random.default_rng(2).normal(size=np.shape(fn(x))).astype("f4")
    if backend == "jax":
        import jax

        return fn(x), jax.grad(lambda x: (fn(x) * w).sum())(x)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
            total = tf.reduce_sum(value * w)
        return value, tape.gradient(total, x)
    import torch

    x = x.detach().requires_grad_(True)
    value = fn(x)
    (value * torch.tensor(w)).sum().backward()
    return value, x.grad


def _numpy(*xs):
    return [ops.convert_to_numpy(x).astype("float64") for x in xs]


@pytest.mark.parametrize("shape", [(40, 6), (4, 5, 6)])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_teacher_accuracy_fast_path_matches_reference(name, shape):
    """alpha(x): the same values bit for bit and the same gradient to the
    teacher probabilities as the reference, and NumPy's `np.interp` of
    the margin, for ties, jumps and margins beyond the end knots."""
    est, t = _estimator(name), _teacher(shape)
    fast = _backend.fast_paths("teacher_accuracy").get(keras.backend.backend())
    if fast is None:
        reference = ta._fitted_accuracy
        assert _backend.dispatch("teacher_accuracy", reference) is reference
    value, grad = _numpy(*_value_and_grad(est, t))
    with _reference_only():
        ref_value, ref_grad = _numpy(*_value_and_grad(est, t))
    np.testing.assert_array_equal(value, ref_value)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(value, _np_alpha(est, t), atol=2e-6)
    # Not trivially equal: several segments; a gradient where the
    # segments slope (an isotonic fit is mostly flat).
    assert name == "single" or np.ptp(value) > 0.1
    assert name != "jump" or np.abs(grad).sum() > 1.0


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_debiased_loss_matches_reference_and_numpy(name):
    """Per-example debiased losses and their gradients to the student
    logits: the fast paths equal the references, and both the formula
    w(x) * CE(t, softmax(z)) with w = alpha / c."""
    est, t = _estimator(name), _teacher()
    z = 2.0 * np.random.default_rng(3).normal(size=t.shape)
    loss = DebiasedDistillationLoss(est, normalizer=0.7, reduction="none")
    value, grad = _numpy(*_value_and_grad(lambda x: loss(t, x), z))
    with _reference_only():
        ref = _numpy(*_value_and_grad(lambda x: loss(t, x), z))
    np.testing.assert_allclose(value, ref[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad, ref[1], rtol=1e-6, atol=1e-7)
    # Divided by the normaliser as a float32 (torch's cached constant and
    # a Python number alike; XLA may multiply by its reciprocal instead).
    weights = ops.convert_to_numpy(loss.weights(t))
    expected = ops.convert_to_numpy(ta.estimate(est, t)) / np.float32(0.7)
    np.testing.assert_allclose(weights, expected, rtol=3e-7, atol=0)
    if keras.backend.backend() == "torch":
        np.testing.assert_array_equal(weights, expected)
    w = _np_alpha(est, t) / 0.7
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    u = np.random.default_rng(2).normal(size=len(t)).astype("f4")
    np.testing.assert_allclose(value, w * -(t * logp).sum(-1), rtol=1e-4)
    expected_grad = (u * w)[:, None] * (np.exp(logp) - t)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-6)
    assert np.abs(grad).sum() > 1.0


@pytest.mark.parametrize("from_logits", [True, False])
def test_soft_ce_fast_path_matches_reference(from_logits):
    """The soft cross-entropy (debiased's, pseudo-labels'): the dispatched
    function equals the reference bit for bit, gradient included, and the
    NumPy formula."""
    from keras_efficient.distillation import _common

    t = _teacher()
    z = 2.0 * np.random.default_rng(4).normal(size=t.shape)
    y = z if from_logits else np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    target = ops.convert_to_tensor(t)

    def reference(x):
        return _common._soft_ce_reference(target, x, from_logits, 1e-7)

    def dispatched(x):
        return _common.soft_ce(target, x, from_logits)

    fast = _backend.fast_paths("soft_ce").get(keras.backend.backend())
    if fast is None:
        ref = _common._soft_ce_reference
        assert _backend.dispatch("soft_ce", ref) is ref
    value, grad = _numpy(*_value_and_grad(dispatched, y))
    ref_value, ref_grad = _numpy(*_value_and_grad(reference, y))
    np.testing.assert_array_equal(value, ref_value)
    np.testing.assert_array_equal(grad, ref_grad)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    np.testing.assert_allclose(value, -(t * logp).sum(-1), rtol=1e-5)
    assert np.ptp(value) > 0.5 and np.abs(grad).sum() > 1.0
