"""SLaM: student-label mixing for distillation with unlabeled examples."""

import functools
import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_efficient import _backend
from keras_efficient import _validation as v
from keras_efficient.distillation import _common
from keras_efficient.distillation import _cross_entropies
from keras_efficient.distillation import _interpolation
from keras_efficient.distillation import _slam_teacher
from keras_efficient.distillation import teacher_accuracy as ta
from keras_efficient.distillation._teacher_loss import TeacherOutputsLoss

# The `epsilon` every 0.1.0 config holds (the constructor's default then).
_LEGACY_EPSILON = 1e-7


def _leading_below(values, bound):
    """Per row of `values`, how many leading entries are below `bound`
    (the `keras.ops` reference of `count_leading_below`; int32)."""
    # The index of the first entry that reaches `bound` (all of them when
    # none does). A minimum, not a cumulative product: XLA fuses it into
    # one kernel (a cumprod is a reduce-window of its own).
    n = values.shape[-1]
    first_reached = ops.where(
        ops.less(values, bound), n, np.arange(n, dtype="int32")
    )
    return ops.cast(ops.min(first_reached, axis=-1), "int32")


@_backend.register_fast_path("count_leading_below", "torch")
def _leading_below_torch(values, bound):
    """`_leading_below` in 3 torch calls (the reference: 5 `keras.ops`
    calls, casting between int32 and int64 on the way)."""
    import torch

    below = ops.convert_to_tensor(values) < bound
    return below.cumprod(-1).sum(-1, dtype=torch.int32)


def _count_below(margin, thresholds):
    """Per margin, how many of `thresholds` (a tuple of floats) exceed it
    (the `keras.ops` reference of `count_below_thresholds`; int32)."""
    m = ops.expand_dims(ops.cast(margin, "float32"), -1)
    below = ops.less(m, np.asarray(thresholds, "float32"))
    return ops.cast(ops.sum(ops.cast(below, "int32"), axis=-1), "int32")


@functools.lru_cache(maxsize=64)
def _torch_thresholds(thresholds, device):
    import torch

    return torch.tensor(thresholds, dtype=torch.float32, device=device)


@_backend.register_fast_path("count_below_thresholds", "torch")
def _count_below_torch(margin, thresholds):
    """`_count_below` in 3 torch calls, the thresholds made a tensor once
    per device."""
    import torch

    m = ops.convert_to_tensor(margin, "float32").unsqueeze(-1)
    bounds = _torch_thresholds(thresholds, m.device)
    return (m < bounds).sum(-1, dtype=torch.int32)


@keras.saving.register_keras_serializable(package="keras_efficient")
class SLaMLoss(TeacherOutputsLoss):
    """Student-label mixing loss (SLaM) for distillation.

    The student fits the teacher's label through a *mixture* of its own
    prediction that models how the teacher errs (Kontonis et al., "SLaM:
    Student-Label Mixing for Distillation with Unlabeled Examples", NeurIPS
    2023). With f the student's probabilities, alpha(x) the estimated
    teacher accuracy on x and top(t; k(x)) the k(x)-hot indicator of the
    teacher's k(x) most likely classes:

        mix(f) = alpha(x) * f + (1 - alpha(x)) * (1 - f) * top(t; k(x)) / norm
        loss   = cross_entropy(t, mix(f))

    What is the paper's: the mixture, alpha(x) and k(x) per example,
    estimated on a small labeled validation set, and `norm = 1` (its
    Remark B.1: not normalising by k(x) - 1 worked better in its
    experiments; `normalize=True` gives `norm = k(x) - 1`).

    What is ours (choices where the text we could consult is silent):

    - k(x) (default `k=None`): the smallest k >= 2 whose *per-example*
      top-k teacher accuracy, an isotonic map of the teacher margin fitted
      on V exactly like alpha(x) (`TeacherAccuracy.topk_accuracy_at`),
      reaches `coverage`; `k="global"` uses one k for all examples (the
      smallest whose top-k accuracy over V reaches `coverage`), an int
      fixes k. Without a fitted estimator, k = 2.
    - alpha(x) is floored at `min_alpha`. The mixture increases with f on
      the top-k classes only when alpha > 1/2 (`norm = 1`) or alpha > 1/k
      (`norm = k - 1`); below, the loss pushes the student *away* from the
      teacher's label, and at the bound its gradient is zero. By default
      alpha(x) >= that bound + 0.05.
    - The k(x)-hot set has exactly k(x) classes: ties at the k-th
      probability are broken by class index (lowest first).
    - The mixture is computed in log space, as
      `log alpha + log(r + (1 - r) f)` on the top-k classes with
      `r = (1 - alpha) / (alpha * norm)` and `log alpha + log f` elsewhere
      (float32, from `log_softmax`): no clip, so no class loses its
      gradient.

    A student confidently predicting a top-k class other than the teacher's
    gets a small gradient on that row (of order
    `(1 - r) * f / (r + (1 - r) f)`): under SLaM's noise model such a
    disagreement is explained by a teacher mistake. This is the method,
    not an underflow; start from a uniform (fresh) student or warm up with
    soft distillation.

    Conventions: `y_true` holds the teacher's per-class outputs
    (probabilities, or logits with `teacher_from_logits=True`); integer
    labels raise. `from_logits=True` (the default, as for every loss of
    this package) expects student *logits*; for a model ending in softmax
    pass `from_logits=False` (unlike `keras.losses.CategoricalCrossentropy`,
    whose default is False). Both conventions are checked on every call and
    every compiled step (JAX `jit`, TensorFlow graphs without XLA, torch):
    teacher logits with `teacher_from_logits=False` (rows off the simplex,
    1e-3 in float32, 2e-2 with 16-bit dtypes), teacher or student
    probabilities where logits are declared, non-finite teacher rows; a
    teacher of another width, a single column and integer class ids raise
    before the first step (see docs/methods/distillation.md).

    Args:
        teacher_accuracy: a fitted `TeacherAccuracy` (recommended), or None
            (then alpha(x) is the teacher's top-1 probability, floored).
        k: None (per-example k(x), see above), `"global"`, or an int >= 2.
        coverage: in (0, 1], the top-k accuracy k(x) must reach.
        target: `"soft"` (teacher probabilities) or `"hard"` (one-hot top-1).
        normalize: divide the mixing term by k(x) - 1.
        min_alpha: None (the bound above + 0.05) or a float in (0, 1]; an
            explicit value is still raised to the bound + 0.001.
        teacher_from_logits: `y_true` holds teacher logits.
        from_logits: `y_pred` holds student logits (default True).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Example:

    ```python
    import numpy as np
    from keras_efficient.losses import SLaMLoss, TeacherAccuracy
    rng = np.random.default_rng(0)
    val_probs = rng.dirichlet(np.ones(10), size=300)
    val_labels = np.where(rng.random(300) < 0.7, val_probs.argmax(-1), 0)
    est = TeacherAccuracy().fit(val_probs, val_labels)
    loss = SLaMLoss(teacher_accuracy=est)
    teacher = rng.dirichlet(np.ones(10), size=4).astype("float32")
    student_logits = rng.normal(size=(4, 10)).astype("float32")
    print(float(loss(teacher, student_logits)))
    # model.compile(optimizer="adam", loss=SLaMLoss(teacher_accuracy=est))
    ```
    """

    def __init__(
        self,
        teacher_accuracy: ta.TeacherAccuracy | None = None,
        k: int | str | None = None,
        coverage: float = 0.95,
        target: str = "soft",
        normalize: bool = False,
        min_alpha: float | None = None,
        teacher_from_logits: bool = False,
        from_logits: bool = True,
        reduction: str | None = "sum_over_batch_size",
        name: str = "slam_loss",
        dtype: str | None = None,
    ):
        super().__init__(
            teacher_from_logits, from_logits, reduction, name, dtype
        )
        self.teacher_accuracy = ta.get_estimator(teacher_accuracy)
        if k is not None and k != "global":
            k = v.check_int("k", k, min_value=2)
        self.k = k
        self.coverage = ta.check_coverage(coverage)
        self.target = v.check_choice("target", target, ("soft", "hard"))
        self.normalize = v.check_bool("normalize", normalize)
        if min_alpha is not None:
            min_alpha = v.check_number(
                "min_alpha",
                min_alpha,
                min_value=0.0,
                max_value=1.0,
                min_inclusive=False,
            )
        self.min_alpha = min_alpha

    def resolved_k(self, num_classes: int | None = None) -> int:
        """The global k: fixed, from coverage on V, or 2; capped at C."""
        if isinstance(self.k, int):
            k = self.k
        elif self.teacher_accuracy is not None:
            k = self.teacher_accuracy.smallest_k(self.coverage)
        else:
            k = 2
        if num_classes is not None:
            k = min(k, num_classes)
        return k

    def _per_example(self):
        est = self.teacher_accuracy
        return self.k is None and est is not None and bool(est.topk_knots)

    def example_k(
        self, t: Any, margin: Any = None, accuracy: Any = None
    ) -> Any:
        """k(x) per row of teacher probabilities `t` (int32, `keras.ops`).

        `margin`: the rows' top-1 minus top-2 probability, if known;
        `accuracy`: the estimated top-k accuracies there, k = 2, 3, ...
        (`_estimates`), if known.
        """
        num_classes = t.shape[-1]
        if not self._per_example():
            k = self.resolved_k(num_classes)
            return ops.full(ops.shape(t)[:-1], k, dtype="int32")
        est = self.teacher_accuracy
        kmax = min(num_classes, len(est.topk_knots) + 1)
        if margin is None:
            margin = _common.margin(t)
        if kmax <= 2:
            return ops.full(ops.shape(margin), 2, dtype="int32")
        # k(x) = 2 + the number of leading k whose estimated top-k accuracy
        # stays below coverage (the running best has not reached it yet).
        if accuracy is None:
            # The isotonic maps never decrease, so each reaches coverage
            # from one margin on: compare the margin with those points
            # (found once, on the host) instead of interpolating each map.
            bounds = self._coverage_margins(kmax)
            if bounds is not None:
                count = _backend.dispatch(
                    "count_below_thresholds", _count_below
                )
                return 2 + count(margin, bounds)
            accuracy = _interpolation.interpolate_tables(
                est.topk_knots[: kmax - 2], margin
            )
        count = _backend.dispatch("count_leading_below", _leading_below)
        return 2 + count(accuracy, self.coverage)

    def _coverage_margins(self, kmax):
        """`leading_thresholds` of the top-k maps k(x) reads at coverage,
        or None (a map decreases somewhere: interpolate them instead)."""
        tables = self.teacher_accuracy.topk_knots[: kmax - 2]
        return _interpolation.leading_thresholds(tables, self.coverage)

    def alpha(
        self, t: Any, k: Any, margin: Any = None, estimate: Any = None
    ) -> Any:
        """alpha(x), floored so the mixture increases with f (ops).

        `estimate`: the estimator's alpha(x) before the floor, if known.
        """
        est = self.teacher_accuracy
        if estimate is not None:
            alpha = estimate
        elif margin is not None and est is not None and est.fitted:
            alpha = est.interpolate(margin)
        else:
            alpha = ta.estimate(est, t)
        margin = 0.05 if self.min_alpha is None else 1e-3
        if self.normalize:
            bound = 1.0 / ops.cast(k, "float32")
            floor = ops.minimum(bound + margin, 1.0)
        else:
            # A Python number: eager torch pays for every op on a tensor.
            floor = min(0.5 + margin, 1.0)
        if self.min_alpha is not None and self.normalize:
            floor = ops.maximum(floor, self.min_alpha)
        elif self.min_alpha is not None:
            floor = max(floor, self.min_alpha)
        if isinstance(floor, float):
            # One op where the floor is a number in (0, 1].
            return ops.clip(alpha, floor, 1.0)
        return ops.clip(ops.maximum(alpha, floor), 0.0, 1.0)

    def _estimates(self, margin, num_classes):
        """The estimator's alpha(x) (before the floor) and, only where a
        top-k map decreases somewhere (else k(x) compares the margin with
        the maps' coverage points), the top-k accuracies k(x) reads, from
        one interpolation of all their tables (eager torch pays per call);
        None for what is not estimated."""
        est = self.teacher_accuracy
        tables = []
        if est is not None and est.fitted:
            tables.append((est.knots_x, est.knots_y))
        first_topk = len(tables)
        kmax = self._kmax(num_classes)
        if (
            self._per_example()
            and kmax > 2
            and self._coverage_margins(kmax) is None
        ):
            tables += list(est.topk_knots[: kmax - 2])
        if not tables:
            return None, None
        values = _interpolation.interpolate_tables(tables, margin)
        alpha = values[..., 0] if first_topk else None
        accuracy = (
            values[..., first_topk:] if len(tables) > first_topk else None
        )
        return alpha, accuracy

    def call(self, y_true: Any, y_pred: Any) -> Any:
        num_classes = y_pred.shape[-1] if y_pred.shape else None
        if isinstance(self.k, int) and num_classes and self.k > num_classes:
            raise ValueError(
                f"`k` must be at most the number of classes ({num_classes}):"
                " the top-k mixing would take every class. Received: "
                f"k={self.k}"
            )
        t = self.teacher_probabilities(y_true, y_pred)
        topk, alpha, r = _slam_teacher.teacher_side(self, t)
        if self.target == "hard":
            target = ops.one_hot(ops.argmax(t, axis=-1), t.shape[-1])
        else:
            target = t
        return _cross_entropies.mixture_cross_entropy(
            target, y_pred, alpha, r, topk, self.from_logits
        )

    def _kmax(self, num_classes):
        if self._per_example():
            return min(num_classes, len(self.teacher_accuracy.topk_knots) + 1)
        return self.resolved_k(num_classes)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            teacher_accuracy=ta.serialize_estimator(self.teacher_accuracy),
            k=self.k,
            coverage=self.coverage,
            target=self.target,
            normalize=self.normalize,
            min_alpha=self.min_alpha,
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> "SLaMLoss":
        config = dict(config)
        # 0.1.0 saved `epsilon` (default 1e-7), a clip that the log-space
        # mixture no longer needs: read and dropped, so old files load.
        epsilon = config.pop("epsilon", None)
        if epsilon is not None and epsilon != _LEGACY_EPSILON:
            warnings.warn(
                f"SLaMLoss: ignoring `epsilon={epsilon}` from a saved "
                "config; the loss is computed in log space and has no "
                "epsilon since 0.2.0.",
                stacklevel=2,
            )
        return super().from_config(config)
