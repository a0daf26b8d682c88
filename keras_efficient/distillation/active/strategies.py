"""Selection strategies for active distillation under a teacher budget.

A strategy is a `SelectionStrategy` subclass with one method,
`select(context, num_points)`, returning `num_points` distinct row indices
into the candidates that `context` (a `SelectionContext`) describes.
Strategies are NumPy: they act between rounds, not inside the graph. This
module holds the base class, the name registry (`STRATEGIES`, `get`) and
the strategies that read only the student's probabilities.
"""

import keras
import numpy as np

from keras_efficient import _validation
from keras_efficient.distillation.active.context import SelectionContext
from keras_efficient.distillation.active.context import as_context
from keras_efficient.distillation.active.context import check_probabilities
from keras_efficient.distillation.active.context import student_margin
from keras_efficient.distillation.active.rounding import check_num_points
from keras_efficient.distillation.active.rounding import dependent_rounding
from keras_efficient.distillation.active.rounding import robust_marginals

_PKG = "keras_efficient"


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
    from keras_efficient.distillation.active import SelectionContext
    from keras_efficient.distillation.active import UniformSelection
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
    from keras_efficient.distillation.active import MarginSelection
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
    from keras_efficient.distillation.active import EntropySelection
    from keras_efficient.distillation.active import SelectionContext
    p = np.array([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3], [0.99, 0.01]])
    context = SelectionContext(p, rng=0)
    # The two least certain rows, in index order.
    assert EntropySelection().select(context, 2).tolist() == [1, 2]
    ```
    """

    name = "entropy"

    def scores(self, probabilities: np.ndarray) -> np.ndarray:
        p = check_probabilities(probabilities)
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
    from keras_efficient.distillation.active import RobustSelection
    from keras_efficient.distillation.active import SelectionContext
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
    from keras_efficient.distillation.active import get
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
