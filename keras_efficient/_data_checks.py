"""Run-time checks of the data a layer or loss receives (private).

`_validation.py` checks arguments, whose values are known in Python. Data
is different: inside a compiled step its values are unknown while Keras
traces, so a check must run *in* the step and raise from there.
`raise_with(output, problems)` does that on every backend (`raise_if`
where there is no output to guard, outside JAX traces):

- values at hand (eager calls, torch's eager `fit`, NumPy): the condition
  is read in Python and the error raised at once;
- JAX under `jit`: `jax.lax.cond` on the condition, whose taken branch
  calls `jax.pure_callback`, which raises on the host; the branch's zero
  is added to the guarded output, so the check stays in the step. A clean
  batch pays one reduction and a predicate; nothing crosses to the host.
  The error reaches the user wrapped in JAX's runtime error (its text is
  ours) at the next synchronisation, i.e. within the step that saw the
  batch;
- TensorFlow graphs (`tf.function`): a `tf.debugging.Assert` in a
  `tf.cond` (the values are formatted only when the check fails);
- TensorFlow under XLA (`jit_compile=True`), which compiles assertions to
  nothing: the step writes the predicates and values of the checks of
  one output to one status variable and the graph that calls the step
  raises right after it (`_tensorflow_checks`).

The messages keep `_validation.py`'s style: they name the argument, what
was received and what is allowed.
"""

from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import keras
import numpy as np
from keras import ops
from keras.src.backend.common.symbolic_scope import in_symbolic_scope

from keras_efficient import _backend
from keras_efficient import _tensorflow_checks


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
    values: tuple | Callable[[], tuple] = (),
    error: type[Exception] = ValueError,
) -> Any:
    """Raises `error(message.format(*values))` where `bad` is true.

    Returns the TensorFlow assertion op in a graph (else None): ops that
    must not run on bad data (a gather that would fail first with
    TensorFlow's own message) take it as a control dependency, see
    `after_check`. Inside a JAX trace use `raise_with`, which ties the
    check to the value it guards.

    Args:
        bad: a boolean scalar tensor (or Python / NumPy bool).
        message: the error text; `{0}`, `{1}`, ... are filled with
            `values` read back as Python numbers or lists.
        values: tensors shown in the message (read only when `bad`), or
            a function returning them, which then runs only in the
            failing branch, so a clean step does not compute them.
        error: the exception type raised.
    """
    if isinstance(bad, (bool, np.bool_)) or _backend.is_concrete(bad):
        if bool(ops.convert_to_numpy(bad)):
            values = values() if callable(values) else values
            raise error(
                _format(message, [ops.convert_to_numpy(v) for v in values])
            )
        return
    name = _backend.backend()
    if name == "jax":
        # A JAX check must be tied to a value the step uses (`raise_with`):
        # an untied one would be removed, or need an effect.
        raise RuntimeError(
            "`raise_if` cannot check a traced JAX value; tie the check to "
            "the output it guards with `raise_with(output, problems)`."
        )
    if name == "tensorflow":
        return _raise_if_tensorflow(bad, message, values, error)
    return None


def _raise_if_tensorflow(bad, message, values, error):
    if _tensorflow_checks.in_xla():
        _tensorflow_checks.raise_after_step([(bad, message, values, error)])
        return None
    return _tensorflow_checks.assert_in_graph(bad, message, values)


def after_check(tensor: Any, check: Any) -> Any:
    """`tensor`, read only after the TensorFlow assertion `check` ran."""
    if check is None or _backend.backend() != "tensorflow":
        return tensor
    import tensorflow as tf

    with tf.control_dependencies([check]):
        return tf.identity(tensor)


class IdsTypeError(TypeError, ValueError):
    """Float (or other non-integer) ids where integer ids are required.

    A `TypeError`; also a `ValueError` so that Keras's first-`fit` model
    build passes it on unchanged instead of wrapping it in "Unable to
    automatically build the model".
    """


def dtype_name(value: Any) -> str:
    """The standardized dtype of a tensor, array or nested list."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        dtype = np.asarray(value).dtype
    return keras.backend.standardize_dtype(dtype)


def check_integer_ids(ids: Any, name: str = "token_ids") -> None:
    """Ids are an integer tensor (a static check: floats are never cast)."""
    dtype = dtype_name(ids)
    if "int" not in dtype:
        raise IdsTypeError(
            f"`{name}` must be integer ids (int32 or int64); float ids are "
            f"never cast. Received: {name}.dtype={dtype}"
        )


_NARROW_INTS = ("int8", "uint8", "int16", "uint16")


def check_ids_in_range(
    ids: Any,
    size: int | None,
    name: str = "token_ids",
    padding_id: int | None = None,
) -> Any:
    """Every id is in `[0, size)` (or equals `padding_id`, when given).

    `size=None` checks only that no id is negative (ids hashed or reduced
    modulo a table size). Returns `ids`, in a TensorFlow graph read only
    after the check (so a gather of bad ids cannot fail first with
    TensorFlow's own message).
    """
    if isinstance(ids, keras.KerasTensor):  # a symbolic build: no values
        return ids
    ids = ops.convert_to_tensor(ids)
    if not keras.backend.is_int_dtype(ids.dtype):
        return ids
    # Compare in (at least) 32 bits: `size` may not fit the ids' own type
    # (a uint8 byte prompt against a vocabulary of 256).
    wide = ids
    if keras.backend.standardize_dtype(ids.dtype) in _NARROW_INTS:
        wide = ops.cast(ids, "int32")
    valid = ops.greater_equal(wide, 0)
    if size is not None:
        valid = ops.logical_and(valid, ops.less(wide, size))
    if padding_id is not None:
        valid = ops.logical_or(valid, ops.equal(wide, padding_id))
    allowed = f"in [0, {size})" if size is not None else ">= 0"
    if padding_id is not None:
        allowed += f" or the padding id {padding_id}"
    problem = Problem(
        ops.logical_not(ops.all(valid)),
        f"`{name}` must be {allowed}. Received: {name} with min {{0}} and "
        f"max {{1}}",
        lambda: (ops.min(wide), ops.max(wide)),
    )
    return raise_with(ids, [problem])


# On JAX a check is tied to the value it guards: a zero computed from it
# is added to that value, and the callback runs only in the failing
# branch of a `lax.cond`. No effect (`jax.debug.callback`) is left in the
# step. Tied to the ids, the check adds +2.8 us of host CPU time to a
# jitted gather (tied to the gathered floats, +27 us; quiet CPU,
# benchmarks/results/overhead_checks.ids.json).


class Problem(NamedTuple):
    """A data check not yet raised: the arguments of `raise_if`."""

    bad: Any
    message: str
    values: tuple | Callable[[], tuple] = ()
    error: type[Exception] = ValueError


def raise_with(output: Any, problems: list) -> Any:
    """`output`, unchanged, after checking each `Problem` in `problems`.

    Eagerly (and on torch) this is `raise_if` for each. In a TensorFlow
    graph the returned tensor is read after the checks; in a JAX trace
    the checks are tied to `output` (a float or integer tensor) by adding
    a zero computed from them. Either way the caller must use the
    returned tensor: in a JAX trace a check whose result is unused is
    removed with it.
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
    if _backend.backend() == "tensorflow" and _tensorflow_checks.in_xla():
        # Under XLA every check of `output` shares one status (a variable
        # written by the step) and one read after it.
        traced = []
        for problem in problems:
            if isinstance(problem.bad, (bool, np.bool_)) or (
                _backend.is_concrete(problem.bad)
            ):
                raise_if(*problem)
            else:
                traced.append(problem)
        if traced:
            _tensorflow_checks.raise_after_step(traced)
        return output
    if not jax_traced:
        for problem in problems:
            output = after_check(output, raise_if(*problem))
        return output
    guard = ops.zeros((), "float32")
    for problem in problems:
        guard = guard + _tied_check_jax(*problem)
    return output + ops.cast(guard, output.dtype)


def _tied_check_jax(bad, message, values, error):
    import jax

    raise_on_host = _raise(error, message)

    def report(bad):
        def callback(*args):
            raise_on_host(*args)
            return np.zeros((), np.float32)

        shown = values() if callable(values) else values
        # The values may depend on what is differentiated (a student's
        # outputs); the callback only reads them.
        shown = [jax.lax.stop_gradient(v) for v in shown]
        zero = jax.ShapeDtypeStruct((), "float32")
        return jax.pure_callback(callback, zero, bad, *shown)

    def clean(bad):
        return jax.numpy.zeros((), "float32")

    if not isinstance(bad, (bool, np.bool_)) and _backend.is_concrete(bad):
        bad = jax.numpy.asarray(bad)
    bad = jax.lax.stop_gradient(bad)
    return jax.lax.stop_gradient(jax.lax.cond(bad, report, clean, bad))


def check_labels_in_range(labels: Any, num_classes: int, name: str) -> None:
    """Integer class ids in `[0, num_classes)` (host arrays, eager).

    One-hot / probability labels (last axis `num_classes`) pass.
    """
    labels = np.asarray(labels)
    if labels.ndim >= 2 and labels.shape[-1] == num_classes > 1:
        return
    if not np.issubdtype(labels.dtype, np.number):
        raise TypeError(
            f"`{name}` must be class ids or one-hot rows. Received: "
            f"{name}.dtype={labels.dtype}"
        )
    if labels.size == 0:
        return
    if np.issubdtype(labels.dtype, np.floating) and not np.all(
        labels == np.round(labels)
    ):
        raise ValueError(
            f"`{name}` must be integer class ids in [0, {num_classes}) or "
            f"one-hot rows of width {num_classes}. Received: {name} with "
            f"non-integer values and shape {labels.shape}"
        )
    low, high = labels.min(), labels.max()
    if low < 0 or high >= num_classes:
        hint = ""
        if low >= 1 and high == num_classes:
            hint = f" (1-based class ids? pass `{name} - 1`)"
        raise ValueError(
            f"`{name}` must be class ids in [0, {num_classes}) for a model "
            f"with {num_classes} outputs. Received: {name} with min "
            f"{low.item()} and max {high.item()}{hint}"
        )


def check_rows(x: Any, y: Any, x_name: str, y_name: str) -> int:
    """`x` and `y` have the same number of rows, at least one."""
    rows_x, rows_y = len(x), len(y)
    if rows_x == 0:
        raise ValueError(
            f"`{x_name}` must have at least one row. Received: "
            f"{x_name} with 0 rows"
        )
    if rows_x != rows_y:
        raise ValueError(
            f"`{x_name}` and `{y_name}` must have the same number of rows. "
            f"Received: {x_name} with {rows_x} rows and {y_name} with "
            f"{rows_y}"
        )
    return rows_x


def check_evaluation_data(
    model: keras.Model, x: Any, y: Any, metric: Any = None
) -> None:
    """Rows of `x` (its first array, for a dict or list) and `y` agree and
    exist; for `metric="accuracy"` on a single-output model, integer labels
    are class ids of the model's outputs."""
    first = x
    while isinstance(first, (list, tuple, dict)) and len(first):
        first = list(first.values() if isinstance(first, dict) else first)[0]
    check_rows(first, y, "x_val", "y_val")
    outputs = getattr(model, "outputs", None) or []
    if metric == "accuracy" and len(outputs) == 1:
        num_classes = tuple(outputs[0].shape)[-1]
        if num_classes and num_classes > 1:
            check_labels_in_range(y, num_classes, "y_val")
