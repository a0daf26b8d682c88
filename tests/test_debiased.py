import numpy as np
import pytest

from keras_efficient.losses import DebiasedDistillationLoss
from keras_efficient.losses import TeacherAccuracy
from tests.harness import run_loss_test
from tests.harness import to_numpy


def _est(c=5):
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(c) * 0.5, size=400)
    y = np.where(rng.random(400) < 0.6, p.argmax(-1), rng.integers(0, c, 400))
    return TeacherAccuracy().fit(p, y)


def _data(n=16, c=5, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.dirichlet(np.ones(c) * 0.5, size=n).astype("float32")
    s = rng.normal(size=(n, c)).astype("float32")
    return t, s


def _ce(t, s):
    s = s.astype("float64")
    logq = s - s.max(-1, keepdims=True)
    logq = logq - np.log(np.exp(logq).sum(-1, keepdims=True))
    return -(t * logq).sum(-1)


def test_weights_mean_one_on_pool_and_matches_reference():
    est = _est()
    pool, _ = _data(n=500, seed=5)
    loss = DebiasedDistillationLoss(
        est, pool_teacher_outputs=pool, reduction="none"
    )
    w_pool = to_numpy(loss.weights(pool))
    np.testing.assert_allclose(w_pool.mean(), 1.0, atol=1e-4)
    t, s = _data()
    w = est.predict_numpy(t) / est.predict_numpy(pool).mean()
    np.testing.assert_allclose(
        to_numpy(loss(t, s)), w * _ce(t, s), rtol=1e-4, atol=1e-5
    )


def test_normalizer_fixed_not_per_batch():
    est = _est()
    pool, _ = _data(n=500, seed=5)
    loss = DebiasedDistillationLoss(est, pool_teacher_outputs=pool)
    c = loss.normalizer
    t, s = _data(n=4)
    loss(t, s)
    assert loss.normalizer == c
    w = to_numpy(loss.weights(t))
    assert abs(w.mean() - 1.0) > 1e-3  # batch mean is not forced to 1


def test_power_floor_and_user_weights():
    est = _est()
    pool, _ = _data(n=500, seed=5)
    loss = DebiasedDistillationLoss(
        est, pool_teacher_outputs=pool, power=2.0, floor=0.3, reduction="none"
    )
    t, s = _data()
    raw = np.maximum(est.predict_numpy(t) ** 2, 0.3)
    c = np.maximum(est.predict_numpy(pool) ** 2, 0.3).mean()
    sw = np.linspace(0, 1, len(t)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(loss(t, s, sample_weight=sw)),
        sw * raw / c * _ce(t, s),
        rtol=1e-4,
        atol=1e-5,
    )


def test_harness_and_config():
    est = _est()
    pool, _ = _data(n=200, seed=5)
    t, s = _data()
    run_loss_test(
        lambda **kw: DebiasedDistillationLoss(
            est, pool_teacher_outputs=pool, **kw
        ),
        t,
        s,
    )
    loss = DebiasedDistillationLoss(est, pool_teacher_outputs=pool)
    loss2 = DebiasedDistillationLoss.from_config(loss.get_config())
    assert loss2.normalizer == loss.normalizer
    np.testing.assert_allclose(to_numpy(loss2(t, s)), to_numpy(loss(t, s)))


def test_errors():
    with pytest.raises(ValueError, match="power"):
        DebiasedDistillationLoss(power=0)
    with pytest.raises(ValueError, match="floor"):
        DebiasedDistillationLoss(floor=1.0)
    with pytest.raises(ValueError, match="pool_teacher_outputs"):
        DebiasedDistillationLoss(pool_teacher_outputs=np.zeros((3,)))


def test_no_normaliser_is_loud_and_per_batch_is_mean_one():
    est = _est()
    t, s = _data()
    with pytest.raises(ValueError, match="pool_teacher_outputs"):
        DebiasedDistillationLoss(est)(t, s)
    loss = DebiasedDistillationLoss(est, per_batch=True, reduction="none")
    w = to_numpy(loss.weights(t))
    np.testing.assert_allclose(w.mean(), 1.0, atol=1e-5)
    raw = est.predict_numpy(t)
    np.testing.assert_allclose(
        to_numpy(loss(t, s)),
        raw / raw.mean() * _ce(t, s),
        rtol=1e-4,
        atol=1e-5,
    )
    fixed = DebiasedDistillationLoss(est, normalizer=0.5, reduction="none")
    np.testing.assert_allclose(
        to_numpy(fixed(t, s)), raw / 0.5 * _ce(t, s), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError, match="per_batch"):
        DebiasedDistillationLoss(est, normalizer=0.5, per_batch=True)
    with pytest.raises(ValueError, match="y_true"):
        fixed(t.argmax(-1), s)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_teacher_logits_power_and_student_probabilities():
    est = _est()
    rng = np.random.default_rng(7)
    pool_logits = (2 * rng.normal(size=(300, 5))).astype("float32")
    t_logits = (2 * rng.normal(size=(16, 5))).astype("float32")
    s = rng.normal(size=(16, 5)).astype("float32")
    loss = DebiasedDistillationLoss(
        est,
        pool_teacher_outputs=pool_logits,
        power=0.5,
        teacher_from_logits=True,
        reduction="none",
    )
    c = (
        est.predict_numpy(_softmax(pool_logits.astype("float64"))) ** 0.5
    ).mean()
    t = _softmax(t_logits.astype("float64"))
    w = est.predict_numpy(t) ** 0.5 / c
    np.testing.assert_allclose(loss.normalizer, c, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(loss.weights(t_logits)), w, rtol=1e-5)
    np.testing.assert_allclose(
        to_numpy(loss(t_logits, s)), w * _ce(t, s), rtol=1e-4, atol=1e-5
    )
    # A student ending in softmax: y_pred holds probabilities.
    probs = DebiasedDistillationLoss(
        est, normalizer=0.8, from_logits=False, reduction="none"
    )
    q = _softmax(s.astype("float64"))
    t = t.astype("float32")
    np.testing.assert_allclose(
        to_numpy(probs(t, q.astype("float32"))),
        est.predict_numpy(t) / 0.8 * _ce(t, np.log(q)),
        rtol=1e-4,
        atol=1e-5,
    )


def test_bad_normalizer_zero_pool_weights_and_pool_width():
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="normalizer"):
            DebiasedDistillationLoss(normalizer=bad)
    pool, _ = _data(n=50, seed=5)
    never_right = TeacherAccuracy(knots_x=[0.0, 1.0], knots_y=[0.0, 0.0])
    with pytest.raises(ValueError, match="^The teacher-accuracy weights"):
        DebiasedDistillationLoss(never_right, pool_teacher_outputs=pool)
    floored = DebiasedDistillationLoss(
        never_right, pool_teacher_outputs=pool, floor=0.2
    )
    np.testing.assert_allclose(floored.normalizer, 0.2, rtol=1e-6)
    loss = DebiasedDistillationLoss(_est(), pool_teacher_outputs=pool)
    t, s = _data(c=4)
    with pytest.raises(ValueError, match="as many classes as the pool"):
        loss(t, s)


def test_config_keeps_power_floor_and_per_batch():
    loss = DebiasedDistillationLoss(
        _est(), power=2.0, floor=0.3, per_batch=True, reduction="none"
    )
    back = DebiasedDistillationLoss.from_config(loss.get_config())
    assert (back.power, back.floor, back.per_batch) == (2.0, 0.3, True)
    t, s = _data()
    raw = np.maximum(_est().predict_numpy(t) ** 2, 0.3)
    np.testing.assert_allclose(
        to_numpy(back(t, s)), raw / raw.mean() * _ce(t, s), rtol=1e-4
    )
