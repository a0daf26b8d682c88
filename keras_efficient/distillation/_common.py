"""Helpers shared by the distillation losses (private)."""

import keras
from keras import ops

from keras_efficient.distillation.teacher_accuracy import TeacherAccuracy


def teacher_probs(y_true, teacher_from_logits):
    y_true = ops.cast(y_true, "float32")
    if teacher_from_logits:
        return ops.softmax(y_true, axis=-1)
    return y_true


def student_probs(y_pred, from_logits):
    y_pred = ops.cast(y_pred, "float32")
    if from_logits:
        return ops.softmax(y_pred, axis=-1)
    return y_pred


def soft_ce(target, y_pred, from_logits, eps=1e-7):
    """Cross-entropy of probabilities `target` vs student output, float32."""
    y_pred = ops.cast(y_pred, "float32")
    if from_logits:
        logp = ops.log_softmax(y_pred, axis=-1)
    else:
        logp = ops.log(ops.clip(y_pred, eps, 1.0))
    return -ops.sum(target * logp, axis=-1)


def get_estimator(value):
    if value is None or isinstance(value, TeacherAccuracy):
        return value
    if isinstance(value, dict):
        return keras.saving.deserialize_keras_object(value)
    raise ValueError(
        "`teacher_accuracy` must be None, a `TeacherAccuracy` or its "
        f"serialized config; got {value!r}."
    )


def serialize_estimator(value):
    if value is None:
        return None
    return keras.saving.serialize_keras_object(value)


def check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {allowed}; got {value!r}.")
