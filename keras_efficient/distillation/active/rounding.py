"""Marginals and dependent rounding for budgeted selection (NumPy).

`dependent_rounding` (DepRound) draws exactly `sum(p)` distinct indices
whose inclusion probabilities are the given marginals;
`capped_proportional` and `robust_marginals` compute marginals that sum to
the number of points to choose.
"""

import numpy as np

from keras_efficient import _validation


def check_num_points(num_points: int, n: int, name: str = "b") -> int:
    """An integer in `[0, n]` (the number of points to choose)."""
    value = _validation.check_int(name, num_points, min_value=0)
    if value > n:
        _validation.fail(
            name, f"at most the number of available points ({n})", value
        )
    return value


def as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A `np.random.Generator` from a generator, a seed or None."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is not None:
        _validation.check_int("rng", rng, min_value=0)
    return np.random.default_rng(rng)


def _check_marginals(marginals):
    if isinstance(marginals, (str, bytes)):
        _validation.fail(
            "marginals",
            "a 1-D array of numbers in [0, 1]",
            marginals,
            _validation.ArgumentTypeError,
        )
    p = np.array(marginals, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(p)):
        raise ValueError(
            f"`marginals` must be finite. Received: marginals={p.tolist()}"
        )
    if p.size and (p.min() < -1e-9 or p.max() > 1 + 1e-9):
        raise ValueError(
            "`marginals` must lie in [0, 1]. Received: min="
            f"{p.min()}, max={p.max()}"
        )
    total = p.sum()
    b = int(round(total))
    if abs(total - b) > 1e-6:
        raise ValueError(
            f"`marginals` must sum to an integer. Received: sum={total}"
        )
    return np.clip(p, 0.0, 1.0), b


def dependent_rounding(
    marginals: np.ndarray, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """DepRound: draw distinct indices with prescribed inclusion marginals.

    Repeatedly pairs two fractional entries `i, j`; with
    `a = min(1 - p_i, p_j)` and `c = min(p_i, 1 - p_j)` it moves `a` from
    `j` to `i` with probability `c / (a + c)`, else moves `c` from `i` to
    `j`. Each step keeps every expectation and the sum, and makes at least
    one entry integral, so it ends after at most `n` steps with exactly
    `sum(marginals)` ones whose inclusion probabilities are the marginals.

    Args:
        marginals: 1-D array in `[0, 1]` whose sum is an integer `b`.
        rng: a `np.random.Generator` or a seed.

    Returns:
        Sorted int64 array of the `b` selected indices.

    Example:

    ```python
    import numpy as np
    from keras_efficient.distillation.active import dependent_rounding
    idx = dependent_rounding(np.array([0.5, 0.5, 1.0]), rng=0)
    assert len(idx) == 2 and 2 in idx
    ```
    """
    p, b = _check_marginals(marginals)
    eps = 1e-9
    frac = np.flatnonzero((p > eps) & (p < 1 - eps))
    u = as_rng(rng).random(len(frac))
    i = -1
    for k, j in enumerate(frac):
        if i < 0:
            i = j
            continue
        a = min(1.0 - p[i], p[j])
        c = min(p[i], 1.0 - p[j])
        if u[k] * (a + c) < c:
            p[i] += a
            p[j] -= a
        else:
            p[i] -= c
            p[j] += c
        # Keep the entry that is still fractional as the carry.
        if eps < p[j] < 1 - eps:
            i = j
        elif not (eps < p[i] < 1 - eps):
            i = -1
    chosen = np.flatnonzero(p > 0.5)
    if len(chosen) != b:  # Rounding residue: fix up deterministically.
        order = np.argsort(-p, kind="stable")
        chosen = np.sort(order[:b])
    return chosen.astype(np.int64)


def capped_proportional(weights: np.ndarray, b: int) -> np.ndarray:
    """Marginals `p = min(1, c * w)` with `sum(p) = b` (water-filling).

    Example:

    ```python
    import numpy as np
    from keras_efficient.distillation.active.rounding import capped_proportional
    p = capped_proportional(np.array([10.0, 1.0, 1.0, 1.0]), 2)
    assert p[0] == 1.0 and abs(p.sum() - 2) < 1e-9
    ```
    """
    w = np.maximum(np.asarray(weights, dtype=np.float64), 0)
    n = len(w)
    b = check_num_points(b, n)
    p = np.zeros(n)
    if b == 0:
        return p
    order = np.argsort(-w, kind="stable")
    if np.count_nonzero(w) <= b:
        p[order[:b]] = 1.0
        return p
    ws = w[order]
    tail = np.cumsum(ws[::-1])[::-1]  # tail[k] = sum_{j >= k} ws[j]
    p_sorted = np.concatenate([np.ones(b), np.zeros(n - b)])
    for k in range(b):  # k entries capped at 1
        c = (b - k) / tail[k]
        if ws[k] * c <= 1.0 + 1e-12:
            p_sorted = np.concatenate([np.ones(k), np.minimum(1, c * ws[k:])])
            break
    p[order] = p_sorted
    # No global rescale: it would move the capped entries off exactly 1.
    return np.clip(p, 0.0, 1.0)


class _SortedGains:
    """Gains sorted decreasingly with the prefix sums the dual needs."""

    def __init__(self, gains):
        self.order = np.argsort(-gains, kind="stable")
        self.gs = gains[self.order]
        self.neg = -self.gs  # ascending, for searchsorted
        self.npos = int(np.count_nonzero(self.gs > 0))
        # h[r] = sum_{i < r} 1 / g_i over positive gains; s[r] = sum g_i.
        self.h = np.concatenate([[0.0], np.cumsum(1.0 / self.gs[: self.npos])])
        self.s = np.concatenate([[0.0], np.cumsum(self.gs)])

    def dual(self, t, b, m):
        """F(t) = G(t) - m t for an array of t >= 0 (see robust_marginals)."""
        gs, h, s, n = self.gs, self.h, self.s, len(self.gs)
        k = np.searchsorted(self.neg, -t, side="left")  # #{g_i > t}
        mass = t * h[k]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.searchsorted(h, np.where(t > 0, b / t, np.inf), "right")
        r = np.clip(r - 1, 0, max(self.npos - 1, 0))
        g1 = r * t + (b - t * h[r]) * gs[np.minimum(r, n - 1)]
        rest = b - mass
        q = np.floor(np.maximum(rest, 0.0))
        j = np.minimum(k + q.astype(np.int64), n)
        frac = np.where(j < n, (rest - q) * gs[np.minimum(j, n - 1)], 0.0)
        g2 = k * t + s[j] - s[k] + frac
        return np.where(mass >= b, g1, g2) - m * t

    def candidates(self, b, m):
        """The breakpoints of F, where its maximum lies."""
        h, npos = self.h, self.npos
        cands = [np.zeros(1), self.gs[:npos], b / h[1:]]
        if npos:
            ks = np.arange(1, npos + 1)
            thr = (ks - m) / h[ks]
            keep = thr > 0
            ks, thr = ks[keep], thr[keep]
            first_below = np.searchsorted(self.neg, -thr, side="right")
            jstar = np.maximum(ks, first_below)
            tc = (b - (jstar - ks)) / h[ks]
            cands.append(tc[tc > 0])
        return np.concatenate(cands)

    def water_fill(self, t, b):
        """The greedy-knapsack marginals at level t, in pool order."""
        gs, n = self.gs, len(self.gs)
        cap = np.ones(n)
        top = gs > t
        cap[top] = t / gs[top]
        cum = np.cumsum(cap)
        ps = np.minimum(cap, np.maximum(b - (cum - cap), 0.0))
        surplus = b - ps.sum()
        if surplus > 1e-12:
            # Every point holds its cap: extra mass cannot add worst-case
            # value; put it on the top set, lowest gains first.
            room = (1.0 - ps)[::-1]
            before = np.cumsum(room) - room
            fill = np.minimum(room, np.maximum(surplus - before, 0.0))
            ps += fill[::-1]
        p = np.zeros(n)
        p[self.order] = np.clip(ps, 0.0, 1.0)
        return p


def robust_marginals(
    gains: np.ndarray, b: int, num_spoiled: int
) -> tuple[np.ndarray, float]:
    """Max-min marginals for robust selection, solved exactly.

    Solves `max_p min_{|S| <= m} sum_{i not in S} p_i g_i` subject to
    `sum(p) = b` and `0 <= p <= 1`, where an adversary spoils (sets the
    gain to 0 of) up to `m = num_spoiled` chosen points.

    The worst case of a fixed `p` is the sum of `v_i = p_i g_i` minus its
    `m` largest terms, which by LP duality is
    `max_t sum_i min(v_i, t) - m t`. So the problem is `max_t F(t)` with
    `F(t) = G(t) - m t` and `G(t)` a fractional knapsack: items sorted by
    gain, item `i` holds at most `min(1, t / g_i)` mass. Its greedy
    solution is the water-filling of the spec: the top set `{g_i > t}`
    gets `p_i = t / g_i` (equal `p_i g_i = t`), the next points get
    `p_i = 1`, one point is fractional. `F` is concave and piecewise
    linear; its maximum is at a breakpoint, and there are three kinds:
    `t = g_i` (the top set changes), `t = b / H_r` with
    `H_r = sum_{i < r} 1 / g_i` (the top set alone holds all the mass),
    and, for each top-set size `k`, the one point where the slope
    `k - m - H_k g_j` (with `j` the fractional point) changes sign.
    With sorted gains and prefix sums each candidate is evaluated in
    `O(log n)`, so the exact optimum costs `O(n log n)` in all.

    Args:
        gains: 1-D array of non-negative gains `g_i`.
        b: number of points to choose, `0 <= b <= len(gains)`.
        num_spoiled: the adversary's budget `m >= 0`.

    Returns:
        `(p, value)`: the marginals (shape `(n,)`, in `[0, 1]`, summing to
        `b`) and their worst-case value.

    Example:

    ```python
    import numpy as np
    from keras_efficient.distillation.active import robust_marginals
    p, value = robust_marginals(np.array([0.9, 0.8, 0.7, 0.1]), 2, 1)
    assert abs(p.sum() - 2) < 1e-9
    ```
    """
    g = np.asarray(gains, dtype=np.float64)
    if g.ndim != 1:
        raise ValueError(
            "`gains` must be a 1-D array (one gain per point). Received: "
            f"gains.shape={g.shape}"
        )
    n = len(g)
    b = check_num_points(b, n)
    m = _validation.check_int("num_spoiled", num_spoiled, min_value=0)
    if not np.all(np.isfinite(g)):
        raise ValueError("`gains` must be finite.")
    g = np.maximum(g, 0.0)
    if b == 0:
        return np.zeros(n), 0.0
    sorted_gains = _SortedGains(g)
    cands = sorted_gains.candidates(b, m)
    t = float(cands[int(np.argmax(sorted_gains.dual(cands, b, m)))])
    p = sorted_gains.water_fill(t, b)
    return p, worst_case(p, g, m)


def worst_case(p: np.ndarray, g: np.ndarray, m: int) -> float:
    """Value of marginals `p` once the adversary spoils the `m` best."""
    v = p * g
    if m == 0:
        return float(v.sum())
    if m >= len(v):
        return 0.0
    return float(v.sum() - np.partition(v, len(v) - m)[len(v) - m :].sum())
