import inspect
import warnings

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


def _khot(t, k):
    """Exactly k per row, ties to the lowest class index (NumPy)."""
    order = np.argsort(-t, axis=-1, kind="stable")
    out = np.zeros(t.shape, bool)
    for i, kk in enumerate(np.broadcast_to(k, (len(t),))):
        out[i, order[i, :kk]] = True
    return out


def _example_k(est, t, coverage=0.95):
    """The paper's k(x) as we estimate it: per-example top-k accuracy."""
    m = np.sort(t, -1)[:, -1] - np.sort(t, -1)[:, -2]
    kmax = min(t.shape[1], len(est.topk_knots) + 1)
    best = np.zeros(len(t))
    k = np.full(len(t), 2)
    for kk in range(2, kmax):
        xs, ys = est.topk_knots[kk - 2]
        best = np.maximum(best, np.interp(m, xs, ys))
        k += best < coverage
    return k


def _ref(t, s, alpha, k, normalize=False, hard=False, min_alpha=None):
    """SLaM's formula in float64 linear space (no clip)."""
    f = _softmax(s.astype("float64"))
    k = np.broadcast_to(np.asarray(k), (len(t),))
    topk = _khot(t, k).astype("float64")
    norm = (k - 1)[:, None] if normalize else 1.0
    bound = 1.0 / k if normalize else np.full(len(t), 0.5)
    floor = bound + (0.05 if min_alpha is None else 1e-3)
    if min_alpha is not None:
        floor = np.maximum(floor, min_alpha)
    a = np.maximum(alpha, np.minimum(floor, 1.0))[:, None]
    mix = a * f + (1 - a) * (1 - f) * topk / norm
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
    kk = _example_k(est, t) if k is None else k
    alpha = est.predict_numpy(t)
    ref = _ref(t, s, alpha, kk, normalize, target == "hard")
    np.testing.assert_allclose(to_numpy(loss(t, s)), ref, rtol=1e-4, atol=1e-5)


def test_default_no_arguments():
    t, s = _data()
    loss = SLaMLoss(reduction="none")
    assert loss.resolved_k(5) == 2
    ref = _ref(t, s, t.max(-1).astype("float64"), 2)
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
    with pytest.raises(ValueError, match="`k`"):
        SLaMLoss(k="local")
    with pytest.raises(ValueError, match="coverage"):
        SLaMLoss(coverage=0.0)
    with pytest.raises(ValueError, match="target"):
        SLaMLoss(target="medium")
    with pytest.raises(ValueError, match="teacher_accuracy"):
        SLaMLoss(teacher_accuracy=0.9)


def test_per_example_k_varies_and_matches_reference():
    rng = np.random.default_rng(5)
    c = 8
    p = rng.dirichlet(np.ones(c) * 0.3, size=600)
    order = np.argsort(-p, -1)
    m = np.sort(p, -1)[:, -1] - np.sort(p, -1)[:, -2]
    # Wrong labels: the runner-up on confident rows, anything on the rest.
    wrong = np.where(m > np.median(m), order[:, 1], rng.integers(0, c, 600))
    y = np.where(rng.random(600) < 0.6, order[:, 0], wrong)
    est = TeacherAccuracy().fit(p, y)
    t = rng.dirichlet(np.ones(c) * 0.3, size=64).astype("float32")
    s = rng.normal(size=(64, c)).astype("float32")
    loss = SLaMLoss(est, reduction="none")
    k = to_numpy(loss.example_k(keras.ops.convert_to_tensor(t)))
    np.testing.assert_array_equal(k, _example_k(est, t))
    assert len(np.unique(k)) > 1  # k(x), not one global k
    ref = _ref(t, s, est.predict_numpy(t), k)
    np.testing.assert_allclose(to_numpy(loss(t, s)), ref, rtol=1e-4, atol=1e-5)
    glob = SLaMLoss(est, k="global", reduction="none")
    ref = _ref(t, s, est.predict_numpy(t), glob.resolved_k(c))
    np.testing.assert_allclose(to_numpy(glob(t, s)), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("normalize", [False, True])
def test_alpha_floor_keeps_gradient_towards_teacher(normalize):
    # alpha = 0.3 (a poor teacher): below the bound the loss would push the
    # student away from the teacher's label; the floor keeps it towards.
    t = np.array([[0.05, 0.6, 0.35]], "float32")
    est = TeacherAccuracy(knots_x=[0.0, 1.0], knots_y=[0.3, 0.3])
    loss = SLaMLoss(est, k=2, normalize=normalize, target="hard")
    s = np.zeros((1, 3), "float32")
    eps = 1e-3
    up = s.copy()
    up[0, 1] += eps
    d = (to_numpy(loss(t, up)) - to_numpy(loss(t, s))) / eps
    assert d < -1e-3  # raising the teacher's class lowers the loss
    with pytest.raises(ValueError, match="min_alpha"):
        SLaMLoss(min_alpha=0.0)


def test_ties_give_exactly_k():
    t = np.array([[0.3, 0.3, 0.3, 0.1]], "float32")
    got = to_numpy(
        __import__(
            "keras_efficient.distillation._common", fromlist=["khot"]
        ).khot(keras.ops.convert_to_tensor(t), np.array([2]), 2)
    )
    np.testing.assert_array_equal(got, [[True, True, False, False]])
    s = np.random.default_rng(0).normal(size=(1, 4)).astype("float32")
    est = TeacherAccuracy(knots_x=[0.0, 1.0], knots_y=[0.8, 0.8])
    got = to_numpy(SLaMLoss(est, k=2, reduction="none")(t, s))
    np.testing.assert_allclose(got, _ref(t, s, np.array([0.8]), 2), rtol=1e-5)


def test_no_class_loses_its_gradient():
    # A clip at eps zeroed gradients on classes with teacher mass where
    # alpha * f < eps; the log-space mixture keeps them.
    t = np.array([[0.5, 0.3, 0.2]], "float32")
    s = np.array([[20.0, 0.0, -20.0]], "float32")
    est = TeacherAccuracy(knots_x=[0.0, 1.0], knots_y=[0.9, 0.9])
    loss = SLaMLoss(est, k=2)
    eps = 1e-2
    up = s.copy()
    up[0, 2] += eps
    d = (to_numpy(loss(t, up)) - to_numpy(loss(t, s))) / eps
    assert d < -0.1  # class 2 (outside top-2, teacher mass 0.2) still pulls


def test_conventions_are_loud():
    t, s = _data()
    with pytest.raises(ValueError, match="y_true"):
        SLaMLoss()(t.argmax(-1), s)
    with pytest.raises(ValueError, match="y_true"):
        SLaMLoss()(t.argmax(-1)[:, None], s)
    probs = _softmax(s.astype("float64")).astype("float32")
    with pytest.raises(ValueError, match="from_logits=False"):
        SLaMLoss()(t, probs)
    got = to_numpy(SLaMLoss(from_logits=False, reduction="none")(t, probs))
    ref = to_numpy(SLaMLoss(reduction="none")(t, s))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    bad = t.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"rows \[3\]"):
        SLaMLoss()(bad, s)


@pytest.mark.parametrize("pairwise", [True, False])
def test_khot_and_margin_paths_match_numpy(monkeypatch, pairwise):
    """The sort-free (pairwise) k-hot and the `top_k` one agree with NumPy."""
    from keras_efficient.distillation import _common

    if not pairwise:
        monkeypatch.setattr(_common, "_PAIRWISE_MAX_CLASSES", 0)
    rng = np.random.default_rng(3)
    # Rounded probabilities make ties at and around the k-th value common.
    t = np.round(rng.dirichlet(np.ones(7), size=64), 1).astype("float32")
    k = rng.integers(1, 8, size=64)
    got = to_numpy(_common.khot(keras.ops.convert_to_tensor(t), k, 7))
    expected = np.stack([_khot(t[i : i + 1], k[i])[0] for i in range(64)])
    np.testing.assert_array_equal(got, expected)
    assert (got.sum(-1) == k).all()
    top2 = np.sort(t, -1)[:, -2:]
    np.testing.assert_allclose(
        to_numpy(_common.margin(keras.ops.convert_to_tensor(t))),
        top2[:, 1] - top2[:, 0],
    )


def test_legacy_epsilon_is_dropped_on_load():
    """0.1.0 configs carry `epsilon=1e-7` (unused since the log-space
    mixture): they load silently; another value loads with a warning; the
    argument itself is gone from the signature and the config."""
    assert "epsilon" not in inspect.signature(SLaMLoss).parameters
    config = SLaMLoss(k=3).get_config()
    assert "epsilon" not in config
    t, s = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old = SLaMLoss.from_config({**config, "epsilon": 1e-7})
    np.testing.assert_allclose(
        to_numpy(old(t, s)), to_numpy(SLaMLoss(k=3)(t, s)), rtol=1e-6
    )
    with pytest.warns(UserWarning, match="epsilon=0.01"):
        SLaMLoss.from_config({**config, "epsilon": 0.01})
    with pytest.raises(TypeError, match="epsilon"):
        SLaMLoss(epsilon=1e-7)


def test_alpha_without_margin_uses_the_fitted_estimator():
    """`alpha(t, k)` with no margin reads the fitted estimator, not the
    unfitted top-1 fallback."""
    est = _est()
    t, _ = _data()
    loss = SLaMLoss(teacher_accuracy=est, normalize=False)
    alpha = to_numpy(loss.alpha(keras.ops.convert_to_tensor(t), 2))
    expected = np.clip(np.maximum(est.predict_numpy(t), 0.55), 0.0, 1.0)
    np.testing.assert_allclose(alpha, expected, atol=1e-5)
    assert not np.allclose(expected, np.maximum(t.max(-1), 0.55))


def test_config_keeps_min_alpha_and_k_is_capped_at_classes():
    loss = SLaMLoss(k=5, min_alpha=0.7)
    assert SLaMLoss.from_config(loss.get_config()).min_alpha == 0.7
    assert loss.resolved_k(3) == 3
    assert loss.resolved_k(8) == 5
    assert loss.resolved_k() == 5


def test_first_reaching_hand_computed():
    from keras_efficient.distillation._interpolation import first_reaching

    xs, ys = [0.0, 0.2, 0.6, 1.0], [0.5, 0.9, 0.97, 1.0]
    # Crosses 0.95 inside (0.2, 0.6): 0.2 + (0.05 / 0.07) * 0.4.
    assert first_reaching(xs, ys, 0.95) == pytest.approx(0.2 + 0.4 * 5 / 7)
    assert first_reaching(xs, ys, 0.9) == pytest.approx(0.2)  # at a knot
    assert first_reaching(xs, ys, 0.4) == -np.inf  # from the start
    assert first_reaching(xs, ys, 1.0) == pytest.approx(1.0)
    assert first_reaching([0.0, 1.0], [0.2, 0.3], 0.95) == np.inf  # never
    # A jump at a repeated knot: reached at the knot itself.
    assert (
        first_reaching([0.0, 0.3, 0.3, 1.0], [0.1, 0.2, 0.99, 1.0], 0.95) == 0.3
    )
    assert first_reaching([0.5], [0.96], 0.95) == -np.inf  # one knot
    assert first_reaching([0.0, 1.0], [0.9, 0.8], 0.5) is None  # decreasing


def _fitted_estimator(seed=5, c=8):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(c) * 0.3, size=600)
    order = np.argsort(-p, -1)
    m = np.sort(p, -1)[:, -1] - np.sort(p, -1)[:, -2]
    # Wrong labels: the runner-up on confident rows, anything on the rest.
    wrong = np.where(m > np.median(m), order[:, 1], rng.integers(0, c, 600))
    y = np.where(rng.random(600) < 0.6, order[:, 0], wrong)
    return TeacherAccuracy().fit(p, y)


def test_example_k_from_coverage_margins_matches_interpolation():
    """k(x) compares the margin with each map's coverage point; the same
    k as interpolating every map, at margins spread over [0, 1] and at
    every knot (the points where the two could part)."""
    from keras_efficient.distillation import slam

    est = _fitted_estimator()
    seen = set()
    for coverage in (0.8, 0.95, 0.99):
        loss = SLaMLoss(est, coverage=coverage)
        kmax = min(8, len(est.topk_knots) + 1)
        assert loss._coverage_margins(kmax) is not None
        knots = np.concatenate([xs for xs, _ in est.topk_knots])
        m = np.concatenate([np.linspace(0, 1, 401), knots]).astype("float32")
        t = np.zeros((len(m), 8), "float32")
        t[:, 0], t[:, 1] = (1 + m) / 2, (1 - m) / 2  # margin m, 2 classes
        margin = keras.ops.convert_to_tensor(m)
        k = to_numpy(loss.example_k(t, margin))
        acc = slam._interpolation.interpolate_tables(
            est.topk_knots[: kmax - 2], margin
        )
        expected = 2 + to_numpy(slam._leading_below(acc, coverage))
        np.testing.assert_array_equal(k, expected)
        seen.update(np.unique(k).tolist())
    assert len(seen) > 3  # k(x) spans several values over the coverages


def test_example_k_with_a_decreasing_map_interpolates():
    """A hand-made map that decreases has no single coverage point: k(x)
    interpolates it and keeps the running best (the first k reaching
    coverage)."""
    est = TeacherAccuracy(
        knots_x=[0.0, 1.0],
        knots_y=[0.5, 1.0],
        topk_accuracy=[0.7, 0.9, 0.95, 1.0],
        topk_knots=[
            [[0.0, 0.5, 1.0], [0.9, 0.97, 0.9]],  # up, then down
            [[0.0, 1.0], [0.8, 0.99]],
            [[0.0, 1.0], [0.99, 1.0]],
        ],
    )
    loss = SLaMLoss(est, coverage=0.95)
    assert loss._coverage_margins(4) is None  # reads the first two maps
    m = np.array([0.1, 0.4, 0.9, 1.0], "float32")
    t = np.zeros((4, 4), "float32")
    t[:, 0], t[:, 1] = (1 + m) / 2, (1 - m) / 2
    k = to_numpy(loss.example_k(t, keras.ops.convert_to_tensor(m)))
    # Top-2 accuracy at m: 0.916, 0.958, 0.928, 0.9 (reaches 0.95 only at
    # 0.4); top-3: 0.819, 0.876, 0.971, 0.99 (reaches from ~0.79 on).
    np.testing.assert_array_equal(k, [4, 2, 3, 3])
