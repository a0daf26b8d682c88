"""The strongest active-learning baselines: BADGE and BALD.

Both are `SelectionStrategy` objects with the one method
`select(context, num_points)`; what they read (gradient-embedding inputs,
stochastic forward passes) is computed lazily by the `SelectionContext`,
so other strategies never pay for it.
"""

import keras
import numpy as np

from keras_efficient import _validation as v
from keras_efficient.distillation.active.context import SelectionContext
from keras_efficient.distillation.active.context import as_context
from keras_efficient.distillation.active.rounding import check_num_points
from keras_efficient.distillation.active.strategies import SelectionStrategy

_PKG = "keras_efficient"


def _entropy(p, axis=-1):
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=axis)


def badge_factors(
    probabilities: np.ndarray, features: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """BADGE gradient embedding `g_i = a_i (x) h_i`, as its two factors.

    `a_i = p_i - onehot(argmax p_i)` (the gradient of the cross-entropy at
    the student's own predicted label w.r.t. the last layer's logits) and
    `h_i` the last layer's input; the gradient w.r.t. the last layer's
    kernel is their outer product, never materialised here.
    """
    p = np.asarray(probabilities, np.float64)
    a = p.copy()
    a[np.arange(len(p)), p.argmax(-1)] -= 1.0
    return a, np.asarray(features, np.float64).reshape(len(p), -1)


def _sq_dist_to(a, h, j, na):
    """||a_i (x) h_i - a_j (x) h_j||^2 for all i (outer products implicit).

    `na` holds the squared norms `||a_i||^2 ||h_i||^2`, computed once.
    """
    cross = (a @ a[j]) * (h @ h[j])
    return np.maximum(na + na[j] - 2.0 * cross, 0.0)


@keras.saving.register_keras_serializable(package=_PKG)
class BADGESelection(SelectionStrategy):
    """BADGE: k-means++ seeding on last-layer gradient embeddings.

    After Ash et al., "Deep Batch Active Learning by Diverse, Uncertain
    Gradient Lower Bounds" (ICLR 2020): each candidate is embedded as the
    gradient of the cross-entropy loss, at the student's *predicted* label,
    w.r.t. the last layer's kernel, `(p - onehot(argmax p)) (x) h` with `h`
    the last layer's input (its norm grows with uncertainty, its direction
    encodes diversity); the batch is the k-means++ seeding of those
    embeddings: the first point of largest norm (as in the authors' code),
    each next point drawn with probability proportional to its squared
    distance to the nearest point already drawn. The bias gradient is left
    out. Reads `context.probabilities`, `context.features` and
    `context.rng`.

    Example:

    ```python
    import numpy as np
    from keras_efficient.distillation.active import BADGESelection
    from keras_efficient.distillation.active import SelectionContext
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=40)
    ctx = SelectionContext(p, features=rng.normal(size=(40, 8)), rng=0)
    assert len(set(BADGESelection().select(ctx, 5).tolist())) == 5
    ```
    """

    name = "badge"

    def select(
        self, context: SelectionContext | np.ndarray, num_points: int
    ) -> np.ndarray:
        context = as_context(context)
        a, h = badge_factors(context.probabilities, context.features)
        b = check_num_points(num_points, len(a), name="num_points")
        norms = (a * a).sum(1) * (h * h).sum(1)
        chosen = [int(np.argmax(norms))]
        d2 = _sq_dist_to(a, h, chosen[0], norms)
        while len(chosen) < b:
            d2[chosen] = 0.0
            total = d2.sum()
            if total <= 0:  # all remaining coincide with a center
                rest = np.setdiff1d(np.arange(len(a)), chosen)
                j = int(context.rng.choice(rest))
            else:
                j = int(context.rng.choice(len(a), p=d2 / total))
            chosen.append(j)
            d2 = np.minimum(d2, _sq_dist_to(a, h, j, norms))
        return np.sort(np.asarray(chosen, np.int64))


def bald_scores(mc_probabilities: np.ndarray) -> np.ndarray:
    """Mutual information between prediction and weights, per candidate.

    `H[mean_t p_t] - mean_t H[p_t]` over the T stochastic passes.
    """
    p = np.asarray(mc_probabilities, np.float64)
    return _entropy(p.mean(0)) - _entropy(p).mean(0)


@keras.saving.register_keras_serializable(package=_PKG)
class BALDSelection(SelectionStrategy):
    """BALD with MC dropout: largest mutual information first.

    After Houlsby et al. (2011) and Gal et al., "Deep Bayesian Active
    Learning with Image Data" (ICML 2017): T forward passes of the student
    with dropout on (`training=True`) sample its weights; a point's score
    is the mutual information between its predicted label and the weights,
    `H[mean_t p_t] - mean_t H[p_t]`, and the `num_points` highest are taken
    (top-b, as in Gal et al.; not BatchBALD). Reads
    `context.mc_probabilities`; `ActiveDistillation` runs the passes
    (`mc_passes` of them) only for strategies that read it, and restores the
    student's non-trainable variables afterwards (BatchNormalization
    statistics). A student without dropout gives identical passes and
    scores of 0: then BALD is uniform over ties (index order).

    Args:
        num_passes: T, the number of stochastic passes `ActiveDistillation`
            should run (default 10).

    Example:

    ```python
    import numpy as np
    from keras_efficient.distillation.active import BALDSelection
    from keras_efficient.distillation.active import SelectionContext
    rng = np.random.default_rng(0)
    mc = rng.dirichlet(np.ones(3), size=(10, 30))
    ctx = SelectionContext(mc_probabilities=mc, num_candidates=30)
    assert BALDSelection().select(ctx, 4).shape == (4,)
    ```
    """

    name = "bald"

    def __init__(self, num_passes: int = 10):
        self.num_passes = v.check_int("num_passes", num_passes, min_value=2)

    def select(
        self, context: SelectionContext | np.ndarray, num_points: int
    ) -> np.ndarray:
        scores = bald_scores(as_context(context).mc_probabilities)
        b = check_num_points(num_points, len(scores), name="num_points")
        return np.sort(np.argsort(-scores, kind="stable")[:b])

    def get_config(self) -> dict:
        return {"num_passes": self.num_passes}
