"""What a distillation loss checks on the outputs it receives (private).

Static checks (shapes, dtypes: free, at trace time) and in-graph checks
tied to the loss value (`_data_checks.raise_with`), which run on every
call and every step of a compiled `fit` (JAX `jit`, TensorFlow graphs
without XLA, torch):

- `y_true` (the teacher's outputs) holds per-class outputs: not integer
  class ids, the student's width, at least two classes;
- `y_true` is finite and in the declared convention: probabilities
  (every row on the simplex) with `teacher_from_logits=False`, logits
  (not every row already a distribution) with `teacher_from_logits=True`;
- `y_pred` (the student's outputs) likewise against `from_logits`.

Cost: a few reductions to scalars over the batch per checked tensor (the
row sums shared by the finiteness and convention checks) and one
conditional per check; no host call on a clean batch on JAX and
TensorFlow (see `benchmarks/overhead_checks.py`). Eager torch reads the
scalars of both tensors back in one transfer and tests them on the host
(`_distribution_checks.output_stats`; `benchmarks/loss_ops.py`).
"""

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_efficient import _distribution_checks
from keras_efficient._data_checks import check_labels_in_range


def check_shapes(loss: keras.losses.Loss, y_true: Any, y_pred: Any) -> None:
    """Raises when `y_true` cannot be per-class teacher outputs (static).

    Integer labels of shape `(N,)` or `(N, 1)` against `(N, C)` outputs
    would otherwise broadcast into a meaningless loss; a teacher of another
    width would surface as Keras's "`target` and `output` must have the
    same shape"; a single column is no distribution over classes.
    """
    cls = type(loss).__name__
    ts, ps = tuple(y_true.shape), tuple(y_pred.shape)
    c = ps[-1] if ps else None
    t_c = ts[-1] if ts else None
    integer = keras.backend.is_int_dtype(
        keras.backend.standardize_dtype(y_true.dtype)
    )
    if (
        len(ts) < len(ps)
        or (integer and t_c in (1, None))
        or (integer and t_c != c)
    ):
        raise ValueError(
            f"{cls}: `y_true` must hold the teacher's per-class outputs, "
            f"shape {ps} like `y_pred`. Received: y_true.shape={ts} "
            f"(dtype {keras.backend.standardize_dtype(y_true.dtype)}). "
            "Integer class labels are not teacher outputs; one-hot encode "
            "them (`keras.ops.one_hot`) or use "
            "`keras.losses.SparseCategoricalCrossentropy`."
        )
    if t_c is not None and c is not None and t_c != c:
        raise ValueError(
            f"{cls}: `y_true` (the teacher's outputs) and `y_pred` (the "
            "student's outputs) must have the same number of classes on "
            f"the last axis. Received: y_true.shape={ts} and "
            f"y_pred.shape={ps}. Give the student the teacher's classes, "
            "in the teacher's order."
        )
    if c == 1 or (c is None and t_c == 1):
        flag = "teacher_from_logits"
        raise ValueError(
            f"{cls}: `y_true` and `y_pred` must have at least 2 classes on "
            f"the last axis; a single sigmoid column is not a distribution "
            f"(a one-class softmax is always 1). Received: y_true.shape={ts} "
            f"and y_pred.shape={ps}. Make both two columns: probabilities "
            "p as `keras.ops.concatenate([1 - p, p], axis=-1)`, a logit z "
            "as `keras.ops.concatenate([keras.ops.zeros_like(z), z], "
            f"axis=-1)` (then `{flag}=True`), and give the student a "
            "2-unit output layer."
        )


def value_problems(loss: Any, y_true: Any, y_pred: Any) -> list:
    """In-graph: teacher finite and in its convention; student likewise.

    `loss` has `teacher_from_logits` and `from_logits`; the tolerance on
    row sums comes from the dtypes seen (`probability_tolerance`). Returns
    `_data_checks.Problem`s for `_data_checks.raise_with`.
    """
    cls = type(loss).__name__
    tolerance = _distribution_checks.probability_tolerance(
        y_true.dtype, y_pred.dtype, getattr(loss, "dtype", None)
    )
    # Every scalar of both checks at once: on eager torch one transfer.
    true_stats, pred_stats = _distribution_checks.output_stats([y_true, y_pred])
    problems = [
        _distribution_checks.non_finite_problem(
            y_true, "y_true", " (the teacher outputs)", true_stats
        )
    ]
    if loss.teacher_from_logits:
        problems.append(
            _distribution_checks.not_probabilities_problem(
                y_true,
                "y_true",
                f"{cls} has `teacher_from_logits=True` (teacher logits): "
                "for teacher probabilities pass "
                f"`{cls}(teacher_from_logits=False)` (or feed the teacher's "
                "logits, before its softmax).",
                tolerance,
                true_stats,
            )
        )
    else:
        problems.append(
            _distribution_checks.probabilities_problem(
                y_true,
                "y_true",
                f"{cls} has `teacher_from_logits=False` (teacher "
                f"probabilities): for teacher logits pass "
                f"`{cls}(teacher_from_logits=True)`; for probabilities of "
                "a 16-bit teacher, renormalise the rows (`p / p.sum(-1)`).",
                tolerance,
                true_stats,
            )
        )
    if getattr(loss, "from_logits", True):
        if hasattr(y_pred, "_keras_logits"):
            # TensorFlow marks the output of a Keras softmax (static).
            raise ValueError(_student_probabilities_message(cls))
        problems.append(
            _distribution_checks.not_probabilities_problem(
                y_pred,
                "y_pred",
                f"{cls} has `from_logits=True` (student logits): they would "
                f"be softmaxed twice. Pass `{cls}(from_logits=False)`, or "
                "drop the student's final softmax.",
                tolerance,
                pred_stats,
            )
        )
    else:
        problems.append(
            _distribution_checks.probabilities_problem(
                y_pred,
                "y_pred",
                f"{cls} has `from_logits=False` (student probabilities): "
                f"for student logits pass `{cls}(from_logits=True)`.",
                tolerance,
                pred_stats,
            )
        )
    return [p for p in problems if p is not None]


def _student_probabilities_message(cls):
    return (
        f"{cls} has `from_logits=True`, but `y_pred` already holds "
        "probabilities (the output of a softmax): they would be softmaxed "
        f"twice. Pass `{cls}(from_logits=False)`, or drop the final "
        "softmax."
    )


def check_outputs(loss: Any, y_true: Any, y_pred: Any) -> list:
    """`check_shapes` (raises), then `value_problems` (returned), on the
    outputs as received (not cast to the loss dtype yet)."""
    # A tensor is read as it is: converting it again is a call per tensor
    # on eager torch (`.to(device)`).
    if not ops.is_tensor(y_true):
        y_true = ops.convert_to_tensor(y_true)
    if not ops.is_tensor(y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
    check_shapes(loss, y_true, y_pred)
    return value_problems(loss, y_true, y_pred)


def check_numpy_outputs(
    outputs: Any, name: str, from_logits: bool, flag: str = "from_logits"
) -> np.ndarray:
    """Teacher outputs given as an array (the estimator, the pool): float64.

    Shape `(n, C)` with n >= 1 and C >= 2, finite, and in the convention
    `from_logits` declares (`flag` is that argument's name), checked on
    every row as `check_probabilities` / `check_not_probabilities` do.
    """
    try:
        array = np.asarray(outputs, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"`{name}` must be a numeric array of shape (n, num_classes). "
            f"Received: {name} of type {type(outputs).__name__}"
        ) from e
    if array.ndim != 2:
        hint = ""
        if array.ndim == 1:
            hint = (
                " A 1-D array looks like class ids: pass the teacher's "
                "per-class outputs (probabilities or logits) instead."
            )
        raise ValueError(
            f"`{name}` must have shape (n, num_classes).{hint} Received: "
            f"{name}.shape={array.shape}"
        )
    if len(array) == 0:
        raise ValueError(
            f"`{name}` must have at least one row. Received: "
            f"{name}.shape={array.shape}"
        )
    if array.shape[-1] < 2:
        raise ValueError(
            f"`{name}` must have num_classes >= 2 columns; a single sigmoid "
            "column is not a distribution. Make it two columns: "
            "`np.concatenate([1 - p, p], axis=-1)` for probabilities p, "
            "`np.concatenate([np.zeros_like(z), z], axis=-1)` for logits z. "
            f"Received: {name}.shape={array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"`{name}` must be finite. Received: "
            f"{int(np.sum(~np.isfinite(array)))} non-finite values"
        )
    tol = _distribution_checks.PROBABILITY_TOLERANCE
    sums = array.sum(-1)
    low, high = float(array.min()), float(array.max())
    is_distribution = (
        low >= -tol and high <= 1 + tol and np.all(np.abs(sums - 1) <= tol)
    )
    received = (
        f"Received: {flag}={from_logits}; {name} with min {low:.4g}, max "
        f"{high:.4g} and row sums from {sums.min():.4g} to {sums.max():.4g}"
    )
    if not from_logits and not is_distribution:
        raise ValueError(
            f"`{name}` must hold probabilities (entries in [0, 1], rows "
            f"summing to 1 within {tol}); for logits pass `{flag}=True`. "
            f"{received}"
        )
    if from_logits and is_distribution:
        raise ValueError(
            f"`{name}` must hold logits with `{flag}=True`, but every row "
            "is already a probability distribution (e.g. a softmax "
            f"output); pass `{flag}=False`. {received}"
        )
    return array


def check_numpy_labels(labels: Any, num_rows: int, num_classes: int) -> Any:
    """Class ids of shape `(n,)` (or `(n, 1)`) in `[0, num_classes)`."""
    labels = np.asarray(labels)
    if labels.ndim > 1 and labels.shape[1:] != (1,) * (labels.ndim - 1):
        raise ValueError(
            "`labels` must be class ids of shape (n,), not one-hot. "
            f"Received: labels.shape={labels.shape}"
        )
    if labels.size and (
        not np.issubdtype(labels.dtype, np.number)
        or not np.all(np.mod(labels, 1) == 0)
    ):
        raise ValueError(
            "`labels` must be integer class ids. Received: labels with "
            f"dtype={labels.dtype}"
        )
    labels = labels.reshape(-1)
    if len(labels) != num_rows:
        raise ValueError(
            "`labels` and `teacher_outputs` must have the same length "
            "(one label per row). Received: len(labels)="
            f"{len(labels)} and len(teacher_outputs)={num_rows}"
        )
    check_labels_in_range(labels, num_classes, "labels")
    return labels.astype("int64")
