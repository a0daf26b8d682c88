"""Low-regret selection with sleeping experts."""

import keras
import numpy as np

from keras_efficient.distillation.active.context import SelectionContext
from keras_efficient.distillation.active.context import as_context
from keras_efficient.distillation.active.context import student_margin
from keras_efficient.distillation.active.rounding import capped_proportional
from keras_efficient.distillation.active.rounding import check_num_points
from keras_efficient.distillation.active.rounding import dependent_rounding
from keras_efficient.distillation.active.strategies import SelectionStrategy


def _normalised_loss(probs):
    """1 - informativeness (1 - margin) scaled to [0, 1] over the rows."""
    r = 1.0 - student_margin(probs)
    lo, hi = r.min(), r.max()
    r = (r - lo) / (hi - lo) if hi > lo else np.full(len(r), 0.5)
    return 1.0 - r


@keras.saving.register_keras_serializable(package="keras_efficient")
class SleepingExpertsSelection(SelectionStrategy):
    """Low-regret selection with sleeping experts (after Low-Regret AL).

    Every pool point is an expert; it falls asleep once queried. Each
    round an expert's loss is `1 - r_i` with `r_i` its informativeness
    (`1 - margin`) normalised to [0, 1] over the awake points. Weights
    follow Prod-style multiplicative updates with per-expert adaptive
    learning rates and an optimistic prediction (the previous round's
    loss); the points are drawn from the capped-proportional marginals of
    the weights by `dependent_rounding`.

    Reads `context.probabilities` and `context.indices` (the pool ids of
    the candidates, which track the experts across rounds).

    A simplification of the paper's algorithm, named as such: Baykal et
    al., "Low-Regret Active Learning" (arXiv 2104.02822), build on an
    optimistic Adapt-ML-Prod for sleeping experts (Gaillard, Stoltz and
    van Erven, 2014; optimistic variant after Wei et al., 2016), in which
    each expert's update uses its instantaneous *regret* (the awake
    mixture's loss minus its own) and its learning rate shrinks with the
    sum of squared regret-prediction errors, with the second-order
    correction in the exponent. Here the update uses the revealed loss
    against the mixture's loss in a first-order Prod step
    `w *= 1 + eta * (mix - loss)`, the learning rate shrinks with the
    squared change of the expert's *loss* between rounds, and there is no
    second-order term; its regret guarantee is therefore not the paper's.
    The stored text of the paper reachable here was its abstract only.

    Example:

    ```python
    import numpy as np
    from keras_efficient.distillation.active import SelectionContext
    from keras_efficient.distillation.active import SleepingExpertsSelection
    p = np.random.default_rng(0).dirichlet(np.ones(3), size=50)
    ctx = SelectionContext(p, indices=np.arange(50), rng=0)
    assert SleepingExpertsSelection().select(ctx, 5).shape == (5,)
    ```
    """

    name = "sleeping_experts"

    def __init__(self):
        self._log_w = {}
        self._last = {}
        self._sq = {}

    def _lookup(self, ids):
        logw = np.array([self._log_w.get(int(i), 0.0) for i in ids])
        last = np.array([self._last.get(int(i), 0.5) for i in ids])
        sq = np.array([self._sq.get(int(i), 0.0) for i in ids])
        return logw, last, sq

    def select(
        self, context: SelectionContext | np.ndarray, num_points: int
    ) -> np.ndarray:
        context = as_context(context)
        p = context.probabilities
        n = len(p)
        b = check_num_points(num_points, n, name="num_points")
        ids = np.asarray(context.indices)
        loss = _normalised_loss(p)
        logw, last, sq = self._lookup(ids)
        log_n = np.log(max(n, 2))
        eta = np.minimum(0.5, np.sqrt(log_n / (1.0 + sq)))
        # Prod update with the revealed losses against the mixture's loss.
        w = np.exp(logw - logw.max())
        mix = float((w * loss).sum() / w.sum())
        logw = logw + np.log1p(np.clip(eta * (mix - loss), -0.99, None))
        sq = sq + (loss - last) ** 2
        # Optimistic prediction of next round's loss: this round's loss.
        eta_new = np.minimum(0.5, np.sqrt(log_n / (1.0 + sq)))
        act = logw - eta_new * loss
        marg = capped_proportional(np.exp(act - act.max()), b)
        chosen = dependent_rounding(marg, context.rng)
        for i, lw, ls, s in zip(ids, logw, loss, sq):
            self._log_w[int(i)] = float(lw)
            self._last[int(i)] = float(ls)
            self._sq[int(i)] = float(s)
        for i in ids[chosen]:  # asleep from now on
            self._log_w.pop(int(i), None)
        return chosen

    def get_state(self) -> dict:
        return {
            "log_w": {str(k): v for k, v in self._log_w.items()},
            "last": {str(k): v for k, v in self._last.items()},
            "sq": {str(k): v for k, v in self._sq.items()},
        }

    def set_state(self, state: dict) -> None:
        self._log_w = {int(k): v for k, v in state.get("log_w", {}).items()}
        self._last = {int(k): v for k, v in state.get("last", {}).items()}
        self._sq = {int(k): v for k, v in state.get("sq", {}).items()}
