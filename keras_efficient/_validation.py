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
from collections.abc import Sequence
from typing import Any
from typing import NoReturn

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


def is_integer(value: Any) -> bool:
    """Whether `value` is an integer (Python, NumPy, 0-d array), not a bool."""
    value = _unwrap_scalar(value)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
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


def check_int(
    name: str,
    value: Any,
    min_value: float | None = None,
    max_value: float | None = None,
) -> int:
    """An integer within `[min_value, max_value]`, as a Python `int`."""
    return _check_real(
        name, value, "an integer", is_integer, int, min_value, max_value
    )


def check_positive_int(name: str, value: Any) -> int:
    """An integer >= 1, as a Python `int`."""
    return check_int(name, value, min_value=1)


def check_number(
    name: str,
    value: Any,
    min_value: float | None = None,
    max_value: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """A finite real number within the given bounds, as a Python `float`."""
    return _check_real(
        name,
        value,
        "a finite number",
        is_number,
        float,
        min_value,
        max_value,
        min_inclusive,
        max_inclusive,
    )


def _check_real(
    name,
    value,
    kind,
    is_kind,
    convert,
    min_value,
    max_value,
    min_inclusive=True,
    max_inclusive=True,
):
    """`value` of `kind` (`is_kind`), `convert`ed, finite and in bounds."""
    bounds = _range_text(min_value, max_value, min_inclusive, max_inclusive)
    what = kind + (f" {bounds}" if bounds else "")
    if not is_kind(value):
        raise ArgumentTypeError(_message(name, what, value))
    value = convert(_unwrap_scalar(value))
    infinite = isinstance(value, float) and not math.isfinite(value)
    if infinite or _out_of_range(
        value, min_value, max_value, min_inclusive, max_inclusive
    ):
        raise ValueError(_message(name, what, value))
    return value


def check_fraction(
    name: str, value: Any, allow_one: bool = False, allow_zero: bool = True
) -> float:
    """A number in `[0, 1)` (or the bounds given), as a Python `float`."""
    return check_number(
        name,
        value,
        min_value=0.0,
        max_value=1.0,
        min_inclusive=allow_zero,
        max_inclusive=allow_one,
    )


def check_optional_number(name: str, value: Any, **bounds: Any) -> float | None:
    """None, or a number as in `check_number`."""
    return None if value is None else check_number(name, value, **bounds)


def check_choice(name: str, value: Any, allowed: Sequence) -> Any:
    """One of `allowed` (strings compare by value, anything else by identity,
    so `True` never passes for `1` nor `"1"` for `1`)."""
    ok = any(
        value is option or (isinstance(value, str) and value == option)
        for option in allowed
    )
    if not ok:
        raise ValueError(_message(name, f"one of {tuple(allowed)}", value))
    return value


def check_bool(name: str, value: Any) -> bool:
    """A Python or NumPy bool, as a Python `bool`."""
    value = _unwrap_scalar(value)
    if not isinstance(value, bool):
        raise ArgumentTypeError(_message(name, "True or False", value))
    return value


def check_int_tuple(
    name: str, value: Any, length: int, min_value: int = 1
) -> tuple[int, ...]:
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


def check_instance(
    name: str, value: Any, types: type | tuple[type, ...], what: str
) -> Any:
    """An instance of `types`; `what` says in words what is allowed."""
    if not isinstance(value, types):
        raise ArgumentTypeError(_message(name, what, value))
    return value


def fail(
    name: str, what: str, value: Any, error: type[Exception] = ValueError
) -> NoReturn:
    """Raise `error` in the shared message style (for custom checks)."""
    raise error(_message(name, what, value))
