import keras
import numpy as np
import pytest

from keras_efficient.losses import SLaMLoss
from keras_efficient.losses import TeacherAccuracy
from tests.harness import run_loss_test
from tests.harness import to_numpy


def _data(n=16, c=5, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.dirichlet(np.ones(c), size=n).astype("float32")
    s = rng.normal(size=(n, c)).astype("float32")
    return t, s


def _est(c=5, seed=1):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(c) * 0.5, size=400)
    y = np.where(rng.random(400) < 0.6, p.argmax(-1), rng.integers(0, c, 400))
    return TeacherAccuracy().fit(p, y)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _ref(t, s, alpha, k, normalize=False, hard=False, eps=1e-7):
    f = _softmax(s.astype("float64"))
    kth = np.sort(t, -1)[:, -k][:, None]
    topk = (t >= kth).astype("float64")
    norm = (k - 1) if normalize else 1
    a = alpha[:, None]
    mix = np.clip(a * f + (1 - a) * (1 - f) * topk / norm, eps, 1)
    target = np.eye(t.shape[1])[t.argmax(-1)] if hard else t
    return -(target * np.log(mix)).sum(-1)


def test_alpha_one_is_ce_against_teacher():
    t, s = _data()
    est = TeacherAccuracy(knots_x=[0.0, 1.0], knots_y=[1.0, 1.0])
    got = to_numpy(SLaMLoss(est, reduction="none")(t, s))
    ce = to_numpy(keras.losses.categorical_crossentropy(t, s, from_logits=True))
    np.testing.assert_allclose(got, ce, rtol=1e-5, atol=1e-5)


def test_binary_k2_is_forward_correction():
    rng = np.random.default_rng(3)
    t = rng.dirichlet(np.ones(2), size=32).astype("float32")
    s = rng.normal(size=(32, 2)).astype("float32")
    a = 0.8
    est = TeacherAccuracy(knots_x=[0.0, 1.0], knots_y=[a, a])
    got = to_numpy(SLaMLoss(est, k=2, reduction="none")(t, s))
    f = _softmax(s.astype("float64"))
    T = np.array([[a, 1 - a], [1 - a, a]])  # flip rate 1 - a
    noisy = f @ T
    ref = -(t * np.log(noisy)).sum(-1)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "k,normalize,target", [(None, False, "soft"), (3, True, "hard")]
)
def test_matches_numpy_reference(k, normalize, target):
    t, s = _data()
    est = _est()
    loss = SLaMLoss(
        est, k=k, normalize=normalize, target=target, reduction="none"
    )
    kk = loss.resolved_k(5)
    alpha = est.predict_numpy(t)
    ref = _ref(t, s, alpha, kk, normalize, target == "hard")
    np.testing.assert_allclose(to_numpy(loss(t, s)), ref, rtol=1e-4, atol=1e-5)


def test_default_no_arguments():
    t, s = _data()
    loss = SLaMLoss(reduction="none")
    assert loss.resolved_k(5) == 2
    ref = _ref(t, s, t.max(-1), 2)
    np.testing.assert_allclose(to_numpy(loss(t, s)), ref, rtol=1e-4, atol=1e-5)


def test_teacher_logits_and_bfloat16():
    t, s = _data()
    a = to_numpy(SLaMLoss(reduction="none")(t, s))
    b = to_numpy(
        SLaMLoss(teacher_from_logits=True, reduction="none")(np.log(t), s)
    )
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    c = to_numpy(
        SLaMLoss(reduction="none")(
            keras.ops.cast(t, "bfloat16"), keras.ops.cast(s, "bfloat16")
        )
    )
    assert np.all(np.isfinite(c))
    np.testing.assert_allclose(c, a, rtol=0.05, atol=0.05)


def test_harness():
    t, s = _data()
    est = _est()
    run_loss_test(lambda **kw: SLaMLoss(teacher_accuracy=est, **kw), t, s)


def test_errors():
    with pytest.raises(ValueError, match="`k`"):
        SLaMLoss(k=1)
    with pytest.raises(ValueError, match="coverage"):
        SLaMLoss(coverage=0.0)
    with pytest.raises(ValueError, match="target"):
        SLaMLoss(target="medium")
    with pytest.raises(ValueError, match="teacher_accuracy"):
        SLaMLoss(teacher_accuracy=0.9)
