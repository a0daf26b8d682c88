"""What a selection strategy may read about the candidate points.

`SelectionContext` holds the student's probabilities on the not-yet-queried
pool points, their embeddings, the embeddings of the points already
queried, their pool indices, the teacher-accuracy estimate and the RNG.
It computes what a strategy reads only when the strategy reads it, so the
caller never needs to know which strategy it holds.
"""

from collections.abc import Callable
from typing import Any

import numpy as np

from keras_efficient.distillation._common import np_margin
from keras_efficient.distillation.active.rounding import as_rng


def student_margin(probs: Any) -> np.ndarray:
    """Top-1 minus top-2 probability per row, shape `(n,)`."""
    return np_margin(check_probabilities(probs))


def check_probabilities(
    probs: Any, name: str = "probabilities", axes: tuple = ("n", "C")
) -> np.ndarray:
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
    from keras_efficient.distillation.active import MarginSelection
    from keras_efficient.distillation.active import SelectionContext
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
        return None if p is None else check_probabilities(p)

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
        return check_probabilities(p, "mc_probabilities", ("T", "n", "C"))

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
