"""Run-time checks of the data `ActiveDistillation` receives (private).

The pool, the validation set and the teacher's answers arrive as data,
not as settings; each is checked where it enters, once, in NumPy (active
selection runs between epochs, outside the compiled step), and a mistake
is named in `_validation.py`'s style: the argument, what was received and
what is allowed.
"""

from typing import Any

import numpy as np

from keras_efficient import _validation as v
from keras_efficient.distillation.active.pool import ArrayPool


def check_answers(
    y: Any, num_inputs: int, shape: tuple | None, round_index: int
) -> None:
    """The teacher's answers: one row of `shape` per input."""
    where = "on the validation set"
    if round_index is not None:
        where = f"in round {round_index}"
    expected = (num_inputs,) + tuple(shape)
    if y.shape == expected:
        return
    if y.ndim == 1 and len(shape) == 1 and len(y) == num_inputs:
        hint = (
            "one value per input (class ids?); a teacher must return "
            "class probabilities or logits"
        )
    elif len(y) != num_inputs:
        hint = f"{len(y)} outputs for {num_inputs} inputs"
    else:
        hint = f"outputs of shape {y.shape[1:]} per input"
    raise ValueError(
        f"`teacher` must return an array of shape (batch,) + "
        f"teacher_output_shape = {expected}. Received: {hint}, shape "
        f"{y.shape} {where}. Declare the teacher's output with "
        "`teacher_output_shape=` (e.g. `(num_classes,)`) and return one "
        "row per input."
    )


def check_validation(validation: Any, pool: Any) -> tuple | None:
    """`None` or labeled `(x_val, y_val)` shaped like the pool's inputs."""
    if validation is None:
        return None
    what = "None or a pair (x_val, y_val) of inputs and labels"
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        v.fail("validation", what, validation, v.ArgumentTypeError)
    x_val = ArrayPool(validation[0], "validation")
    y_val = np.asarray(validation[1])
    if y_val.ndim == 0:
        v.fail("validation", what, f"labels of shape {y_val.shape}")
    if len(y_val) != len(x_val):
        v.fail(
            "validation",
            "inputs and labels of the same length",
            f"{len(x_val)} inputs and {len(y_val)} labels",
        )
    if x_val.describe() != pool.describe():
        v.fail(
            "validation",
            f"inputs of the pool's kind and row shape, {pool.describe()}",
            f"x_val with {x_val.describe()}",
        )
    return x_val.data, y_val


def check_labels(labels: Any, num_classes: int) -> np.ndarray:
    """Validation labels as class ids in `[0, num_classes)`."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        if labels.shape[1] != num_classes:
            v.fail(
                "validation",
                f"labels as class ids or rows of {num_classes} "
                "probabilities (the teacher's width)",
                f"label rows of width {labels.shape[1]}",
            )
        return labels.argmax(-1)
    if labels.ndim != 1:
        v.fail(
            "validation",
            "labels of shape (n,) or (n, num_classes)",
            f"labels of shape {labels.shape}",
        )
    if labels.dtype.kind not in "iub" and (
        labels.dtype.kind != "f" or not np.all(labels == np.round(labels))
    ):
        v.fail(
            "validation",
            "integer class ids",
            f"labels of dtype {labels.dtype} (e.g. {labels[:3].tolist()})",
        )
    low, high = labels.min(), labels.max()
    if low < 0 or high >= num_classes:
        v.fail(
            "validation",
            f"class ids in [0, {num_classes}) (0-based, as the teacher's "
            "outputs are indexed)",
            f"labels with min {int(low)} and max {int(high)}",
        )
    return labels.astype(np.int64)
