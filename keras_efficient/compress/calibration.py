"""Calibration batches: what `transformer_importance` and `distill` read.

`data` is one of:

- an array of inputs `x` (or a dict of arrays, as keras-hub takes),
- a tuple `(x, y)` of arrays (inputs and labels),
- an iterable of batches (a `tf.data.Dataset`, a `keras.utils.PyDataset`, a
  list or generator), each `x` or `(x, y)`.

Arrays are cut into batches of `batch_size`; an iterable is read as it
batches itself. At most `num_batches` batches are read.
"""

from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from keras_efficient._validation import check_positive_int
from keras_efficient._validation import fail

DATA_TEXT = (
    "an array of inputs, a dict of input arrays, a tuple `(x, y)` of "
    "arrays, or an iterable of batches `x` or `(x, y)`"
)


def _is_array(value):
    return isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and hasattr(value, "dtype")
    )


def _is_inputs(value):
    if isinstance(value, dict):
        return bool(value) and all(_is_array(v) for v in value.values())
    return _is_array(value)


def _length(x):
    if isinstance(x, dict):
        return int(next(iter(x.values())).shape[0])
    return int(x.shape[0])


def _slice(x, part):
    if x is None:
        return None
    if isinstance(x, dict):
        return {key: value[part] for key, value in x.items()}
    return x[part]


def check_data(name: str, data: Any) -> Any:
    """`data` if it is one of the accepted forms, else a `ValueError`."""
    if _is_inputs(data):
        return data
    if isinstance(data, tuple) and len(data) == 2 and _is_inputs(data[0]):
        if not _is_array(data[1]) or len(data[1]) != _length(data[0]):
            fail(name, "a tuple `(x, y)` with as many labels as inputs", data)
        return data
    if isinstance(data, (str, bytes, dict, tuple)) or not isinstance(
        data, Iterable
    ):
        fail(name, DATA_TEXT, data)
    return data


def calibration_batches(
    data: Any, batch_size: int = 8, num_batches: int | None = None
) -> list:
    """The batches of `data`, as a list of `(x, y)` (`y` may be `None`).

    Args:
        data: see the module docstring.
        batch_size: batch size when `data` holds arrays.
        num_batches: read at most this many batches (`None`: all).

    Returns:
        A list of `(x, y)` pairs of NumPy arrays (or dicts of them).
    """
    data = check_data("data", data)
    batch_size = check_positive_int("batch_size", batch_size)
    if num_batches is not None:
        num_batches = check_positive_int("num_batches", num_batches)
    if _is_inputs(data) or (isinstance(data, tuple) and len(data) == 2):
        x, y = (data, None) if _is_inputs(data) else data
        n = _length(x)
        batches = [
            (
                _slice(x, slice(i, i + batch_size)),
                _slice(y, slice(i, i + batch_size)),
            )
            for i in range(0, n, batch_size)
        ]
    else:
        batches = []
        for batch in data:
            if num_batches is not None and len(batches) >= num_batches:
                break
            batches.append(_split(batch))
    if num_batches is not None:
        batches = batches[:num_batches]
    if not batches:
        fail("data", "at least one batch", data)
    return batches


def _split(batch):
    """`(x, y)` of one batch of an iterable, as NumPy."""
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        x, y = batch[0], batch[1]
    else:
        x, y = batch, None
    if not _is_inputs(x):
        fail("data", f"{DATA_TEXT} (a batch was not)", batch)
    x = keras.tree.map_structure(keras.ops.convert_to_numpy, x)
    if y is not None:
        y = keras.ops.convert_to_numpy(y)
    return x, y
