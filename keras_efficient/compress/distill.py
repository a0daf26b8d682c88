"""Distil the original model into its compressed copy.

`distill(teacher, student, data)` trains `student` (e.g. the output of
`compress`) on the logits of `teacher` (the model it was cut from):

- logit distillation, `KnowledgeDistillationLoss` (temperature KD) behind
  `keras.distillation.Distiller` through `DistillationLossAdapter`, plus
  `student_loss_weight` times the label loss;
- with `hidden_weight > 0`, hidden-state distillation as well: the output
  of every block of the student, through a learned linear projection to
  the teacher's width (widths differ after hidden-channel removal), is
  pulled to the teacher's block output by mean squared error (Minitron's
  intermediate-state loss). This runs as an equivalent `fit` of the
  student with the projections; they are dropped afterwards.
"""

from typing import Any

import keras
import numpy as np

from keras_efficient._validation import check_fraction
from keras_efficient._validation import check_instance
from keras_efficient._validation import check_number
from keras_efficient._validation import check_positive_int
from keras_efficient._validation import fail
from keras_efficient.compress.calibration import check_data
from keras_efficient.distillation.adapters import DistillationLossAdapter
from keras_efficient.distillation.kd import KnowledgeDistillationLoss


def _block_names(model):
    """Names of the blocks whose outputs hidden distillation compares."""
    names = [
        layer.name
        for layer in model.layers
        if layer.name.startswith(("block_", "transformer_layer_"))
    ]
    if not names:
        fail(
            "student",
            "a functional model with its blocks (`block_i` / "
            "`transformer_layer_i`) in its own graph for hidden_weight > 0 "
            "(a `TransformerLM` or a keras-hub backbone)",
            type(model).__name__,
        )
    return names


class _TeacherTargets(keras.utils.PyDataset):
    """Batches `(x, (y, teacher logits, teacher block outputs...))`."""

    def __init__(self, teacher_features, x, y, batch_size):
        super().__init__()
        self.teacher_features = teacher_features
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return int(np.ceil(len(self.y) / self.batch_size))

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        x = self.x[part]
        targets = [
            keras.ops.convert_to_numpy(t) for t in self.teacher_features(x)
        ]
        return x, (self.y[part], *targets)


def _hidden_fit(teacher, student, x, y, options):
    """The `fit` of logit + hidden-state distillation (see module)."""
    names = _block_names(student)
    teacher_names = _block_names(teacher)
    if len(names) != len(teacher_names):
        fail(
            "student",
            f"as many blocks as the teacher ({len(teacher_names)}) for "
            "hidden-state distillation",
            len(names),
        )
    teacher_features = keras.Model(
        teacher.inputs,
        [teacher.output] + [teacher.get_layer(n).output for n in teacher_names],
    )
    width = teacher.get_layer(teacher_names[0]).output.shape[-1]
    projections = [
        keras.layers.Dense(
            width, use_bias=False, name=f"hidden_projection_{i}"
        )(student.get_layer(n).output)
        for i, n in enumerate(names)
    ]
    trainer = keras.Model(
        student.inputs, [student.output, student.output] + projections
    )
    weight = options["student_loss_weight"]
    n = len(names)
    trainer.compile(
        optimizer=options["optimizer"],
        loss=[
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            KnowledgeDistillationLoss(options["temperature"]),
        ]
        + [keras.losses.MeanSquaredError()] * n,
        loss_weights=[weight, 1.0 - weight]
        + [options["hidden_weight"] / n] * n,
    )
    data = _TeacherTargets(teacher_features, x, y, options["batch_size"])
    return trainer.fit(
        data,
        epochs=options["epochs"],
        verbose=options["verbose"],
        callbacks=options["callbacks"],
    )


def make_distiller(
    teacher: keras.Model,
    student: keras.Model,
    temperature: float = 2.0,
    student_loss_weight: float = 0.0,
) -> keras.distillation.Distiller:
    """`keras.distillation.Distiller` with temperature KD (`distill`'s)."""
    return keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=DistillationLossAdapter(
            KnowledgeDistillationLoss(temperature)
        ),
        student_loss_weight=student_loss_weight,
    )


def distill(
    teacher: keras.Model,
    student: keras.Model,
    data: tuple,
    epochs: int = 1,
    batch_size: int = 32,
    temperature: float = 2.0,
    student_loss_weight: float = 0.0,
    hidden_weight: float = 0.0,
    optimizer: Any = "adam",
    callbacks: list | None = None,
    verbose: Any = "auto",
) -> keras.callbacks.History:
    """Trains `student` to match `teacher`'s logits (and block outputs).

    Args:
        teacher: the original model (not trained; its weights stay).
        student: the compressed model (trained in place).
        data: a tuple `(x, y)` of arrays: inputs and labels (the labels
            feed the `student_loss_weight` term).
        epochs, batch_size: as in `fit`.
        temperature: KD temperature T > 0.
        student_loss_weight: weight in [0, 1] of the label loss; the
            distillation loss has `1 - student_loss_weight`.
        hidden_weight: weight >= 0 of the hidden-state loss (mean squared
            error of every block's output, projected to the teacher's
            width); `0`: logits only, through `keras.distillation.Distiller`.
        optimizer: a Keras optimizer or its name.
        callbacks: `fit` callbacks.
        verbose: as in `fit` (`"auto"`: a progress bar on a terminal).

    Returns:
        The `History` of the `fit`.

    Example:

    >>> import numpy as np
    >>> from keras_efficient.applications import TransformerLM
    >>> from keras_efficient.compress import compress, distill
    >>> teacher = TransformerLM(vocabulary_size=32, sequence_length=8,
    ...     hidden_dim=16, num_layers=1, num_heads=2)
    >>> x = np.random.randint(0, 32, size=(8, 9))
    >>> student = compress(teacher, x[:, :-1], ffn_ratio=0.5)
    >>> history = distill(teacher, student, (x[:, :-1], x[:, 1:]), verbose=0)
    >>> len(history.history["loss"])
    1
    """
    check_instance("teacher", teacher, keras.Model, "a keras.Model")
    check_instance("student", student, keras.Model, "a keras.Model")
    if student is teacher:
        fail("student", "a different model than `teacher`", student.name)
    check_data("data", data)
    if not (isinstance(data, tuple) and len(data) == 2):
        fail("data", "a tuple `(x, y)` of inputs and labels", data)
    x, y = data
    options = {
        "epochs": check_positive_int("epochs", epochs),
        "batch_size": check_positive_int("batch_size", batch_size),
        "temperature": check_number(
            "temperature", temperature, min_value=0.0, min_inclusive=False
        ),
        "student_loss_weight": check_fraction(
            "student_loss_weight", student_loss_weight, allow_one=True
        ),
        "hidden_weight": check_number(
            "hidden_weight", hidden_weight, min_value=0.0
        ),
        "optimizer": optimizer,
        "callbacks": callbacks,
        "verbose": verbose,
    }
    if options["hidden_weight"] > 0:
        return _hidden_fit(teacher, student, x, y, options)
    distiller = make_distiller(
        teacher, student, temperature, options["student_loss_weight"]
    )
    distiller.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller.fit(
        x,
        y,
        batch_size=options["batch_size"],
        epochs=options["epochs"],
        callbacks=callbacks,
        verbose=verbose,
    )
