"""Selection strategies for active distillation under a teacher budget.

A strategy is a `SelectionStrategy` subclass with one method,
`select(context, num_points)`, returning `num_points` distinct row indices
into the candidates that `context` (a `SelectionContext`) describes: the
student's class probabilities on the not-yet-queried pool points, their
embeddings, the embeddings of the points already queried, their pool
indices, the teacher-accuracy estimate and the RNG. The context computes
what a strategy reads, only when it reads it, so the caller never needs to
know which strategy it holds. Strategies are NumPy: they act between
rounds, not inside the graph.
"""

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_efficient import _validation
from keras_efficient.distillation._common import np_margin
from keras_efficient.distillation.rounding import as_rng
from keras_efficient.distillation.rounding import capped_proportional  # noqa
from keras_efficient.distillation.rounding import check_num_points
from keras_efficient.distillation.rounding import dependent_rounding
from keras_efficient.distillation.rounding import robust_marginals

_PKG = "keras_efficient"


def student_margin(probs: Any) -> np.ndarray:
    """Top-1 minus top-2 probability per row, shape `(n,)`."""
    return np_margin(_check_probs(probs))


def _check_probs(probs, name="probabilities", axes=("n", "C")):
    """`probs` as a float64 array with one axis per name in `axes`."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != len(axes):
        raise ValueError(
            f"`{name}` must be class probabilities of shape "
            f"({', '.join(axes)}). Received: shape={probs.shape}"
        )
    return probs


class SelectionContext:
    """What a selection strategy may read about the candidate points.

    Every field but `rng` may be given as a value or as a zero-argument
    callable; a callable runs on first access only (so scoring the pool
    with the student, or embedding it, happens only for strategies that
    read it) and its result is kept.

    Args:
        probabilities: `(n, C)` student probabilities on the candidates.
        embeddings: `(n, d)` candidate embeddings (default: the
            probabilities).
        features: `(n, h)` inputs of the student's last layer on the
            candidates (BADGE's gradient embeddings; default: embeddings).
        mc_probabilities: `(T, n, C)` student probabilities from T
            stochastic forward passes (dropout on; BALD).
        centers: `(k, d)` embeddings of the points already chosen.
        indices: `(n,)` pool indices of the candidates (default: `0..n-1`).
        teacher_accuracy: the teacher's accuracy on a labeled validation
            set, or None.
        rng: a `np.random.Generator` or a seed.
        num_candidates: `n`, when no field gives it.

    Example:

    ```python
    import numpy as np
    from keras_efficient.selection import MarginSelection, SelectionContext
    p = np.array([[0.9, 0.1], [0.55, 0.45], [0.7, 0.3]])
    assert MarginSelection().select(SelectionContext(p), 1).tolist() == [1]
    ```
    """

    _LAZY = (
        "probabilities",
        "embeddings",
        "centers",
        "indices",
        "features",
        "mc_probabilities",
    )

    def __init__(
        self,
        probabilities: np.ndarray | Callable | None = None,
        embeddings: np.ndarray | Callable | None = None,
        centers: np.ndarray | Callable | None = None,
        indices: np.ndarray | Callable | None = None,
        teacher_accuracy: float | Callable | None = None,
        rng: np.random.Generator | int | None = None,
        num_candidates: int | None = None,
        features: np.ndarray | Callable | None = None,
        mc_probabilities: np.ndarray | Callable | None = None,
    ):
        self._values = {
            "features": features,
            "mc_probabilities": mc_probabilities,
            "probabilities": probabilities,
            "embeddings": embeddings,
            "centers": centers,
            "indices": indices,
            "teacher_accuracy": teacher_accuracy,
        }
        self.rng = as_rng(rng)
        self._n = num_candidates

    def _get(self, name):
        value = self._values[name]
        if callable(value):
            value = self._values[name] = value()
        return value

    @property
    def probabilities(self) -> np.ndarray | None:
        p = self._get("probabilities")
        return None if p is None else _check_probs(p)

    @property
    def embeddings(self) -> np.ndarray | None:
        e = self._get("embeddings")
        return self.probabilities if e is None else np.asarray(e)

    @property
    def features(self) -> np.ndarray | None:
        h = self._get("features")
        return self.embeddings if h is None else np.asarray(h)

    @property
    def mc_probabilities(self) -> np.ndarray:
        p = self._get("mc_probabilities")
        if p is None:
            raise ValueError(
                "This strategy needs `mc_probabilities` (T stochastic "
                "forward passes of the student); the context has none."
            )
        return _check_probs(p, "mc_probabilities", ("T", "n", "C"))

    @property
    def centers(self) -> np.ndarray | None:
        return self._get("centers")

    @property
    def indices(self) -> np.ndarray:
        ids = self._get("indices")
        return np.arange(self.num_candidates) if ids is None else ids

    @property
    def teacher_accuracy(self) -> float | None:
        return self._get("teacher_accuracy")

    @property
    def num_candidates(self) -> int:
        if self._n is None:
            for name in ("indices", "probabilities", "embeddings"):
                if self._values[name] is not None:
                    self._n = len(self._get(name))
                    break
        if self._n is None:
            raise ValueError("The `SelectionContext` has no candidates.")
        return self._n


def as_context(context: SelectionContext | np.ndarray) -> "SelectionContext":
    """A `SelectionContext`; an array is read as the probabilities."""
    if isinstance(context, SelectionContext):
        return context
    return SelectionContext(probabilities=context)


# Name -> class, filled by `SelectionStrategy.__init_subclass__`: a class
# that sets its own `name` is selectable by that string.
STRATEGIES = {}


class SelectionStrategy:
    """Base class of selection strategies: one method, `select`.

    Subclasses implement `select(context, num_points)`, returning a sorted
    int array of `num_points` distinct row indices into the candidates.
    A subclass that sets a class attribute `name` is also selectable by
    that string (`get(name)`). Strategies with state across rounds
    override `get_state` / `set_state` (JSON-serialisable), which
    `ActiveDistillation` saves and restores with its selection state.
    """

    name = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if isinstance(cls.__dict__.get("name"), str):
            STRATEGIES[cls.name] = cls

    def select(
        self, context: SelectionContext | np.ndarray, num_points: int
    ) -> np.ndarray:
        raise NotImplementedError

    def get_state(self) -> dict:
        """JSON-serialisable state (for resuming); empty by default."""
        return {}

    def set_state(self, state: dict) -> None:
        pass

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> "SelectionStrategy":
        return cls(**config)


def _top(scores, num_points):
    """Sorted indices of the `num_points` smallest scores (stable)."""
    b = check_num_points(num_points, len(scores), name="num_points")
    return np.sort(np.argsort(scores, kind="stable")[:b])


@keras.saving.register_keras_serializable(package=_PKG)
class UniformSelection(SelectionStrategy):
    """Uniformly random selection of distinct points.

    Example:

    ```python
    import numpy as np
    from keras_efficient.selection import SelectionContext, UniformSelection
    ctx = SelectionContext(num_candidates=10, rng=0)
    assert UniformSelection().select(ctx, 3).shape == (3,)
    ```
    """

    name = "uniform"

    def select(
        self, context: SelectionContext | np.ndarray, num_points: int
    ) -> np.ndarray:
        context = as_context(context)
        n = context.num_candidates
        b = check_num_points(num_points, n, name="num_points")
        return np.sort(context.rng.choice(n, size=b, replace=False))


class _LowestScoreSelection(SelectionStrategy):
    """The candidates with the smallest `scores(probabilities)` first."""

    def scores(self, probabilities: np.ndarray) -> np.ndarray:
        """One score per row of `(n, C)` student probabilities."""
        raise NotImplementedError

    def select(self, context, num_points: int) -> np.ndarray:
        return _top(self.scores(as_context(context).probabilities), num_points)


@keras.saving.register_keras_serializable(package=_PKG)
class MarginSelection(_LowestScoreSelection):
    """Smallest student margin (top-1 minus top-2 probability) first.

    Example:

    ```python
    import numpy as np
    from keras_efficient.selection import MarginSelection
    p = np.array([[0.9, 0.1], [0.55, 0.45], [0.7, 0.3]])
    assert MarginSelection().select(p, 1).tolist() == [1]
    ```
    """

    name = "margin"

    def scores(self, probabilities: np.ndarray) -> np.ndarray:
        return student_margin(probabilities)


@keras.saving.register_keras_serializable(package=_PKG)
class EntropySelection(_LowestScoreSelection):
    """Largest entropy of the student's prediction first.

    Example:

    ```python
    import numpy as np
    from keras_efficient.selection import EntropySelection, SelectionContext
    p = np.array([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3], [0.99, 0.01]])
    context = SelectionContext(p, rng=0)
    # The two least certain rows, in index order.
    assert EntropySelection().select(context, 2).tolist() == [1, 2]
    ```
    """

    name = "entropy"

    def scores(self, probabilities: np.ndarray) -> np.ndarray:
        p = _check_probs(probabilities)
        return (p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)


@keras.saving.register_keras_serializable(package=_PKG)
class RobustSelection(SelectionStrategy):
    """Robust selection against teacher mistakes (after RAD, ICLR 2023).

    Low-margin points are the most informative but also where the teacher
    is most often wrong. With gains `g_i = 1 - margin_i` and an adversary
    that spoils up to `m = round(b * (1 - teacher_accuracy))` chosen points,
    the strategy picks marginals maximising the worst-case gain (exact
    water-filling, see `robust_marginals`) and draws `b` points from them by
    `dependent_rounding`. No tuning parameter: the teacher accuracy is the
    teacher's accuracy on a labeled validation set, read from the context
    (`ActiveDistillation` measures it from `validation=`) unless given here.
    With neither, `select` raises: an adversary budget of 0 would silently
    be greedy margin selection.

    Scope of the adversary (ours): it spoils up to m of the *chosen* points,
    m from the teacher's validation accuracy. RAD's game (Baykal et al.,
    "Robust Active Distillation", ICLR 2023) trades informativeness against
    teacher correctness in a worst case over which points the teacher gets
    wrong; we could only read its abstract here, so whether its adversary's
    budget is counted over the chosen points or over the pool is not
    verified.

    Args:
        teacher_accuracy: float in [0, 1], or `None` to read it from the
            context.

    Example:

    ```python
    import numpy as np
    from keras_efficient.selection import RobustSelection, SelectionContext
    p = np.random.default_rng(0).dirichlet(np.ones(3), size=100)
    ctx = SelectionContext(p, teacher_accuracy=0.8, rng=0)
    assert RobustSelection().select(ctx, 10).shape == (10,)
    ```
    """

    name = "robust"

    def __init__(self, teacher_accuracy: float | None = None):
        if teacher_accuracy is not None:
            teacher_accuracy = _validation.check_fraction(
                "teacher_accuracy", teacher_accuracy, allow_one=True
            )
        self.teacher_accuracy = teacher_accuracy

    def marginals(
        self, context: SelectionContext | np.ndarray, num_points: int
    ) -> np.ndarray:
        context = as_context(context)
        g = 1.0 - student_margin(context.probabilities)
        b = check_num_points(num_points, len(g), name="num_points")
        acc = self.teacher_accuracy
        if acc is None:
            acc = context.teacher_accuracy
        if acc is None:
            raise ValueError(
                "RobustSelection needs the teacher's accuracy on labeled "
                "validation data: pass `RobustSelection(teacher_accuracy=...)`"
                " or `ActiveDistillation(validation=(x, y))`. Without it the "
                "adversary's budget is 0 and this is margin selection; use "
                "`MarginSelection()` if that is what you want."
            )
        return robust_marginals(g, b, int(round(b * (1.0 - acc))))[0]

    def select(
        self, context: SelectionContext | np.ndarray, num_points: int
    ) -> np.ndarray:
        context = as_context(context)
        return dependent_rounding(
            self.marginals(context, num_points), context.rng
        )

    def get_config(self) -> dict:
        return {"teacher_accuracy": self.teacher_accuracy}


def get(identifier: str | SelectionStrategy) -> SelectionStrategy:
    """Returns a strategy instance from a name or an instance.

    Example:

    ```python
    from keras_efficient.selection import get
    assert get("margin").name == "margin"
    ```
    """
    if isinstance(identifier, SelectionStrategy):
        return identifier
    if isinstance(identifier, str) and identifier in STRATEGIES:
        return STRATEGIES[identifier]()
    raise ValueError(
        f"Unknown selection strategy: {identifier!r}. Allowed: "
        f"{sorted(STRATEGIES)} or a SelectionStrategy instance."
    )
