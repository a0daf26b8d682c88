"""Argument checks of `ActiveDistillation` (private)."""

from keras_efficient import _validation as v
from keras_efficient.distillation.active.strategies import RobustSelection


def check_output_shape(shape):
    """`None` or the shape of one teacher output, e.g. `(10,)`."""
    if shape is None:
        return None
    if not isinstance(shape, (tuple, list)) or not shape:
        v.fail(
            "teacher_output_shape",
            "None or a non-empty tuple of positive integers",
            shape,
            v.ArgumentTypeError,
        )
    return v.check_int_tuple("teacher_output_shape", shape, len(shape))


def check_preprocessor(preprocessor):
    if preprocessor is not None and not callable(preprocessor):
        v.fail(
            "preprocessor",
            "None or a callable mapping a batch of pool inputs to the "
            "student's inputs",
            preprocessor,
            error=v.ArgumentTypeError,
        )
    return preprocessor


def check_teacher(teacher):
    if not callable(teacher):
        v.fail(
            "teacher",
            "a Keras model or a callable mapping a batch to outputs",
            teacher,
            error=v.ArgumentTypeError,
        )
    return teacher


def check_strategy_inputs(strategy, validation):
    """`RobustSelection` without a teacher accuracy needs `validation`."""
    if (
        isinstance(strategy, RobustSelection)
        and strategy.teacher_accuracy is None
        and validation is None
    ):
        raise ValueError(
            "strategy='robust' needs the teacher's accuracy: pass "
            "`validation=(x_val, y_val)` (labeled data the teacher is "
            "measured on) or `RobustSelection(teacher_accuracy=...)`. "
            "Without it, it would silently be margin selection."
        )
