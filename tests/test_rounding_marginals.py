"""Reference tests for the marginals of distillation/active/rounding.py.

Each oracle is computed here without the code under test: water-filling by
bisection on the scale `c` of `min(1, c * w)`, the max-min value by a
linear program (scipy's HiGHS).
"""

import numpy as np
import pytest
from scipy.optimize import linprog

from keras_efficient.distillation.active import dependent_rounding
from keras_efficient.distillation.active import robust_marginals
from keras_efficient.distillation.active.rounding import capped_proportional


def _water_fill_reference(w, b):
    w = np.maximum(np.asarray(w, dtype=np.float64), 0.0)
    p = np.zeros(len(w))
    if b == 0:
        return p
    nonzero = np.flatnonzero(w > 0)
    if len(nonzero) <= b:
        # Every weighted point, then the lowest-index zero-weight ones.
        zeros = np.flatnonzero(w == 0)[: b - len(nonzero)]
        p[nonzero] = 1.0
        p[zeros] = 1.0
        return p
    lo, hi = 0.0, b / w[nonzero].min()
    for _ in range(200):
        c = (lo + hi) / 2
        lo, hi = (c, hi) if np.minimum(1.0, c * w).sum() < b else (lo, c)
    return np.minimum(1.0, hi * w)


@pytest.mark.parametrize("seed", range(6))
def test_capped_proportional_matches_water_filling(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 40))
    w = rng.random(n) ** (1 + 3 * (seed % 2))  # skewed: some caps
    if seed % 3 == 2:
        w = np.round(w * 3) / 3  # ties and zeros
    for b in sorted({0, 1, n // 3, n - 1, n}):
        p = capped_proportional(w, b)
        ref = _water_fill_reference(w, b)
        np.testing.assert_allclose(p, ref, atol=1e-9, rtol=0)
        assert abs(p.sum() - b) < 1e-9
        # Capped marginals are exactly 1, not 1 - ulp.
        np.testing.assert_array_equal(p[ref >= 1.0 - 1e-9], 1.0)


def test_capped_proportional_exact_ones_and_zero_weight_ties():
    # 49 * (1 / 49) is 1 - 2**-53 in float64: the weighted points must
    # still get exactly 1.
    p = capped_proportional(np.array([100.0, 49.0, 0.0, 0.0]), 2)
    np.testing.assert_array_equal(p, [1.0, 1.0, 0.0, 0.0])
    # Fewer weighted points than b: the rest go to the lowest-index
    # zero-weight points (a stable order, the same on every platform).
    w = np.r_[np.zeros(30), 1.0, 2.0]
    p = capped_proportional(w, 5)
    np.testing.assert_array_equal(np.flatnonzero(p), [0, 1, 2, 30, 31])
    np.testing.assert_array_equal(p, _water_fill_reference(w, 5))
    # Negative weights count as 0.
    p = capped_proportional(np.array([-1.0, 3.0, 1.0]), 1)
    np.testing.assert_allclose(p, [0.0, 0.75, 0.25], atol=1e-12)


def test_capped_proportional_float32_weights_sum_exactly():
    # Softmax scores arrive as float32; the marginals must still sum to b
    # to 1e-9 (dependent_rounding refuses a sum 1e-6 off an integer).
    w = np.random.default_rng(0).random(2000).astype(np.float32)
    p = capped_proportional(w, 500)
    assert abs(p.sum() - 500) < 1e-9
    ref = _water_fill_reference(w.astype(np.float64), 500)
    np.testing.assert_allclose(p, ref, atol=1e-9, rtol=0)


def _lp_maxmin(g, b, m):
    # max sum g p - m t - sum u  s.t. u_i >= g_i p_i - t, u >= 0, sum p = b.
    n = len(g)
    c = np.concatenate([-g, [m], np.ones(n)])
    a_ub = np.hstack([np.diag(g), -np.ones((n, 1)), -np.eye(n)])
    a_eq = np.concatenate([np.ones(n), [0], np.zeros(n)])[None]
    bounds = [(0, 1)] * n + [(0, None)] + [(0, None)] * n
    res = linprog(
        c, A_ub=a_ub, b_ub=np.zeros(n), A_eq=a_eq, b_eq=[b], bounds=bounds
    )
    assert res.status == 0
    return -res.fun


def _worst(p, g, m):
    v = np.sort(p * g)
    return v.sum() - (v[len(v) - m :].sum() if m else 0.0)


def test_robust_value_matches_lp_on_many_small_pools():
    # Many small pools (skewed, tied and zero gains, float32 gains, m up
    # to n): each breakpoint kind of the dual is the optimum somewhere.
    rng = np.random.default_rng(0)
    for case in range(300):
        n = int(rng.integers(1, 30))
        b = int(rng.integers(0, n + 1))
        m = min(int(rng.integers(0, n + 2)), n)
        g = rng.random(n)
        if case % 4 == 1:
            g = g**4
        elif case % 4 == 2:
            g = np.round(g * 3) / 3
        elif case % 4 == 3:
            g = g.astype(np.float32)
        p, value = robust_marginals(g, b, m)
        g64 = np.asarray(g, dtype=np.float64)
        assert abs(p.sum() - b) < 1e-9, case
        assert p.min() >= 0.0 and p.max() <= 1.0, case
        lp = _lp_maxmin(g64, b, m) if b else 0.0
        assert abs(_worst(p, g64, m) - lp) < 1e-7 * max(1, lp), case
        assert abs(value - lp) < 1e-7 * max(1, lp), case


def test_robust_num_spoiled_error_names_the_argument():
    with pytest.raises(
        ValueError, match=r"^`num_spoiled` must .*Received: num_spoiled=-1$"
    ):
        robust_marginals(np.ones(4), 2, -1)


def test_dependent_rounding_flattens_fractional_2d_marginals():
    p = np.array([0.3, 0.4, 0.6, 0.2, 0.5, 0.7, 0.35, 0.65, 0.15, 0.15])
    for seed in range(10):
        np.testing.assert_array_equal(
            dependent_rounding(p.reshape(2, 5), seed),
            dependent_rounding(p, seed),
        )


def test_dependent_rounding_range_tolerance_and_message():
    # Entries off [0, 1] by at most 1e-9 are accepted (and clipped).
    idx = dependent_rounding([-1e-9, 0.5, 0.5 + 1e-9], rng=0)
    assert len(idx) == 1 and idx[0] in (1, 2)
    idx = dependent_rounding([1 + 1e-9, 0.5, 0.5 - 1e-9], rng=0)
    assert len(idx) == 2 and idx[0] == 0
    with pytest.raises(
        ValueError,
        match=r"^`marginals` must lie in \[0, 1\]\. Received: min=-0\.5, "
        r"max=1\.5$",
    ):
        dependent_rounding([1.5, -0.5])


def test_robust_top_set_holding_all_mass_keeps_the_fractional_point():
    # b=1, m=2: the optimum spreads the mass over the top three gains
    # {1, 1, 0.6} with equal p_i g_i = t and t (2 + 5/3) = 1, so t = 3/11
    # and the worst case (two of three spoiled) is t. Adding the 0.2
    # point would give 2 t' with t' (2 + 5/3 + 5) = 1, i.e. 6/26 < 3/11.
    g = np.array([0.2, 1.0, 1.0, 0.6])
    p, value = robust_marginals(g, 1, 2)
    np.testing.assert_allclose(p, [0.0, 3 / 11, 3 / 11, 5 / 11], atol=1e-12)
    assert abs(value - 3 / 11) < 1e-12
    assert abs(value - _lp_maxmin(g, 1, 2)) < 1e-9


def test_robust_ties_break_by_pool_order():
    # m=0 is the greedy top b; among tied gains the lowest pool indices
    # win (a stable order, the same on every platform).
    rng = np.random.default_rng(0)
    g = rng.integers(0, 3, 258) / 2.0
    b = int(np.count_nonzero(g == 1.0)) + 1
    expected = np.zeros(len(g))
    expected[g == 1.0] = 1.0
    expected[np.flatnonzero(g == 0.5)[0]] = 1.0
    p, value = robust_marginals(g, b, 0)
    np.testing.assert_array_equal(p, expected)
    assert value == (expected * g).sum()


@pytest.mark.parametrize("seed", range(4))
def test_robust_float16_gains_solved_in_float64(seed):
    # Half-precision gains (mixed-precision models) are solved in float64:
    # the value is the LP optimum of the same (exactly widened) gains.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 40))
    b, m = int(rng.integers(1, n)), int(rng.integers(1, n // 2))
    g = rng.random(n).astype(np.float16)
    p, value = robust_marginals(g, b, m)
    g64 = g.astype(np.float64)
    lp = _lp_maxmin(g64, b, m)
    assert abs(p.sum() - b) < 1e-9
    assert abs(_worst(p, g64, m) - lp) < 1e-7 * max(1, lp)
    assert abs(value - lp) < 1e-7 * max(1, lp)


def test_dependent_rounding_bfloat16_marginals_sum_in_float64():
    # Marginals from a mixed_bfloat16 model arrive as bfloat16 NumPy
    # arrays; they sum to an integer exactly, but a bfloat16 sum is off by
    # whole units, so they must be widened before any arithmetic.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(0)
    p = np.round(rng.random(200) * 128) / 128  # exact in bfloat16
    p[:10] = 1.0
    b = int(np.ceil(p[:-1].sum()))
    p[-1] = b - p[:-1].sum()
    p16 = p.astype(ml_dtypes.bfloat16)
    assert p16.astype(np.float64).sum() == b
    for seed in range(3):
        idx = dependent_rounding(p16, seed)
        assert len(idx) == b and len(np.unique(idx)) == b
        assert set(range(10)) <= set(idx.tolist())
