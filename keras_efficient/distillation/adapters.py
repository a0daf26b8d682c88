"""Adapters that plug our losses into `keras.distillation.Distiller`."""

from typing import Any

import keras
from keras import ops

from keras_efficient import _validation


@keras.saving.register_keras_serializable(package="keras_efficient")
class DistillationLossAdapter(keras.distillation.DistillationLoss):
    """Uses a keras-efficient loss as a `keras.distillation.DistillationLoss`.

    `Distiller` passes the teacher's and the student's raw outputs (logits)
    to `compute_loss`; the wrapped loss must therefore read teacher logits
    (`teacher_from_logits=True`; `KnowledgeDistillationLoss` does by
    default). Note: `Distiller` does not pass `sample_weight` to the
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
        return ops.mean(self.loss(teacher_outputs, student_outputs))

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

    def get_config(self) -> dict:
        return {"loss": keras.saving.serialize_keras_object(self.loss)}

    @classmethod
    def from_config(cls, config: dict) -> "DistillationLossAdapter":
        return cls(**config)
