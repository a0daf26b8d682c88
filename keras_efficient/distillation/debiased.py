"""Debiased (weighted) distillation."""

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_efficient import _backend
from keras_efficient import _validation as v
from keras_efficient.distillation import _common
from keras_efficient.distillation import _output_checks
from keras_efficient.distillation import teacher_accuracy as ta
from keras_efficient.distillation._teacher_loss import TeacherOutputsLoss


@keras.saving.register_keras_serializable(package="keras_efficient")
class DebiasedDistillationLoss(TeacherOutputsLoss):
    """Distillation loss reweighted by the estimated teacher accuracy.

    Each example's cross-entropy against the teacher is weighted by
    w(x) = alpha(x) ** power (floored at `floor`) / c, where alpha is a
    fitted `TeacherAccuracy` and the constant c makes w average 1 over the
    unlabeled pool. User weights passed as `sample_weight` multiply w(x).

    What is the paper's (Iliopoulos et al., "Weighted Distillation with
    Unlabeled Examples", NeurIPS 2022): reweighting each unlabeled
    example's distillation loss by how far the teacher's label on it can be
    trusted, estimated from the teacher's margin on a small labeled
    validation set, hyper-parameter free, for hard and soft distillation.
    What is ours: the weight is the isotonic accuracy estimate alpha(x)
    itself (`power=1`), normalised to mean 1 over the pool, with optional
    `power` / `floor`. The paper's exact weight function could not be
    checked against its full text here (only its abstract was reachable),
    so treat w = alpha / mean(alpha) as our reading, not the paper's
    formula.

    The normaliser c must be chosen explicitly, so the weights cannot
    silently average 0.64 instead of 1: give `pool_teacher_outputs` (or
    call `set_pool`; c computed once, the default recommendation), a
    `normalizer=`, or `per_batch=True` (c = the batch's mean raw weight,
    a noisier choice that rescales every batch to mean 1). Calling the
    loss with none of these raises.

    Args:
        teacher_accuracy: a fitted `TeacherAccuracy` (None: alpha = teacher's
            top-1 probability).
        pool_teacher_outputs: optional (n, C) teacher outputs on the pool
            (same format as `y_true`) used to compute the normaliser.
        power: exponent applied to alpha (default 1).
        floor: lower bound on alpha ** power before normalising (default 0).
        normalizer: the constant c directly; stored in the config.
        per_batch: normalise over each batch instead of a fixed c.
        teacher_from_logits: `y_true` holds teacher logits.
        from_logits: `y_pred` holds student logits (default True).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Example:

    ```python
    import numpy as np
    from keras_efficient.losses import DebiasedDistillationLoss
    from keras_efficient.losses import TeacherAccuracy
    # The teacher is right half the time at margin 0, always at margin 1
    # (`TeacherAccuracy().fit(val_probs, val_labels)` learns such a map).
    est = TeacherAccuracy(knots_x=[0.0, 1.0], knots_y=[0.5, 1.0])
    pool = np.random.default_rng(0).dirichlet(np.ones(10), size=1000)
    loss = DebiasedDistillationLoss(est, pool_teacher_outputs=pool)
    weights = np.asarray(loss.weights(pool.astype("float32")))
    assert abs(weights.mean() - 1.0) < 1e-4  # mean 1 over the pool
    ```
    """

    def __init__(
        self,
        teacher_accuracy: ta.TeacherAccuracy | None = None,
        pool_teacher_outputs: np.ndarray | None = None,
        power: float = 1.0,
        floor: float = 0.0,
        normalizer: float | None = None,
        per_batch: bool = False,
        teacher_from_logits: bool = False,
        from_logits: bool = True,
        reduction: str | None = "sum_over_batch_size",
        name: str = "debiased_distillation_loss",
        dtype: str | None = None,
    ):
        super().__init__(
            teacher_from_logits, from_logits, reduction, name, dtype
        )
        self.teacher_accuracy = ta.get_estimator(teacher_accuracy)
        self.power = v.check_number(
            "power", power, min_value=0.0, min_inclusive=False
        )
        self.floor = v.check_fraction("floor", floor)
        self.per_batch = v.check_bool("per_batch", per_batch)
        self.normalizer = None
        if normalizer is not None:
            self.normalizer = v.check_number(
                "normalizer", normalizer, min_value=0.0, min_inclusive=False
            )
        if pool_teacher_outputs is not None:
            self.set_pool(pool_teacher_outputs)
        if self.per_batch and self.normalizer is not None:
            raise ValueError(
                "`per_batch=True` and a fixed normaliser (`normalizer=` or "
                "`pool_teacher_outputs=`) exclude each other."
            )

    def _raw_weights_numpy(self, outputs):
        alpha = ta.estimate_numpy(
            self.teacher_accuracy, outputs, self.teacher_from_logits
        )
        return np.maximum(alpha**self.power, self.floor)

    def set_pool(
        self, pool_teacher_outputs: np.ndarray
    ) -> "DebiasedDistillationLoss":
        """Computes the normaliser (mean raw weight over the pool) once."""
        pool = _output_checks.check_numpy_outputs(
            pool_teacher_outputs,
            "pool_teacher_outputs",
            self.teacher_from_logits,
            flag="teacher_from_logits",
        )
        mean = float(self._raw_weights_numpy(pool).mean())
        if not mean > 0:
            raise ValueError(
                "The teacher-accuracy weights are all 0 on the pool; "
                "use `floor` > 0."
            )
        self.normalizer = mean
        # The normaliser is a mean over this many classes' outputs; a batch
        # of another width would be weighted by the wrong constant.
        self._pool_classes = pool.shape[-1]
        return self

    def weights(self, y_true: Any) -> Any:
        """w(x) for a batch of teacher outputs (keras.ops)."""
        t = _common.teacher_probs(y_true, self.teacher_from_logits)
        return self._weights_of(t)

    def _weights_of(self, t):
        if not self.per_batch and self.normalizer is None:
            raise ValueError(
                "DebiasedDistillationLoss has no normaliser: pass "
                "`pool_teacher_outputs=` (the teacher's outputs on the "
                "unlabeled pool; or call `set_pool`), `normalizer=`, or "
                "`per_batch=True`. Without one the weights would not "
                "average 1."
            )
        return _backend.dispatch("debiased_weights", _weights)(self, t)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        pool_classes = getattr(self, "_pool_classes", None)
        width = y_true.shape[-1] if y_true.shape else None
        if pool_classes is not None and width not in (None, pool_classes):
            raise ValueError(
                "`y_true` must have as many classes as the pool the "
                f"normaliser was computed on ({pool_classes}); call "
                "`set_pool` with this teacher's outputs on its pool. "
                f"Received: y_true.shape={tuple(y_true.shape)}"
            )
        t = self.teacher_probabilities(y_true, y_pred)
        ce = _common.soft_ce(t, y_pred, self.from_logits)
        return self._weights_of(t) * ce

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            teacher_accuracy=ta.serialize_estimator(self.teacher_accuracy),
            power=self.power,
            floor=self.floor,
            normalizer=self.normalizer,
            per_batch=self.per_batch,
        )
        return config


def _weights(loss, t):
    """The `keras.ops` reference of w(x) for teacher probabilities `t`."""
    w = ta.estimate(loss.teacher_accuracy, t)
    # The defaults change nothing (alpha >= 0): skipped, as eager torch
    # pays for every op.
    if loss.power != 1.0:
        w = ops.power(w, loss.power)
    if loss.floor > 0.0:
        w = ops.maximum(w, loss.floor)
    if loss.per_batch:
        return w / ops.maximum(ops.mean(w), 1e-12)
    return w / loss.normalizer


@_backend.register_fast_path("debiased_weights", "torch")
def _weights_torch(loss, t):
    """`_weights` with the fixed normaliser as a cached float32 tensor
    (`_backend.torch_constant`: a Python number is wrapped and copied on
    every call, 4 aten calls); alpha(x) through the estimator's own fast
    path. Hands `power`, `floor` and `per_batch` to the reference."""
    w = ta.estimate(loss.teacher_accuracy, t)
    if loss.power != 1.0 or loss.floor > 0.0 or loss.per_batch:
        return _weights(loss, t)
    if not hasattr(w, "device"):
        return w / loss.normalizer
    return w / _backend.torch_constant(loss.normalizer, w.device)
