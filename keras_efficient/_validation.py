"""Argument checks shared by every public object (private).

One message style everywhere, Keras's own:

    `name` must be <what is allowed>. Received: name=<value!r>

Numbers accept every real numeric type: Python `int` / `float`, NumPy
scalars and 0-d arrays; `bool` and strings are never numbers. A value of the
wrong type raises `ArgumentTypeError`, which is both a `TypeError` and a
`ValueError` (like NumPy's `AxisError`), so callers may catch either; a value
of the right type outside its range raises `ValueError`. Each check returns
the value converted to the Python type the caller stores.
"""

import math
import numbers

import numpy as np


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (both a `TypeError` and a `ValueError`)."""


def _message(name, what, value):
    return f"`{name}` must be {what}. Received: {name}={value!r}"


def _unwrap_scalar(value):
    """A 0-d NumPy array or NumPy scalar as the matching Python scalar."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.generic):
        value = value.item()
    return value


def is_integer(value):
    """Whether `value` is an integer (Python, NumPy, 0-d array), not a bool."""
    value = _unwrap_scalar(value)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    """Whether `value` is a real number (Python, NumPy, 0-d), not a bool."""
    value = _unwrap_scalar(value)
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _range_text(min_value, max_value, min_inclusive, max_inclusive):
    parts = []
    if min_value is not None:
        parts.append(f"{'>=' if min_inclusive else '>'} {min_value}")
    if max_value is not None:
        parts.append(f"{'<=' if max_inclusive else '<'} {max_value}")
    return " and ".join(parts)


def _out_of_range(value, min_value, max_value, min_inclusive, max_inclusive):
    if min_value is not None:
        if value < min_value or (not min_inclusive and value == min_value):
            return True
    if max_value is not None:
        if value > max_value or (not max_inclusive and value == max_value):
            return True
    return False


def check_int(name, value, min_value=None, max_value=None):
    """An integer within `[min_value, max_value]`, as a Python `int`."""
    bounds = _range_text(min_value, max_value, True, True)
    what = "an integer" + (f" {bounds}" if bounds else "")
    if not is_integer(value):
        raise ArgumentTypeError(_message(name, what, value))
    value = int(_unwrap_scalar(value))
    if _out_of_range(value, min_value, max_value, True, True):
        raise ValueError(_message(name, what, value))
    return value


def check_positive_int(name, value):
    """An integer >= 1, as a Python `int`."""
    return check_int(name, value, min_value=1)


def check_number(
    name,
    value,
    min_value=None,
    max_value=None,
    min_inclusive=True,
    max_inclusive=True,
):
    """A finite real number within the given bounds, as a Python `float`."""
    bounds = _range_text(min_value, max_value, min_inclusive, max_inclusive)
    what = "a finite number" + (f" {bounds}" if bounds else "")
    if not is_number(value):
        raise ArgumentTypeError(_message(name, what, value))
    value = float(_unwrap_scalar(value))
    if not math.isfinite(value) or _out_of_range(
        value, min_value, max_value, min_inclusive, max_inclusive
    ):
        raise ValueError(_message(name, what, value))
    return value


def check_fraction(name, value, allow_one=False, allow_zero=True):
    """A number in `[0, 1)` (or the bounds given), as a Python `float`."""
    return check_number(
        name,
        value,
        min_value=0.0,
        max_value=1.0,
        min_inclusive=allow_zero,
        max_inclusive=allow_one,
    )


def check_optional_number(name, value, **bounds):
    """None, or a number as in `check_number`."""
    return None if value is None else check_number(name, value, **bounds)


def check_choice(name, value, allowed):
    """One of `allowed` (strings compare by value, anything else by identity,
    so `True` never passes for `1` nor `"1"` for `1`)."""
    ok = any(
        value is option or (isinstance(value, str) and value == option)
        for option in allowed
    )
    if not ok:
        raise ValueError(_message(name, f"one of {tuple(allowed)}", value))
    return value


def check_bool(name, value):
    """A Python or NumPy bool, as a Python `bool`."""
    value = _unwrap_scalar(value)
    if not isinstance(value, bool):
        raise ArgumentTypeError(_message(name, "True or False", value))
    return value


def check_int_tuple(name, value, length, min_value=1):
    """A tuple of `length` integers each >= `min_value`."""
    what = f"a tuple of {length} integers >= {min_value}"
    if isinstance(value, (str, bytes)) or not isinstance(
        value, (tuple, list, np.ndarray)
    ):
        raise ArgumentTypeError(_message(name, what, value))
    if len(value) != length or not all(is_integer(v) for v in value):
        raise ValueError(_message(name, what, value))
    out = tuple(int(_unwrap_scalar(v)) for v in value)
    if min(out) < min_value:
        raise ValueError(_message(name, what, value))
    return out


def check_instance(name, value, types, what):
    """An instance of `types`; `what` says in words what is allowed."""
    if not isinstance(value, types):
        raise ArgumentTypeError(_message(name, what, value))
    return value


def fail(name, what, value, error=ValueError):
    """Raise `error` in the shared message style (for custom checks)."""
    raise error(_message(name, what, value))
