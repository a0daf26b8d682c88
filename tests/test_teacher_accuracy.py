import numpy as np
import pytest

from keras_efficient.distillation import _interpolation
from keras_efficient.losses import TeacherAccuracy
from tests.harness import to_numpy


def _val(n=400, c=6, acc=0.7, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(c) * 0.5, size=n)
    y = np.where(rng.random(n) < acc, p.argmax(-1), rng.integers(0, c, n))
    return p, y


def test_fit_monotone_clipped_and_graph_matches_numpy():
    p, y = _val()
    est = TeacherAccuracy().fit(p, y)
    assert np.all(np.diff(est.knots_y) >= 0)
    assert 0.0 <= min(est.knots_y) and max(est.knots_y) <= 1.0
    alpha = to_numpy(est(p.astype("float32")))
    np.testing.assert_allclose(alpha, est.predict_numpy(p), atol=1e-5)
    # top-k accuracies: increasing, exact for k=1 and k=C.
    acc1 = (p.argmax(-1) == y).mean()
    np.testing.assert_allclose(est.topk_accuracy[0], acc1)
    assert est.topk_accuracy[-1] == 1.0
    assert np.all(np.diff(est.topk_accuracy) >= 0)


def test_smallest_k_and_config_roundtrip():
    p, y = _val()
    est = TeacherAccuracy().fit(p, y)
    k = est.smallest_k(0.95)
    assert est.topk_accuracy[k - 1] >= 0.95
    assert k == 2 or est.topk_accuracy[k - 2] < 0.95
    est2 = TeacherAccuracy.from_config(est.get_config())
    np.testing.assert_allclose(
        to_numpy(est2(p.astype("float32"))), to_numpy(est(p.astype("float32")))
    )


def test_unfitted_is_top1_probability():
    p, _ = _val()
    np.testing.assert_allclose(
        to_numpy(TeacherAccuracy()(p.astype("float32"))), p.max(-1), atol=1e-6
    )


def test_from_logits_equals_probs():
    p, y = _val()
    a = TeacherAccuracy().fit(p, y)
    b = TeacherAccuracy().fit(np.log(p), y, from_logits=True)
    np.testing.assert_allclose(a.knots_y, b.knots_y, atol=1e-9)


def test_report_ece():
    p, y = _val()
    est = TeacherAccuracy().fit(p, y)
    rep = est.report(p, y)
    assert sum(b["count"] for b in rep["bins"]) == len(y)
    conf, correct = p.max(-1), (p.argmax(-1) == y)
    edges = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, 9)
    ece = sum(
        (idx == b).mean()
        * abs(conf[idx == b].mean() - correct[idx == b].mean())
        for b in range(10)
        if (idx == b).any()
    )
    np.testing.assert_allclose(rep["ece"], ece, atol=1e-9)
    # Isotonic fit on the same data is better calibrated than raw confidence.
    assert rep["ece_estimator"] < rep["ece"]


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    p, y = _val()
    est = TeacherAccuracy().fit(p, y)
    est.plot(p, y, path=tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 0


def test_errors():
    p, y = _val()
    with pytest.raises(ValueError, match="no wrong"):
        TeacherAccuracy().fit(p, p.argmax(-1))
    with pytest.raises(ValueError, match="no right"):
        TeacherAccuracy().fit(p, (p.argmax(-1) + 1) % p.shape[1])
    with pytest.raises(ValueError, match="labels"):
        TeacherAccuracy().fit(p, np.full(len(p), 6))
    with pytest.raises(ValueError, match="same length"):
        TeacherAccuracy().fit(p, y[:-1])
    with pytest.raises(ValueError, match="coverage"):
        TeacherAccuracy().smallest_k(1.5)


@pytest.mark.parametrize("num_knots", [1, 2, 17, 300])
def test_interpolate_tables_matches_searchsorted_path(num_knots):
    """The compare-and-gather path (<= 128 knots) and the searchsorted one
    give the same values, with repeated knots and margins out of range."""
    rng = np.random.default_rng(num_knots)
    tables = []
    for n in (num_knots, max(1, num_knots // 2)):
        xs = np.sort(rng.uniform(0, 1, n)).astype("float32")
        if n > 3:
            xs[2] = xs[1]  # a jump
        ys = np.sort(rng.uniform(0, 1, n))
        tables.append((xs.tolist(), ys.tolist()))
    margin = rng.uniform(-0.2, 1.2, size=(4, 50)).astype("float32")
    got = to_numpy(_interpolation.interpolate_tables(tables, margin))
    assert got.shape == (4, 50, 2)
    for j, (xs, ys) in enumerate(tables):
        xs, ys = _interpolation._padded(xs, ys)
        expected = np.interp(margin, xs, ys)
        np.testing.assert_allclose(got[..., j], expected, atol=1e-5)
        search = to_numpy(_interpolation._interpolate_search(xs, ys, margin))
        np.testing.assert_allclose(got[..., j], search, atol=1e-6)
