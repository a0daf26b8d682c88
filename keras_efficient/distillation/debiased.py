"""Debiased (weighted) distillation."""

import keras
import numpy as np
from keras import ops

from keras_efficient import _validation as v
from keras_efficient.distillation import _common
from keras_efficient.distillation import teacher_accuracy as ta


@keras.saving.register_keras_serializable(package="keras_efficient")
class DebiasedDistillationLoss(keras.losses.Loss):
    """Distillation loss reweighted by the estimated teacher accuracy.

    Each example's cross-entropy against the teacher is weighted by
    w(x) = alpha(x) ** power (floored at `floor`) / c, where alpha is a
    fitted `TeacherAccuracy` and the constant c makes w average 1 over the
    unlabeled pool. c is computed ONCE, when the loss is built, from
    `pool_teacher_outputs` (or with `set_pool`), never per batch (after
    "Weighted Distillation with Unlabeled Examples", Iliopoulos et al.,
    NeurIPS 2022). Hyper-parameter free by default. User weights passed as
    `sample_weight` multiply w(x).

    Args:
        teacher_accuracy: a fitted `TeacherAccuracy` (None: alpha = teacher's
            top-1 probability).
        pool_teacher_outputs: optional (n, C) teacher outputs on the pool
            (same format as `y_true`) used to compute the normaliser.
        power: exponent applied to alpha (default 1).
        floor: lower bound on alpha ** power before normalising (default 0).
        normalizer: the constant c directly (default 1 when no pool given);
            stored in the config.
        teacher_from_logits: `y_true` holds teacher logits.
        from_logits: `y_pred` holds student logits (default True).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Example:

    ```python
    import numpy as np
    from keras_efficient.losses import DebiasedDistillationLoss
    from keras_efficient.losses import TeacherAccuracy
    rng = np.random.default_rng(0)
    val_probs = rng.dirichlet(np.ones(10), size=300)
    val_labels = np.where(rng.random(300) < 0.7, val_probs.argmax(-1), 0)
    est = TeacherAccuracy().fit(val_probs, val_labels)
    pool = rng.dirichlet(np.ones(10), size=1000).astype("float32")
    loss = DebiasedDistillationLoss(est, pool_teacher_outputs=pool)
    print(float(loss(pool[:8], rng.normal(size=(8, 10)))))
    ```
    """

    def __init__(
        self,
        teacher_accuracy=None,
        pool_teacher_outputs=None,
        power=1.0,
        floor=0.0,
        normalizer=None,
        teacher_from_logits=False,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="debiased_distillation_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.teacher_accuracy = ta.get_estimator(teacher_accuracy)
        self.power = v.check_number(
            "power", power, min_value=0.0, min_inclusive=False
        )
        self.floor = v.check_fraction("floor", floor)
        self.teacher_from_logits = v.check_bool(
            "teacher_from_logits", teacher_from_logits
        )
        self.from_logits = v.check_bool("from_logits", from_logits)
        self.normalizer = 1.0
        if normalizer is not None:
            self.normalizer = v.check_number(
                "normalizer", normalizer, min_value=0.0, min_inclusive=False
            )
        if pool_teacher_outputs is not None:
            self.set_pool(pool_teacher_outputs)

    def _raw_weights_numpy(self, outputs):
        alpha = ta.estimate_numpy(
            self.teacher_accuracy, outputs, self.teacher_from_logits
        )
        return np.maximum(alpha**self.power, self.floor)

    def set_pool(self, pool_teacher_outputs):
        """Computes the normaliser (mean raw weight over the pool) once."""
        pool = np.asarray(pool_teacher_outputs)
        if pool.ndim != 2 or len(pool) == 0:
            raise ValueError(
                "`pool_teacher_outputs` must have shape (n, num_classes) "
                f"with n > 0; got shape {pool.shape}."
            )
        mean = float(self._raw_weights_numpy(pool).mean())
        if not mean > 0:
            raise ValueError(
                "The teacher-accuracy weights are all 0 on the pool; "
                "use `floor` > 0."
            )
        self.normalizer = mean
        return self

    def weights(self, y_true):
        """w(x) for a batch of teacher outputs (keras.ops)."""
        t = _common.teacher_probs(y_true, self.teacher_from_logits)
        alpha = ta.estimate(self.teacher_accuracy, t)
        w = ops.maximum(ops.power(alpha, self.power), self.floor)
        return w / self.normalizer

    def call(self, y_true, y_pred):
        t = _common.teacher_probs(y_true, self.teacher_from_logits)
        ce = _common.soft_ce(t, y_pred, self.from_logits)
        return self.weights(y_true) * ce

    def get_config(self):
        config = super().get_config()
        config.update(
            teacher_accuracy=ta.serialize_estimator(self.teacher_accuracy),
            power=self.power,
            floor=self.floor,
            normalizer=self.normalizer,
            teacher_from_logits=self.teacher_from_logits,
            from_logits=self.from_logits,
        )
        return config
