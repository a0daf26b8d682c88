"""Checks that outputs are (or are not) rows of class probabilities
(private).

The distillation losses and the teacher-accuracy estimator read teacher and
student outputs in one of two conventions, logits or probabilities; each
check here reduces a batch to a few scalars and raises through
`_data_checks.raise_if` / `raise_with` on every backend.
"""

from typing import Any

import keras
from keras import ops

from keras_efficient._data_checks import Problem
from keras_efficient._data_checks import raise_if

# Distributions over classes (teacher and student outputs of the
# distillation losses). Each check reduces the batch to four scalars (the
# smallest and largest entry, the smallest and largest row sum) and one
# predicate; nothing else runs on a clean batch.

# Rows of float32 (or float64) probabilities sum to 1 within this: rounding
# a softmax to float32 leaves ~1e-7 per class, so 1e-3 covers 10^4 classes
# with room, and a row of logits or of independent sigmoids misses it.
PROBABILITY_TOLERANCE = 1e-3
# With 16-bit floats anywhere (a teacher run under a mixed policy, outputs
# stored as bfloat16): bfloat16 rounds each entry to 2^-9 relatively, and a
# softmax computed in it accumulates a few such errors per row.
PROBABILITY_TOLERANCE_16BIT = 2e-2


def probability_tolerance(*dtypes: Any) -> float:
    """The row-sum tolerance for outputs that passed through `dtypes`.

    `PROBABILITY_TOLERANCE` (1e-3) when every dtype given, and the compute
    dtype of the global dtype policy, is float32 or float64;
    `PROBABILITY_TOLERANCE_16BIT` (2e-2) once one is float16 or bfloat16.
    """
    names = [keras.config.dtype_policy().compute_dtype]
    names += [keras.backend.standardize_dtype(d) for d in dtypes if d]
    if any(n in ("float16", "bfloat16") for n in names):
        return PROBABILITY_TOLERANCE_16BIT
    return PROBABILITY_TOLERANCE


def _distribution_stats(x):
    """(min, max, smallest row sum, largest row sum), float32 scalars.

    An all-zero row (padding) counts as summing to 1; a row with negative
    entries is caught by the minimum, so a row summing to exactly 0 with
    nothing negative is all zeros.
    """
    x = ops.cast(x, "float32")
    sums = ops.sum(x, axis=-1)
    sums = ops.where(ops.equal(sums, 0.0), ops.ones_like(sums), sums)
    return ops.min(x), ops.max(x), ops.min(sums), ops.max(sums)


def _is_distribution(stats, tolerance):
    """Whether the batch's `stats` are those of rows of probabilities
    (false on NaN: every comparison with NaN is false)."""
    low, high, sum_low, sum_high = stats
    return ops.all(
        ops.stack(
            [
                ops.greater_equal(low, -tolerance),
                ops.less_equal(high, 1.0 + tolerance),
                ops.greater_equal(sum_low, 1.0 - tolerance),
                ops.less_equal(sum_high, 1.0 + tolerance),
            ]
        )
    )


def _received(name):
    return (
        f"Received: {name} with min {{0}}, max {{1}} and row sums from {{2}} "
        "to {3}"
    )


def probabilities_problem(
    x: Any,
    name: str,
    fix: str,
    tolerance: float = PROBABILITY_TOLERANCE,
) -> Problem:
    """Not every row of `x` is a distribution over its last axis.

    Entries must be in `[-tolerance, 1 + tolerance]` and rows sum to 1
    within `tolerance` (all-zero rows, padding, pass). `fix` is a sentence
    telling the user what to change (e.g. the convention flag).
    """
    stats = _distribution_stats(x)
    return Problem(
        ops.logical_not(_is_distribution(stats, tolerance)),
        f"`{name}` must hold probabilities: entries in [0, 1] and rows "
        f"summing to 1 (within {tolerance}). {fix} {_received(name)}",
        stats,
    )


def not_probabilities_problem(
    x: Any,
    name: str,
    fix: str,
    tolerance: float = PROBABILITY_TOLERANCE,
) -> Problem | None:
    """`x` should hold logits but every row is a distribution.

    Bad when every entry is in `[0, 1]` and every row sums to 1 within
    `tolerance`, i.e. the whole batch already went through a softmax
    (real logits meet that by chance on no batch of two rows or more).
    None for a width of 1, where both conventions look alike.
    """
    if x.shape[-1] is not None and x.shape[-1] < 2:
        return None
    stats = _distribution_stats(x)
    # A batch of only all-zero rows is valid logits (uniform), not padding.
    all_zero = ops.logical_and(
        ops.equal(stats[0], 0.0), ops.equal(stats[1], 0.0)
    )
    return Problem(
        ops.logical_and(
            _is_distribution(stats, tolerance), ops.logical_not(all_zero)
        ),
        f"`{name}` must hold logits, but every row is already a "
        f"probability distribution (entries in [0, 1], rows summing to 1 "
        f"within {tolerance}), e.g. the output of a softmax. {fix} "
        f"{_received(name)}",
        stats,
    )


def non_finite_problem(x: Any, name: str, what: str = "") -> Problem:
    """NaN or infinity in `x`: one sum per row, then scalars.

    The message names the first bad row (rows counted over the leading
    axes flattened) and how many there are.
    """
    sums = ops.reshape(ops.sum(ops.cast(x, "float32"), axis=-1), (-1,))
    bad_rows = ops.cast(ops.logical_not(ops.isfinite(sums)), "int32")
    return Problem(
        ops.greater(ops.max(bad_rows), 0),
        f"`{name}`{what} must be finite. Received: {name} with NaN or "
        "infinity in batch rows [{0}] (the first such row; {1} in all)",
        (ops.argmax(bad_rows), ops.sum(bad_rows)),
    )


def check_probabilities(x: Any, name: str, fix: str, **kwargs: Any) -> None:
    """Raises (`raise_if`) on `probabilities_problem`."""
    raise_if(*probabilities_problem(x, name, fix, **kwargs))


def check_not_probabilities(x: Any, name: str, fix: str, **kwargs: Any) -> None:
    """Raises (`raise_if`) on `not_probabilities_problem`."""
    problem = not_probabilities_problem(x, name, fix, **kwargs)
    if problem is not None:
        raise_if(*problem)


def check_finite(x: Any, name: str, what: str = "") -> None:
    """Raises (`raise_if`) on `non_finite_problem`."""
    raise_if(*non_finite_problem(x, name, what))
