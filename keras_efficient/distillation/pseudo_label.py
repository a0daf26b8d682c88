"""Confidence-thresholded pseudo-labelling: the simplest distillation
baseline with a trust filter."""

from typing import Any

import keras
from keras import ops

from keras_efficient import _validation as v
from keras_efficient.distillation import _common
from keras_efficient.distillation._teacher_loss import TeacherOutputsLoss


@keras.saving.register_keras_serializable(package="keras_efficient")
class PseudoLabelLoss(TeacherOutputsLoss):
    """Cross-entropy on the teacher's top-1 where the teacher is confident.

    The baseline users reach for first (the pseudo-labelling of Lee, 2013,
    with the confidence mask of FixMatch, Sohn et al., 2020): an example
    whose teacher top-1 probability is at least `threshold` is trained on
    that one-hot label; every other example gets weight 0. As in FixMatch,
    the default `"sum_over_batch_size"` reduction divides by the whole
    batch, masked rows included, so the loss scale falls as fewer rows
    pass. User `sample_weight` multiplies the mask.

    Conventions as for `SLaMLoss`: `y_true` the teacher's per-class outputs
    (probabilities, logits with `teacher_from_logits=True`), `y_pred` the
    student's logits (`from_logits=True`) or probabilities.

    Args:
        threshold: in [0, 1]; teacher max probability needed (default 0.95;
            0 trains on every top-1, i.e. hard distillation).
        teacher_from_logits: `y_true` holds teacher logits.
        from_logits: `y_pred` holds student logits (default True).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Example:

    ```python
    import numpy as np
    from keras_efficient.distillation import PseudoLabelLoss
    t = np.array([[0.97, 0.02, 0.01], [0.5, 0.3, 0.2]], "float32")
    s = np.zeros((2, 3), "float32")
    per_row = PseudoLabelLoss(threshold=0.9, reduction="none")(t, s)
    assert float(per_row[1]) == 0.0  # the unsure row is masked
    ```
    """

    def __init__(
        self,
        threshold: float = 0.95,
        teacher_from_logits: bool = False,
        from_logits: bool = True,
        reduction: str | None = "sum_over_batch_size",
        name: str = "pseudo_label_loss",
        dtype: str | None = None,
    ):
        super().__init__(
            teacher_from_logits, from_logits, reduction, name, dtype
        )
        self.threshold = v.check_fraction(
            "threshold", threshold, allow_one=True
        )

    def mask(self, y_true: Any) -> Any:
        """1 where the teacher's top-1 probability >= threshold (ops)."""
        t = _common.teacher_probs(y_true, self.teacher_from_logits)
        return ops.cast(ops.max(t, axis=-1) >= self.threshold, "float32")

    def call(self, y_true: Any, y_pred: Any) -> Any:
        t = self.teacher_probabilities(y_true, y_pred)
        hard = ops.one_hot(ops.argmax(t, axis=-1), t.shape[-1])
        ce = _common.soft_ce(hard, y_pred, self.from_logits)
        return self.mask(y_true) * ce

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(threshold=self.threshold)
        return config
