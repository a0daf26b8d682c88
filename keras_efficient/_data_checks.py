"""Run-time checks of the data a layer or loss receives (private).

`_validation.py` checks arguments, whose values are known in Python. Data
is different: inside a compiled step its values are unknown while Keras
traces, so a check must run *in* the step and raise from there. One
function, `raise_if`, does that on every backend:

- values at hand (eager calls, torch's eager `fit`, NumPy): the condition
  is read in Python and the error raised at once;
- JAX under `jit`: `jax.lax.cond` on the condition, whose taken branch
  calls `jax.debug.callback`, which raises on the host. A clean batch pays
  one reduction and a predicate; nothing crosses to the host. The error
  reaches the user wrapped in JAX's runtime error (its text is ours) at the
  next synchronisation, i.e. within the step that saw the batch;
- TensorFlow graphs (`tf.function`, Keras's default on a CPU): a
  `tf.debugging.Assert`. XLA (`jit_compile=True`) drops assertions, so
  there the check does nothing (Keras compiles TensorFlow steps with XLA
  only where asked to, or on an accelerator).

The messages keep `_validation.py`'s style: they name the argument, what
was received and what is allowed.
"""

from typing import Any
from typing import NamedTuple

import keras
import numpy as np
from keras import ops
from keras.src.backend.common.symbolic_scope import in_symbolic_scope

from keras_efficient import _backend


def _format(message, values):
    shown = [np.asarray(v).tolist() for v in values]
    return message.format(*shown)


def _raise(error, message):
    def raise_on_host(bad, *values):
        if bool(np.asarray(bad)):
            raise error(_format(message, values))

    return raise_on_host


def raise_if(
    bad: Any,
    message: str,
    values: tuple = (),
    error: type[Exception] = ValueError,
) -> None:
    """Raises `error(message.format(*values))` where `bad` is true.

    Args:
        bad: a boolean scalar tensor (or Python / NumPy bool).
        message: the error text; `{0}`, `{1}`, ... are filled with
            `values` read back as Python numbers or lists.
        values: tensors shown in the message (read only when `bad`).
        error: the exception type raised.
    """
    if isinstance(bad, (bool, np.bool_)) or _backend.is_concrete(bad):
        if bool(ops.convert_to_numpy(bad)):
            raise error(
                _format(message, [ops.convert_to_numpy(v) for v in values])
            )
        return
    name = _backend.backend()
    if name == "jax":
        _raise_if_jax(bad, message, values, error)
    elif name == "tensorflow":
        _raise_if_tensorflow(bad, message, values)


def _raise_if_jax(bad, message, values, error):
    import jax

    callback = _raise(error, message)

    def report(operands):
        jax.debug.callback(callback, *operands)

    def clean(operands):
        return None

    jax.lax.cond(bad, report, clean, (bad, *values))


def _raise_if_tensorflow(bad, message, values):
    import tensorflow as tf

    # `tf.debugging.Assert` prints its data after the message; the text
    # before the values keeps the same wording as the other backends.
    text = message.split("{")[0] if values else message
    tf.debugging.Assert(tf.logical_not(bad), [text, *values], summarize=8)


def check_ids_in_range(
    ids: Any,
    size: int,
    name: str = "token_ids",
    padding_id: int | None = None,
) -> None:
    """Every id is in `[0, size)` (or equals `padding_id`, when given)."""
    ids = ops.convert_to_tensor(ids)
    if not keras.backend.is_int_dtype(ids.dtype):
        return
    valid = ops.logical_and(ops.greater_equal(ids, 0), ops.less(ids, size))
    if padding_id is not None:
        valid = ops.logical_or(valid, ops.equal(ids, padding_id))
    allowed = f"in [0, {size})"
    if padding_id is not None:
        allowed += f" or the padding id {padding_id}"
    raise_if(
        ops.logical_not(ops.all(valid)),
        f"`{name}` must be {allowed}. Received: {name} with min {{0}} and "
        f"max {{1}}",
        (ops.min(ids), ops.max(ids)),
    )


# Checks tied to an output (the distillation losses). `raise_if` on JAX
# puts a `jax.debug.callback` in the step: an effect, which takes every
# call of the compiled step off JAX's C++ dispatch path (~70 us of host
# time a step on a CPU, measured, whether the check fails or not). A check
# whose result is added, as 0, to a value the step uses (a loss) can use
# `jax.pure_callback` instead: no effect, so no dispatch cost; the callback
# still runs only in the failing branch of a `lax.cond`.


class Problem(NamedTuple):
    """A data check not yet raised: the arguments of `raise_if`."""

    bad: Any
    message: str
    values: tuple = ()
    error: type[Exception] = ValueError


def raise_with(output: Any, problems: list) -> Any:
    """`output`, unchanged, after checking each `Problem` in `problems`.

    Eagerly (and on TensorFlow and torch) this is `raise_if` for each;
    in a JAX trace the checks are tied to `output` (a float tensor) by
    adding a zero computed from them, so the caller must use the returned
    tensor: a check whose result is unused is removed with it.
    """
    if in_symbolic_scope():
        # Keras computing output specs (on torch: on tensors of ones, not
        # the user's data).
        return output
    jax_traced = _backend.backend() == "jax" and any(
        not isinstance(p.bad, (bool, np.bool_))
        and not _backend.is_concrete(p.bad)
        for p in problems
    )
    if not jax_traced:
        for problem in problems:
            raise_if(*problem)
        return output
    guard = ops.zeros((), "float32")
    for problem in problems:
        guard = guard + _tied_check_jax(*problem)
    return output + ops.cast(guard, output.dtype)


def _tied_check_jax(bad, message, values, error):
    import jax

    raise_on_host = _raise(error, message)

    def report(operands):
        def callback(*args):
            raise_on_host(*args)
            return np.zeros((), np.float32)

        zero = jax.ShapeDtypeStruct((), "float32")
        return jax.pure_callback(callback, zero, *operands)

    def clean(operands):
        return jax.numpy.zeros((), "float32")

    operands = jax.lax.stop_gradient((bad, *values))
    return jax.lax.cond(bad, report, clean, operands)


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
