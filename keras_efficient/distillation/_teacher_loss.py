"""The base of the losses trained against a teacher's outputs (private)."""

from typing import Any

import keras

from keras_efficient import _data_checks
from keras_efficient import _validation as v
from keras_efficient.distillation import _common
from keras_efficient.distillation import _output_checks


class TeacherOutputsLoss(keras.losses.Loss):
    """A loss whose `y_true` holds a teacher's per-class outputs.

    Holds what every distillation loss of this package shares: the two
    output conventions (`teacher_from_logits` for `y_true`, `from_logits`
    for `y_pred`), their checks on every call (`check_outputs`, run by
    `__call__` before Keras casts the outputs to the loss dtype) and their
    config. Subclasses read the teacher through `teacher_probabilities` in
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

    def __call__(
        self, y_true: Any, y_pred: Any, sample_weight: Any = None
    ) -> Any:
        problems = self.check_outputs(y_true, y_pred)
        losses = super().__call__(y_true, y_pred, sample_weight=sample_weight)
        return _data_checks.raise_with(losses, problems)

    def check_outputs(self, y_true: Any, y_pred: Any) -> list:
        """Raises on outputs that do not match the declared conventions.

        Statically on integer class ids as `y_true`, a teacher of another
        width than the student, a single column; in the graph (every call
        and every compiled step) on non-finite teacher outputs, logits
        where probabilities are declared and probabilities where logits
        are (for both `y_true` and `y_pred`). The in-graph checks are
        returned (`_data_checks.Problem`s) and tied to the loss value by
        `__call__`, so they cost no host call on JAX.
        """
        return _output_checks.check_outputs(self, y_true, y_pred)

    def teacher_probabilities(self, y_true: Any, y_pred: Any) -> Any:
        """The teacher's probabilities (float32) from `y_true`."""
        return _common.teacher_probs(y_true, self.teacher_from_logits)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            teacher_from_logits=self.teacher_from_logits,
            from_logits=self.from_logits,
        )
        return config
