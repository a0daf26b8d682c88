"""Argument checks of `ActiveDistillation` (private)."""

import numpy as np

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


def check_validation(validation, pool):
    """`None` or labeled `(x_val, y_val)` shaped like the pool's inputs."""
    if validation is None:
        return None
    what = "None or a pair (x_val, y_val) of arrays of equal length"
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        v.fail("validation", what, validation, v.ArgumentTypeError)
    x_val, y_val = (np.asarray(part) for part in validation)
    if x_val.ndim == 0 or y_val.ndim == 0 or len(x_val) != len(y_val):
        v.fail("validation", what, validation)
    if len(x_val) == 0:
        v.fail("validation", "at least one labeled example", validation)
    if x_val.shape[1:] != pool.shape[1:]:
        v.fail(
            "validation",
            f"inputs shaped like the pool's, (n,) + {pool.shape[1:]}; "
            f"got x_val of shape {x_val.shape}",
            "(x_val, y_val)",
        )
    return validation


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
