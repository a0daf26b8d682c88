"""Adapters that plug our losses into `keras.distillation.Distiller`."""

from typing import Any

import keras
from keras import ops

from keras_efficient import _data_checks
from keras_efficient import _distribution_checks
from keras_efficient import _validation


@keras.saving.register_keras_serializable(package="keras_efficient")
class DistillationLossAdapter(keras.distillation.DistillationLoss):
    """Uses a keras-efficient loss as a `keras.distillation.DistillationLoss`.

    `Distiller` passes the teacher's and the student's raw outputs (logits)
    to `compute_loss`; the wrapped loss must therefore read teacher logits
    (`teacher_from_logits=True`; `KnowledgeDistillationLoss` does by
    default), unless the teacher model ends in a softmax. The conventions
    are checked on every step: this package's losses check their own
    (see `SLaMLoss`), and for Keras's probability losses
    (`keras.losses.KLDivergence`, `CategoricalCrossentropy`,
    `CategoricalFocalCrossentropy`) the adapter raises when the teacher's
    outputs are not probabilities (logits from a model without a final
    softmax). A teacher and a student of different widths raise before
    the first step. Note: `Distiller` does not pass `sample_weight` to the
    distillation term, so per-example user weights are dropped on that
    path. For per-example weights, compile the student directly with the
    loss, teacher outputs as `y_true`, and pass `sample_weight` to `fit`.

    Args:
        loss: a `keras.losses.Loss` taking (teacher output, student output),
            or its serialized config.

    Example:

    ```python
    import keras
    from keras_efficient.losses import DistillationLossAdapter
    from keras_efficient.losses import KnowledgeDistillationLoss
    teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student,
        distillation_losses=DistillationLossAdapter(
            KnowledgeDistillationLoss(temperature=4.0)),
        student_loss_weight=0.5)
    distiller.compile(optimizer="adam",
                      loss="sparse_categorical_crossentropy")
    ```
    """

    def __init__(self, loss: keras.losses.Loss | dict):
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        self.loss = _validation.check_instance(
            "loss",
            loss,
            keras.losses.Loss,
            "a `keras.losses.Loss` instance or its serialized config",
        )

    def compute_loss(
        self, teacher_outputs: Any, student_outputs: Any, **kwargs: Any
    ) -> Any:
        problems = _keras_probability_loss_problems(
            self.loss, teacher_outputs, student_outputs
        )
        loss = ops.mean(self.loss(teacher_outputs, student_outputs))
        return _data_checks.raise_with(loss, problems)

    def validate_outputs(
        self, teacher_outputs: Any, student_outputs: Any
    ) -> None:
        if isinstance(teacher_outputs, (list, tuple, dict)) or isinstance(
            student_outputs, (list, tuple, dict)
        ):
            raise ValueError(
                "`DistillationLossAdapter` supports single-output teacher "
                "and student models."
            )
        t, s = tuple(teacher_outputs.shape), tuple(student_outputs.shape)
        if t and s and None not in (t[-1], s[-1]) and t[-1] != s[-1]:
            raise ValueError(
                "`DistillationLossAdapter`: the teacher's and the student's "
                "outputs must have the same number of classes on the last "
                f"axis. Received: teacher outputs of shape {t} and student "
                f"outputs of shape {s}."
            )

    def get_config(self) -> dict:
        return {"loss": keras.saving.serialize_keras_object(self.loss)}

    @classmethod
    def from_config(cls, config: dict) -> "DistillationLossAdapter":
        return cls(**config)


# Keras losses whose `y_true` must hold probabilities (they never softmax
# it); `from_logits` (where present) is about `y_pred` only.
_KERAS_PROBABILITY_LOSSES = (
    keras.losses.KLDivergence,
    keras.losses.CategoricalCrossentropy,
    keras.losses.CategoricalFocalCrossentropy,
)


def _keras_probability_loss_problems(loss, teacher_outputs, student_outputs):
    """In-graph: a Keras probability loss gets probabilities (each step)."""
    if not isinstance(loss, _KERAS_PROBABILITY_LOSSES):
        return []
    teacher_outputs = ops.convert_to_tensor(teacher_outputs)
    student_outputs = ops.convert_to_tensor(student_outputs)
    cls = type(loss).__name__
    tolerance = _distribution_checks.probability_tolerance(
        teacher_outputs.dtype, student_outputs.dtype
    )
    problems = [
        _distribution_checks.probabilities_problem(
            teacher_outputs,
            "teacher_outputs",
            f"`DistillationLossAdapter` wraps `keras.losses.{cls}`, which "
            "reads the teacher's outputs as probabilities, but `Distiller` "
            "passes the teacher's raw outputs (logits unless the teacher "
            "ends in a "
            "softmax): wrap `KnowledgeDistillationLoss()` (teacher logits) "
            "instead, or end the teacher in a softmax.",
            tolerance,
        )
    ]
    if not getattr(loss, "from_logits", False):
        problems.append(
            _distribution_checks.probabilities_problem(
                student_outputs,
                "student_outputs",
                f"`keras.losses.{cls}` reads the student's outputs as "
                "probabilities: pass `from_logits=True` to it where it has "
                "that argument, or end the student in a softmax.",
                tolerance,
            )
        )
    return problems
