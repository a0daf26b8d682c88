"""Teacher-accuracy estimator fitted on a small labeled validation set."""

import os
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_efficient import _backend
from keras_efficient import _validation
from keras_efficient.distillation import _calibration
from keras_efficient.distillation import _interpolation
from keras_efficient.distillation import _output_checks
from keras_efficient.distillation._common import margin as teacher_margin
from keras_efficient.distillation._common import np_margin as _np_margin
from keras_efficient.distillation._common import np_probs as _to_probs


@keras.saving.register_keras_serializable(package="keras_efficient")
class TeacherAccuracy:
    """Estimates P(teacher's top-1 is right | teacher margin).

    Fitted on a small labeled validation set V: isotonic regression
    (scikit-learn's `IsotonicRegression`, increasing, clipped to [0, 1]) of
    the teacher's top-1 correctness on its margin (top-1 minus top-2
    probability). The fitted knots are stored as lists, so the map serializes
    with `get_config` and is applied inside compiled graphs by piecewise
    linear interpolation with `keras.ops`. Also records the teacher's top-k
    accuracy on V for k = 1..C, and, for k = 2..`MAX_K`, the same isotonic
    map of "the true label is in the teacher's top k" on the margin: the
    per-example top-k accuracy from which `SLaMLoss` takes its k(x). Used by
    `SLaMLoss` (Kontonis et al., "SLaM: Student-Label Mixing for
    Distillation with Unlabeled Examples", NeurIPS 2023) and
    `DebiasedDistillationLoss`.

    Args:
        knots_x: optional list of margins of the fitted map (from `fit`).
        knots_y: optional list of accuracies at `knots_x`.
        topk_accuracy: optional list, top-k accuracy on V for k = 1..C.
        topk_knots: optional list of `[knots_x, knots_y]` pairs, the
            isotonic top-k accuracy map for k = 2, 3, ... (from `fit`).

    Example:

    ```python
    import numpy as np
    from keras_efficient.losses import TeacherAccuracy
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=500)
    labels = np.where(rng.random(500) < 0.7, probs.argmax(-1),
                      rng.integers(0, 10, 500))
    est = TeacherAccuracy().fit(probs, labels)
    alpha = est(probs[:4])  # estimated accuracy per example
    print(est.report(probs, labels)["ece"])
    ```
    """

    MAX_K = 20

    def __init__(
        self,
        knots_x: list[float] | None = None,
        knots_y: list[float] | None = None,
        topk_accuracy: list[float] | None = None,
        topk_knots: list[list[list[float]]] | None = None,
    ):
        if (knots_x is None) != (knots_y is None):
            raise ValueError(
                "`knots_x` and `knots_y` must be given together; got "
                f"knots_x={knots_x}, knots_y={knots_y}."
            )
        if knots_x is not None:
            knots_x = _knots("knots_x", knots_x)
            knots_y = _knots("knots_y", knots_y)
        if knots_x is not None and len(knots_x) != len(knots_y):
            raise ValueError(
                "`knots_x` and `knots_y` must have the same length; got "
                f"{len(knots_x)} and {len(knots_y)}."
            )
        self.knots_x = None if knots_x is None else _knots("knots_x", knots_x)
        self.knots_y = None if knots_y is None else _knots("knots_y", knots_y)
        if self.knots_x is not None and np.any(np.diff(self.knots_x) < 0):
            _validation.fail("knots_x", "non-decreasing", self.knots_x)
        if self.knots_y is not None and (
            min(self.knots_y) < 0 or max(self.knots_y) > 1
        ):
            _validation.fail("knots_y", "accuracies in [0, 1]", self.knots_y)
        self.topk_accuracy = (
            None if topk_accuracy is None else [float(v) for v in topk_accuracy]
        )
        self.topk_knots = None
        if topk_knots is not None:
            self.topk_knots = [
                [[float(a) for a in xs], [float(b) for b in ys]]
                for xs, ys in topk_knots
            ]

    @property
    def fitted(self) -> bool:
        return self.knots_x is not None

    def fit(
        self,
        teacher_outputs: np.ndarray,
        labels: np.ndarray,
        from_logits: bool = False,
    ) -> "TeacherAccuracy":
        """Fits the map on validation outputs and labels; returns self."""
        probs, labels = _checked(teacher_outputs, labels, from_logits)
        correct = (probs.argmax(-1) == labels).astype("float64")
        if correct.min() == correct.max():
            which = "wrong" if correct[0] == 1 else "right"
            raise ValueError(
                "The validation set must contain both right and wrong "
                f"teacher predictions; it has no {which} ones "
                f"(accuracy {correct.mean():.3f} on {len(correct)} examples)."
            )
        margin = _np_margin(probs)
        self.knots_x, self.knots_y = _isotonic(margin, correct)
        # Ties broken by class index, as `SLaMLoss` breaks them.
        order = np.argsort(-probs, axis=-1, kind="stable")
        hits = np.cumsum(order == labels[:, None], axis=-1)
        self.topk_accuracy = [float(v) for v in hits.mean(axis=0)]
        max_k = min(probs.shape[-1], self.MAX_K)
        self.topk_knots = [
            list(_isotonic(margin, hits[:, k - 1].astype("float64")))
            for k in range(2, max_k + 1)
        ]
        return self

    def topk_accuracy_at(self, margin: Any, k: int) -> Any:
        """Estimated P(true label in the teacher's top k | margin), ops."""
        if not self.topk_knots or k < 2:
            return None
        xs, ys = self.topk_knots[min(k, len(self.topk_knots) + 1) - 2]
        return _interpolation.interpolate(xs, ys, margin)

    def smallest_k(self, coverage: float) -> int:
        """Smallest k >= 2 whose top-k accuracy on V reaches `coverage`."""
        coverage = check_coverage(coverage)
        if self.topk_accuracy is None:
            return 2
        for k in range(2, len(self.topk_accuracy) + 1):
            if self.topk_accuracy[k - 1] >= coverage - 1e-12:
                return k
        return len(self.topk_accuracy)

    def __call__(self, probs: Any) -> Any:
        """alpha(x) for teacher probabilities `probs` (batch, C), ops only.

        Unfitted, returns the teacher's own top-1 probability.
        """
        probs = ops.cast(probs, "float32")
        if not self.fitted:
            return ops.max(probs, axis=-1)
        return _backend.dispatch("teacher_accuracy", _fitted_accuracy)(
            self, probs
        )

    def interpolate(self, margin: Any) -> Any:
        """Piecewise-linear interpolation of the knots at `margin`."""
        return _interpolation.interpolate(self.knots_x, self.knots_y, margin)

    def predict_numpy(
        self, teacher_outputs: np.ndarray, from_logits: bool = False
    ) -> np.ndarray:
        """alpha(x) in NumPy for a (n, C) array of teacher outputs."""
        probs = _to_probs(teacher_outputs, from_logits)
        if not self.fitted:
            return probs.max(-1)
        return np.interp(_np_margin(probs), self.knots_x, self.knots_y)

    def report(
        self,
        teacher_outputs: np.ndarray,
        labels: np.ndarray,
        from_logits: bool = False,
        num_bins: int = 10,
    ) -> dict:
        """Calibration report of the teacher on labeled data.

        Returns a dict: `bins` (a list of dicts with `lo`, `hi`, `count`,
        `confidence`, `accuracy`, `estimated`), `ece` (expected calibration
        error of the teacher's top-1 probability), `ece_estimator` (of this
        estimator's alpha), `accuracy` and `topk_accuracy`.
        """
        num_bins = _validation.check_positive_int("num_bins", num_bins)
        probs, labels = _checked(teacher_outputs, labels, from_logits)
        conf = probs.max(-1)
        correct = (probs.argmax(-1) == labels).astype("float64")
        est = self.predict_numpy(probs)
        bins, ece, ece_est = _calibration.calibration_bins(
            conf, correct, est, num_bins
        )
        order = np.argsort(-probs, axis=-1)
        topk = np.cumsum(order == labels[:, None], axis=-1).mean(0)
        return {
            "bins": bins,
            "ece": float(ece),
            "ece_estimator": float(ece_est),
            "accuracy": float(correct.mean()),
            "topk_accuracy": [float(v) for v in topk],
        }

    def plot(
        self,
        teacher_outputs: np.ndarray,
        labels: np.ndarray,
        path: str | os.PathLike | None = None,
        from_logits: bool = False,
        num_bins: int = 10,
    ) -> Any:
        """Reliability plot (needs matplotlib); saves to `path` if given.

        Returns a `matplotlib.figure.Figure` built without pyplot, so the
        process's matplotlib backend is left as the user set it.
        """
        rep = self.report(teacher_outputs, labels, from_logits, num_bins)
        knots = (self.knots_x, self.knots_y) if self.fitted else None
        fig = _calibration.reliability_figure(rep["bins"], rep["ece"], knots)
        if path is not None:
            fig.savefig(path, dpi=100)
        return fig

    def get_config(self) -> dict:
        return {
            "knots_x": self.knots_x,
            "knots_y": self.knots_y,
            "topk_accuracy": self.topk_accuracy,
            "topk_knots": self.topk_knots,
        }

    @classmethod
    def from_config(cls, config: dict) -> "TeacherAccuracy":
        return cls(**config)


def _checked(teacher_outputs, labels, from_logits):
    """Probabilities and class ids from the user's arrays, checked."""
    from_logits = _validation.check_bool("from_logits", from_logits)
    outputs = _output_checks.check_numpy_outputs(
        teacher_outputs, "teacher_outputs", from_logits
    )
    probs = _to_probs(outputs, from_logits)
    labels = _output_checks.check_numpy_labels(labels, *probs.shape)
    return probs, labels


def _knots(name, values):
    """A list of finite floats, for the knots of the accuracy map."""
    what = "a list of finite numbers"
    if isinstance(values, (str, bytes)) or np.ndim(values) != 1:
        _validation.fail(name, what, values, _validation.ArgumentTypeError)
    if not all(_validation.is_number(v) for v in values):
        _validation.fail(name, what, values, _validation.ArgumentTypeError)
    out = [float(v) for v in values]
    if not np.all(np.isfinite(out)):
        _validation.fail(name, what, values)
    return out


def check_coverage(coverage: float) -> float:
    """`coverage` in (0, 1] (shared by the estimator and `SLaMLoss`)."""
    return _validation.check_number(
        "coverage", coverage, min_value=0.0, max_value=1.0, min_inclusive=False
    )


def get_estimator(value: Any) -> "TeacherAccuracy | None":
    """A `TeacherAccuracy`, None, or one deserialized from its config."""
    if isinstance(value, dict):
        value = keras.saving.deserialize_keras_object(value)
    if value is None:
        return None
    return _validation.check_instance(
        "teacher_accuracy",
        value,
        TeacherAccuracy,
        "None, a `TeacherAccuracy` or its serialized config",
    )


def serialize_estimator(value: Any) -> dict | None:
    if value is None:
        return None
    return keras.saving.serialize_keras_object(value)


def estimate(estimator: TeacherAccuracy | None, probs: Any) -> Any:
    """alpha(x) with `keras.ops`: the estimator's, or the top-1 probability.

    The top-1 fallback for `estimator=None` is the unfitted estimator's.
    """
    return (estimator or TeacherAccuracy())(probs)


def _fitted_accuracy(estimator, probs):
    """The `keras.ops` reference of a fitted estimator's alpha(x) for
    float32 probabilities: the margin, then the knots interpolated."""
    return estimator.interpolate(teacher_margin(probs))


@_backend.register_fast_path("teacher_accuracy", "torch")
def _fitted_accuracy_torch(estimator, probs):
    """`_fitted_accuracy` in 21 aten events, nested ones included, at
    256 x 10 (the reference: 43, through the margin's and the
    interpolation's own fast paths): one `topk` for the
    margin, then one `bucketize` and four gathers into the knot segments,
    made once per knot table and device (`_interpolation.torch_buckets`).
    Hands over to the reference off torch tensors, below two classes and
    beyond `_interpolation._COMPARE_MAX_KNOTS` knots (where the reference
    searches instead of comparing)."""
    import torch

    num_classes = probs.shape[-1] if probs.shape else None
    if (
        not isinstance(probs, torch.Tensor)
        or num_classes is None
        or num_classes < 2
        or len(estimator.knots_x) > _interpolation._COMPARE_MAX_KNOTS
    ):
        return _fitted_accuracy(estimator, probs)
    buckets = _interpolation.torch_buckets(
        tuple(estimator.knots_x), tuple(estimator.knots_y), probs.device
    )
    top2 = torch.topk(probs, 2, dim=-1).values
    margin = top2[..., 0] - top2[..., 1]
    return _interpolation.interpolate_buckets_torch(buckets, margin)


def estimate_numpy(
    estimator: TeacherAccuracy | None,
    outputs: np.ndarray,
    from_logits: bool = False,
) -> np.ndarray:
    """alpha(x) in NumPy, with the same fallback as `estimate`."""
    estimator = estimator or TeacherAccuracy()
    return estimator.predict_numpy(outputs, from_logits=from_logits)


def _isotonic(margin, target):
    """Knots of the increasing isotonic fit of `target` on `margin`."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(
        increasing=True, y_min=0.0, y_max=1.0, out_of_bounds="clip"
    ).fit(margin, target)
    return [float(v) for v in iso.X_thresholds_], [
        float(v) for v in iso.y_thresholds_
    ]
