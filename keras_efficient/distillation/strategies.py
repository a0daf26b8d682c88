"""Selection strategies for active distillation under a teacher-query budget.

Each strategy is a small class with `select(scores, b, rng, **context)` that
returns `b` distinct row indices into `scores`. `scores` are the student's
class probabilities on the not-yet-queried pool points, shape `(n, C)`.
Strategies are NumPy: they act between rounds, not inside the graph.

`dependent_rounding(marginals, rng)` (DepRound) draws exactly `sum(p)`
distinct indices whose inclusion probabilities are the given marginals.
"""

import keras
import numpy as np

_PKG = "keras_efficient"


def _check_b(b, n):
    if int(b) != b or b < 0:
        raise ValueError(f"`b` must be a non-negative integer. Received: b={b}")
    if b > n:
        raise ValueError(
            f"`b` must be at most the number of available points ({n}). "
            f"Received: b={b}"
        )
    return int(b)


def _rng(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _probs(scores):
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(
            "`scores` must be class probabilities of shape (n, C). "
            f"Received: shape={scores.shape}"
        )
    return scores


def student_margin(probs):
    """Top-1 minus top-2 probability per row, shape `(n,)`."""
    probs = _probs(probs)
    if probs.shape[1] < 2:
        return np.ones(probs.shape[0])
    top2 = np.partition(probs, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def dependent_rounding(marginals, rng=None):
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

    >>> import numpy as np
    >>> idx = dependent_rounding(np.array([0.5, 0.5, 1.0]), rng=0)
    >>> len(idx)
    2
    """
    p = np.array(marginals, dtype=np.float64).reshape(-1)
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
    rng = _rng(rng)
    eps = 1e-9
    p = np.clip(p, 0.0, 1.0)
    frac = np.flatnonzero((p > eps) & (p < 1 - eps))
    u = rng.random(len(frac))
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


def capped_proportional(weights, b):
    """Marginals `p = min(1, c * w)` with `sum(p) = b` (water-filling)."""
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    b = _check_b(b, n)
    if b == 0:
        return np.zeros(n)
    w = np.maximum(w, 0)
    if np.count_nonzero(w) <= b:
        p = np.zeros(n)
        order = np.argsort(-w, kind="stable")
        p[order[:b]] = 1.0
        return p
    order = np.argsort(-w, kind="stable")
    ws = w[order]
    tail = np.cumsum(ws[::-1])[::-1]  # tail[k] = sum_{j >= k} ws[j]
    p_sorted = None
    for k in range(b):  # k entries capped at 1
        c = (b - k) / tail[k]
        if ws[k] * c <= 1.0 + 1e-12:
            p_sorted = np.concatenate([np.ones(k), np.minimum(1, c * ws[k:])])
            break
    if p_sorted is None:
        p_sorted = np.concatenate([np.ones(b), np.zeros(n - b)])
    p = np.zeros(n)
    p[order] = p_sorted
    return p * (b / p.sum())


def robust_marginals(gains, b, num_spoiled):
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

    >>> import numpy as np
    >>> p, v = robust_marginals(np.array([0.9, 0.8, 0.7, 0.1]), 2, 1)
    >>> round(float(p.sum()), 6)
    2.0
    """
    g = np.asarray(gains, dtype=np.float64).reshape(-1)
    n = len(g)
    b = _check_b(b, n)
    if int(num_spoiled) != num_spoiled or num_spoiled < 0:
        raise ValueError(
            "`num_spoiled` must be an integer >= 0. Received: "
            f"num_spoiled={num_spoiled}"
        )
    m = int(num_spoiled)
    if not np.all(np.isfinite(g)):
        raise ValueError("`gains` must be finite.")
    g = np.maximum(g, 0.0)
    if b == 0:
        return np.zeros(n), 0.0
    order = np.argsort(-g, kind="stable")
    gs = g[order]
    neg = -gs  # ascending, for searchsorted
    npos = int(np.count_nonzero(gs > 0))
    # H[r] = sum_{i < r} 1 / g_i over positive gains; S[r] = sum_{i < r} g_i.
    h = np.concatenate([[0.0], np.cumsum(1.0 / gs[:npos])])
    s = np.concatenate([[0.0], np.cumsum(gs)])

    def dual(t):  # F(t) = G(t) - m t for an array of t >= 0.
        k = np.searchsorted(neg, -t, side="left")  # #{g_i > t}
        hk = h[k]
        mass = t * hk
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.searchsorted(h, np.where(t > 0, b / t, np.inf), "right")
        r = np.clip(r - 1, 0, max(npos - 1, 0))
        g1 = r * t + (b - t * h[r]) * gs[np.minimum(r, n - 1)]
        rest = b - mass
        q = np.floor(np.maximum(rest, 0.0))
        j = np.minimum(k + q.astype(np.int64), n)
        frac = np.where(j < n, (rest - q) * gs[np.minimum(j, n - 1)], 0.0)
        g2 = k * t + s[j] - s[k] + frac
        return np.where(mass >= b, g1, g2) - m * t

    cands = [np.zeros(1), gs[:npos], b / h[1:]]
    if npos:
        ks = np.arange(1, npos + 1)
        thr = (ks - m) / h[ks]
        keep = thr > 0
        ks, thr = ks[keep], thr[keep]
        first_below = np.searchsorted(neg, -thr, side="right")
        jstar = np.maximum(ks, first_below)
        tc = (b - (jstar - ks)) / h[ks]
        cands.append(tc[tc > 0])
    cands = np.concatenate(cands)
    values = dual(cands)
    t = float(cands[int(np.argmax(values))])

    # The water-filling marginals at the optimal t (greedy knapsack).
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
    p[order] = np.clip(ps, 0.0, 1.0)
    return p, _worst_case(p, g, m)


def _worst_case(p, g, m):
    v = p * g
    if m == 0:
        return float(v.sum())
    if m >= len(v):
        return 0.0
    return float(v.sum() - np.partition(v, len(v) - m)[len(v) - m :].sum())


class SelectionStrategy:
    """Base class: `select(scores, b, rng, **context) -> indices`."""

    name = "base"

    def select(self, scores, b, rng=None, **context):
        raise NotImplementedError

    def get_state(self):
        """JSON-serialisable state (for resuming); empty by default."""
        return {}

    def set_state(self, state):
        pass

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package=_PKG)
class UniformSelection(SelectionStrategy):
    """Uniformly random selection of `b` distinct points.

    Example:

    >>> import numpy as np
    >>> UniformSelection().select(np.full((10, 2), 0.5), 3, rng=0).shape
    (3,)
    """

    name = "uniform"

    def select(self, scores, b, rng=None, **context):
        n = len(scores)
        b = _check_b(b, n)
        return np.sort(_rng(rng).choice(n, size=b, replace=False))


@keras.saving.register_keras_serializable(package=_PKG)
class MarginSelection(SelectionStrategy):
    """Smallest student margin (top-1 minus top-2 probability) first.

    Example:

    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.55, 0.45], [0.7, 0.3]])
    >>> MarginSelection().select(p, 1).tolist()
    [1]
    """

    name = "margin"

    def select(self, scores, b, rng=None, **context):
        margin = student_margin(scores)
        b = _check_b(b, len(margin))
        return np.sort(np.argsort(margin, kind="stable")[:b])


@keras.saving.register_keras_serializable(package=_PKG)
class EntropySelection(SelectionStrategy):
    """Largest entropy of the student's prediction first.

    Example:

    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3]])
    >>> EntropySelection().select(p, 1).tolist()
    [1]
    """

    name = "entropy"

    def select(self, scores, b, rng=None, **context):
        p = _probs(scores)
        b = _check_b(b, len(p))
        ent = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
        return np.sort(np.argsort(-ent, kind="stable")[:b])


@keras.saving.register_keras_serializable(package=_PKG)
class CoresetSelection(SelectionStrategy):
    """Greedy k-center (core-set) selection on student embeddings.

    Picks, one at a time, the point farthest from the current centers (the
    already-queried points, passed as `centers=`, plus the points picked so
    far). The squared distance of every point to its nearest center is
    kept as a running minimum; a pick updates it with one matrix-vector
    product and three in-place vector operations over the pool (O(n d),
    no temporaries), and the distances to `centers` are computed in blocks
    of `batch_size` rows. About 2 s for `b=1000` from 100k 64-d points on
    one CPU core.

    Call arguments of `select`: `embeddings=` (n, d) for the candidates
    (defaults to `scores`), `centers=` (k, d) already-chosen embeddings.
    Without centers the first pick is uniform (from `rng`).

    Args:
        batch_size: rows per block when computing distances to `centers`.

    Example:

    >>> import numpy as np
    >>> e = np.array([[0.0], [0.1], [5.0]])
    >>> CoresetSelection().select(e, 1, centers=np.zeros((1, 1))).tolist()
    [2]
    """

    name = "coreset"

    def __init__(self, batch_size=8192):
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(
                "`batch_size` must be an integer >= 1. Received: "
                f"batch_size={batch_size}"
            )
        self.batch_size = int(batch_size)

    def select(
        self, scores, b, rng=None, embeddings=None, centers=None, **context
    ):
        x = np.asarray(
            scores if embeddings is None else embeddings, dtype=np.float32
        )
        x = np.ascontiguousarray(x.reshape(len(x), -1))
        n = len(x)
        b = _check_b(b, n)
        if b == 0:
            return np.zeros((0,), dtype=np.int64)
        sq = np.einsum("ij,ij->i", x, x)
        mind = np.full(n, np.inf, dtype=np.float32)
        chosen = np.empty(b, dtype=np.int64)
        if centers is not None and len(centers):
            c = np.asarray(centers, dtype=np.float32).reshape(len(centers), -1)
            if c.shape[1] != x.shape[1]:
                raise ValueError(
                    "`centers` must have the embeddings' dimension "
                    f"{x.shape[1]}. Received: shape={c.shape}"
                )
            cc = np.einsum("ij,ij->i", c, c)
            step = max(1, (1 << 22) // max(len(c), 1))  # ~16 MB blocks
            step = min(step, self.batch_size)
            for s0 in range(0, n, step):
                blk = x[s0 : s0 + step] @ c.T
                blk *= -2.0
                blk += cc[None]
                blk += sq[s0 : s0 + step, None]
                mind[s0 : s0 + step] = blk.min(axis=1)
            start = 0
        else:
            chosen[0] = int(_rng(rng).integers(n))
            start = 1
        buf = np.empty(n, dtype=np.float32)

        def update(j):
            # einsum, not BLAS: a threaded gemv is several times slower on a
            # busy machine, and this loop is memory-bound anyway.
            np.einsum("ij,j->i", x, x[j], out=buf)
            np.multiply(buf, -2.0, out=buf)
            np.add(buf, sq, out=buf)
            np.add(buf, sq[j], out=buf)
            np.minimum(mind, buf, out=mind)
            mind[j] = -np.inf  # never picked again

        if start:
            update(chosen[0])
        for k in range(start, b):
            j = int(np.argmax(mind))
            chosen[k] = j
            update(j)
        return np.sort(chosen)

    def get_config(self):
        return {"batch_size": self.batch_size}


@keras.saving.register_keras_serializable(package=_PKG)
class RobustSelection(SelectionStrategy):
    """Robust selection against teacher mistakes (after RAD, ICLR 2023).

    Low-margin points are the most informative but also where the teacher
    is most often wrong. With gains `g_i = 1 - margin_i` and an adversary
    that spoils up to `m = round(b * (1 - teacher_accuracy))` chosen points,
    the strategy picks marginals maximising the worst-case gain (exact
    water-filling, see `robust_marginals`) and draws `b` points from them by
    `dependent_rounding`. No tuning parameter: `teacher_accuracy` is the
    teacher's accuracy on a labeled validation set (`ActiveDistillation`
    sets it from `validation=` when left `None`).

    Args:
        teacher_accuracy: float in [0, 1] or `None` (treated as 1: no
            spoiling, i.e. greedy margin) until set.

    Example:

    >>> import numpy as np
    >>> p = np.random.default_rng(0).dirichlet(np.ones(3), size=100)
    >>> RobustSelection(teacher_accuracy=0.8).select(p, 10, rng=0).shape
    (10,)
    """

    name = "robust"

    def __init__(self, teacher_accuracy=None):
        if teacher_accuracy is not None and not 0 <= teacher_accuracy <= 1:
            raise ValueError(
                "`teacher_accuracy` must be in [0, 1] or None. Received: "
                f"teacher_accuracy={teacher_accuracy}"
            )
        self.teacher_accuracy = teacher_accuracy

    def marginals(self, scores, b):
        g = 1.0 - student_margin(scores)
        acc = 1.0 if self.teacher_accuracy is None else self.teacher_accuracy
        m = int(round(b * (1.0 - acc)))
        return robust_marginals(g, b, m)[0]

    def select(self, scores, b, rng=None, **context):
        b = _check_b(b, len(scores))
        return dependent_rounding(self.marginals(scores, b), _rng(rng))

    def get_config(self):
        return {"teacher_accuracy": self.teacher_accuracy}


@keras.saving.register_keras_serializable(package=_PKG)
class SleepingExpertsSelection(SelectionStrategy):
    """Low-regret selection with sleeping experts (after Low-Regret AL).

    Every pool point is an expert; it falls asleep once queried. Each
    round an expert's loss is `1 - r_i` with `r_i` its informativeness
    (`1 - margin`) normalised to [0, 1] over the awake points. Weights
    follow Prod-style multiplicative updates with per-expert adaptive
    learning rates and an optimistic prediction (the previous round's
    loss); `b` points are drawn from the capped-proportional marginals of
    the weights by `dependent_rounding`.

    `select` needs `indices=` (the pool ids of the rows of `scores`) to
    track experts across rounds; without it rows are their own ids.

    Example:

    >>> import numpy as np
    >>> p = np.random.default_rng(0).dirichlet(np.ones(3), size=50)
    >>> s = SleepingExpertsSelection()
    >>> s.select(p, 5, rng=0, indices=np.arange(50)).shape
    (5,)
    """

    name = "sleeping_experts"

    def __init__(self):
        self._log_w = {}
        self._last = {}
        self._sq = {}

    def select(self, scores, b, rng=None, indices=None, **context):
        p = _probs(scores)
        n = len(p)
        b = _check_b(b, n)
        ids = np.arange(n) if indices is None else np.asarray(indices)
        r = 1.0 - student_margin(p)
        lo, hi = r.min(), r.max()
        r = (r - lo) / (hi - lo) if hi > lo else np.full(n, 0.5)
        loss = 1.0 - r
        logw = np.array([self._log_w.get(int(i), 0.0) for i in ids])
        last = np.array([self._last.get(int(i), 0.5) for i in ids])
        sq = np.array([self._sq.get(int(i), 0.0) for i in ids])
        eta = np.minimum(0.5, np.sqrt(np.log(max(n, 2)) / (1.0 + sq)))
        # Prod update with the revealed losses against the mixture's loss.
        w = np.exp(logw - logw.max())
        mix = float((w * loss).sum() / w.sum())
        logw = logw + np.log1p(np.clip(eta * (mix - loss), -0.99, None))
        sq = sq + (loss - last) ** 2
        # Optimistic prediction of next round's loss: this round's loss.
        eta_new = np.minimum(0.5, np.sqrt(np.log(max(n, 2)) / (1.0 + sq)))
        act = logw - eta_new * loss
        wsel = np.exp(act - act.max())
        marg = capped_proportional(wsel, b)
        chosen = dependent_rounding(marg, _rng(rng))
        for i, lw, ls, s in zip(ids, logw, loss, sq):
            self._log_w[int(i)] = float(lw)
            self._last[int(i)] = float(ls)
            self._sq[int(i)] = float(s)
        for i in ids[chosen]:  # asleep from now on
            self._log_w.pop(int(i), None)
        return chosen

    def get_state(self):
        return {
            "log_w": {str(k): v for k, v in self._log_w.items()},
            "last": {str(k): v for k, v in self._last.items()},
            "sq": {str(k): v for k, v in self._sq.items()},
        }

    def set_state(self, state):
        self._log_w = {int(k): v for k, v in state.get("log_w", {}).items()}
        self._last = {int(k): v for k, v in state.get("last", {}).items()}
        self._sq = {int(k): v for k, v in state.get("sq", {}).items()}


STRATEGIES = {
    "uniform": UniformSelection,
    "margin": MarginSelection,
    "entropy": EntropySelection,
    "coreset": CoresetSelection,
    "robust": RobustSelection,
    "sleeping_experts": SleepingExpertsSelection,
}


def get(identifier):
    """Returns a strategy instance from a name or an instance."""
    if isinstance(identifier, SelectionStrategy):
        return identifier
    if isinstance(identifier, str) and identifier in STRATEGIES:
        return STRATEGIES[identifier]()
    raise ValueError(
        f"Unknown selection strategy: {identifier!r}. Allowed: "
        f"{sorted(STRATEGIES)} or a SelectionStrategy instance."
    )
