"""The base of the losses trained against a teacher's outputs (private)."""

from typing import Any

import keras

from keras_efficient import _validation as v
from keras_efficient.distillation import _common


class TeacherOutputsLoss(keras.losses.Loss):
    """A loss whose `y_true` holds a teacher's per-class outputs.

    Holds what every distillation loss of this package shares: the two
    output conventions (`teacher_from_logits` for `y_true`, `from_logits`
    for `y_pred`), their checks on the first call and their config.
    Subclasses call `teacher_probabilities` (or `check_outputs`) first in
    `call`, and extend `get_config`.
    """

    def __init__(
        self,
        teacher_from_logits: bool,
        from_logits: bool,
        reduction: str | None,
        name: str | None,
        dtype: str | None = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.teacher_from_logits = v.check_bool(
            "teacher_from_logits", teacher_from_logits
        )
        self.from_logits = v.check_bool("from_logits", from_logits)

    def check_outputs(self, y_true: Any, y_pred: Any) -> None:
        """Raises on integer labels as `y_true`, on non-finite teacher
        outputs and on probabilities passed as logits (first call)."""
        _common.check_distribution_targets(self, y_true, y_pred)
        _common.check_outputs_once(self, y_true, y_pred)

    def teacher_probabilities(self, y_true: Any, y_pred: Any) -> Any:
        """`check_outputs`, then the teacher's probabilities (float32)."""
        self.check_outputs(y_true, y_pred)
        return _common.teacher_probs(y_true, self.teacher_from_logits)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            teacher_from_logits=self.teacher_from_logits,
            from_logits=self.from_logits,
        )
        return config
