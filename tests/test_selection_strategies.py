import importlib
import sys

import keras
import numpy as np
import pytest
from scipy.optimize import linprog

from keras_efficient.distillation import active
from keras_efficient.distillation.active import CoresetSelection
from keras_efficient.distillation.active import EntropySelection
from keras_efficient.distillation.active import MarginSelection
from keras_efficient.distillation.active import RobustSelection
from keras_efficient.distillation.active import SelectionContext as Ctx
from keras_efficient.distillation.active import SleepingExpertsSelection
from keras_efficient.distillation.active import UniformSelection
from keras_efficient.distillation.active import robust_marginals


def _probs(n, c=4, seed=0):
    return np.random.default_rng(seed).dirichlet(np.ones(c) * 0.7, size=n)


def _lp_maxmin(g, b, m):
    # max sum g p - m t - sum u  s.t. u_i >= g_i p_i - t, u >= 0, sum p = b.
    n = len(g)
    c = np.concatenate([-g, [m], np.ones(n)])
    a_ub = np.hstack([np.diag(g), -np.ones((n, 1)), -np.eye(n)])
    a_eq = np.concatenate([np.ones(n), [0], np.zeros(n)])[None]
    bounds = [(0, 1)] * n + [(0, None)] + [(0, None)] * n
    res = linprog(
        c,
        A_ub=a_ub,
        b_ub=np.zeros(n),
        A_eq=a_eq,
        b_eq=[b],
        bounds=bounds,
        method="highs",
    )
    assert res.status == 0
    return -res.fun


def _worst(p, g, m):
    v = np.sort(p * g)
    return v.sum() - (v[len(v) - m :].sum() if m else 0.0)


@pytest.mark.parametrize("seed", range(24))
def test_robust_matches_lp_optimum(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    b = int(rng.integers(1, n + 1))
    m = int(rng.integers(0, n))
    g = rng.random(n)
    if seed % 3 == 1:
        g = g**4  # skewed gains
    elif seed % 3 == 2:
        g = np.round(g * 4) / 4  # ties and zero gains
    p, val = robust_marginals(g, b, m)
    assert abs(p.sum() - b) < 1e-9
    assert p.min() >= 0.0 and p.max() <= 1.0
    lp = _lp_maxmin(g, b, m)
    assert abs(_worst(p, g, m) - lp) < 1e-6 * max(1, lp)
    assert abs(val - lp) < 1e-6 * max(1, lp)


def test_robust_water_filling_structure():
    # Equal p_i g_i on a top set: p_i = t / g_i there.
    g = np.random.default_rng(0).random(200)
    p, _ = robust_marginals(g, 20, 5)
    top = p * g > 1e-9
    levels = (p * g)[top & (p < 1 - 1e-9)]
    assert levels.max() - levels.min() < 1e-9 * max(1, levels.max())
    assert top.sum() > 20  # spread beyond the greedy top b


def test_robust_large_pool_exact_and_fast_enough():
    g = np.random.default_rng(1).random(100_000) ** 2
    p, val = robust_marginals(g, 1000, 150)
    assert abs(p.sum() - 1000) < 1e-6 and 0 <= p.min() and p.max() <= 1
    # No feasible perturbation does better: moving mass between two points
    # (one of the top set, one outside) cannot raise the worst case.
    order = np.argsort(-g)
    for i, j in [(order[0], order[5000]), (order[10], order[-1])]:
        for eps in (1e-3, -1e-3):
            q = p.copy()
            q[i] += eps
            q[j] -= eps
            if 0 <= q.min() and q.max() <= 1:
                assert _worst(q, g, 150) <= val + 1e-9


def test_robust_argument_errors():
    with pytest.raises(ValueError, match="num_spoiled"):
        robust_marginals(np.ones(4), 2, -1)
    with pytest.raises(ValueError, match="`b`"):
        robust_marginals(np.ones(4), 5, 1)


def test_robust_no_spoiling_is_greedy_and_spoiling_spreads():
    g = np.array([0.9, 0.8, 0.7, 0.1, 0.05])
    p, _ = robust_marginals(g, 2, 0)
    np.testing.assert_allclose(p, [1, 1, 0, 0, 0], atol=1e-9)
    p, _ = robust_marginals(g, 2, 1)
    assert np.count_nonzero(p > 1e-9) >= 3  # mass spread over a top set


def test_robust_select_is_b_distinct():
    s = RobustSelection(teacher_accuracy=0.7)
    idx = s.select(Ctx(_probs(500), rng=0), 50)
    assert len(np.unique(idx)) == 50


def test_margin_entropy_uniform():
    p = np.array([[0.9, 0.1], [0.52, 0.48], [0.6, 0.4], [0.99, 0.01]])
    assert MarginSelection().select(p, 2).tolist() == [1, 2]
    assert EntropySelection().select(p, 2).tolist() == [1, 2]
    u = UniformSelection().select(Ctx(_probs(100), rng=0), 10)
    assert len(np.unique(u)) == 10
    counts = np.zeros(20)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        ctx = Ctx(np.ones((20, 2)) / 2, rng=rng)
        counts[UniformSelection().select(ctx, 5)] += 1
    np.testing.assert_allclose(counts / 2000, 0.25, atol=0.05)


def _reference_k_center(x, b, first=None, centers=None):
    # Textbook greedy k-center, float64, one distance column per pick.
    x = np.asarray(x, np.float64)
    mind = np.full(len(x), np.inf)
    chosen = []
    if centers is not None:
        for c in centers:
            mind = np.minimum(mind, ((x - c) ** 2).sum(1))
    else:
        chosen.append(first)
        mind = np.minimum(mind, ((x - x[first]) ** 2).sum(1))
        mind[first] = -1
    while len(chosen) < b:
        j = int(np.argmax(mind))
        chosen.append(j)
        mind = np.minimum(mind, ((x - x[j]) ** 2).sum(1))
        mind[chosen] = -1
    return sorted(chosen)


def test_coreset_matches_reference_k_center():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)).astype("float32")
    first = int(np.random.default_rng(3).integers(500))
    idx = CoresetSelection().select(Ctx(x, rng=3), 40)
    assert idx.tolist() == _reference_k_center(x, 40, first=first)
    centers = rng.normal(size=(30, 6)).astype("float32")
    idx = CoresetSelection(batch_size=64).select(
        Ctx(np.zeros((500, 2)), embeddings=x, centers=centers), 25
    )
    assert idx.tolist() == _reference_k_center(x, 25, centers=centers)


def test_coreset_k_center():
    rng = np.random.default_rng(0)
    clusters = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    x = np.concatenate([c + 0.1 * rng.normal(size=(50, 2)) for c in clusters])
    idx = CoresetSelection().select(Ctx(x, rng=0, centers=clusters[:1]), 3)
    assert sorted(set(i // 50 for i in idx)) == [1, 2, 3]
    # A large pool with many centers (blocked distances), duplicates.
    big = rng.normal(size=(20000, 8)).astype("float32")
    big[1000:1100] = big[0]
    idx = CoresetSelection(batch_size=4096).select(
        Ctx(big, rng=0, centers=big[:3000:7]), 50
    )
    assert len(np.unique(idx)) == 50
    with pytest.raises(ValueError, match="centers"):
        CoresetSelection().select(Ctx(big, centers=np.zeros((2, 3))), 5)
    with pytest.raises(ValueError, match="batch_size"):
        CoresetSelection(batch_size=0)


def test_sleeping_experts_tracks_best_and_beats_uniform():
    rng = np.random.default_rng(0)
    n, b, rounds = 400, 10, 15
    means = rng.beta(0.5, 2.0, size=n)
    awake = {k: np.ones(n, bool) for k in ("se", "uni", "best")}
    gains = {k: 0.0 for k in awake}
    se = SleepingExpertsSelection()
    order = np.argsort(-means)
    for t in range(rounds):
        obs = np.clip(means + 0.15 * rng.normal(size=n), 0, 1)
        # Two-class "probabilities" whose 1 - margin is the observation.
        probs = np.stack([0.5 + (1 - obs) / 2, 0.5 - (1 - obs) / 2], 1)
        ids = np.flatnonzero(awake["se"])
        pick = ids[se.select(Ctx(probs[ids], indices=ids, rng=rng), b)]
        gains["se"] += obs[pick].sum()
        awake["se"][pick] = False
        ids = np.flatnonzero(awake["uni"])
        pick = rng.choice(ids, b, replace=False)
        gains["uni"] += obs[pick].sum()
        awake["uni"][pick] = False
        pick = order[t * b : (t + 1) * b]  # best fixed choice in hindsight
        gains["best"] += obs[pick].sum()
    assert gains["se"] > 1.5 * gains["uni"]
    assert gains["se"] > 0.75 * gains["best"]


def test_errors_and_registry():
    with pytest.raises(ValueError, match="Unknown selection strategy"):
        active.get("nope")
    with pytest.raises(ValueError, match="`num_points`"):
        MarginSelection().select(_probs(5), 6)
    with pytest.raises(ValueError, match="teacher_accuracy"):
        RobustSelection(teacher_accuracy=1.5)
    for name in active.STRATEGIES:
        s = active.get(name)
        cfg = keras.saving.serialize_keras_object(s)
        s2 = keras.saving.deserialize_keras_object(cfg)
        assert type(s2) is type(s)
        assert s2.get_config() == s.get_config()


def test_selection_alias_warns_and_names_the_new_home():
    """`keras_efficient.selection` (the 0.1.0 home) still gives every name,
    the same objects, and warns in a way users see (a FutureWarning)."""
    sys.modules.pop("keras_efficient.selection", None)
    with pytest.warns(
        FutureWarning, match="keras_efficient.distillation.active"
    ):
        alias = importlib.import_module("keras_efficient.selection")
    for name in alias.__all__:
        assert getattr(alias, name) is getattr(active, name)


def _reference_lowest(scores, b):
    # The b smallest scores, ties to the lower index (a stable order).
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    return sorted(order[:b])


def test_lowest_score_ties_go_to_the_lower_index():
    # Three distinct rows repeated: every score is tied 20 ways, and the
    # cut at b=25 falls inside a tie group. A non-stable sort keeps an
    # arbitrary subset of that group.
    rows = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.5, 0.3, 0.2]])
    p = rows[np.random.default_rng(0).permutation(np.repeat([0, 1, 2], 20))]
    top2 = np.sort(p, axis=1)[:, ::-1]
    margin = top2[:, 0] - top2[:, 1]
    assert MarginSelection().select(p, 25).tolist() == _reference_lowest(
        margin.tolist(), 25
    )
    neg_entropy = (p * np.log(p)).sum(axis=1)
    assert EntropySelection().select(p, 25).tolist() == _reference_lowest(
        neg_entropy.tolist(), 25
    )


def test_entropy_of_rows_with_zero_probabilities():
    # 0 * log 0 counts as 0: a zero entry must not make the score NaN.
    p = np.array([[0.9, 0.05, 0.05], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    expected = np.array([0.9 * np.log(0.9) + 0.1 * np.log(0.05), np.log(0.5)])
    scores = EntropySelection().scores(p)
    np.testing.assert_allclose(scores, [*expected, 0.0], rtol=1e-12, atol=0)
    # The most uncertain row is the one with a zero entry.
    assert EntropySelection().select(p, 1).tolist() == [1]


@pytest.mark.parametrize("num_points", [-1, 6])
def test_num_points_errors_name_the_argument(num_points):
    ctx = Ctx(_probs(5), teacher_accuracy=0.8, rng=0)
    strategies = [
        UniformSelection(),
        EntropySelection(),
        RobustSelection(),
        RobustSelection(teacher_accuracy=0.9),
    ]
    for strategy in strategies:
        with pytest.raises(ValueError, match="`num_points` must be"):
            strategy.select(ctx, num_points)
    with pytest.raises(ValueError, match="`num_points` must be"):
        RobustSelection().marginals(ctx, num_points)
