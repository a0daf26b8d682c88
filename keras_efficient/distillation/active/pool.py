"""The unlabeled pool of `ActiveDistillation`, in any form Keras reads.

A pool is read three ways: by row index (the points chosen for the teacher
and the growing training set), in batches (scoring it with the student),
and as a fingerprint (the ledger refuses to resume onto other data).

- `ArrayPool`: what fits in memory: an array, a dict / list / tuple of
  arrays with one row count (any keras-hub input, e.g. `{"token_ids": ...,
  "padding_mask": ...}`), or an array of strings (raw text for models that
  bring their own preprocessor).
- `StreamPool`: a `tf.data.Dataset` or `keras.utils.PyDataset` yielding
  batches of unlabeled inputs, for a pool that does not fit in memory. It
  is streamed once on construction (to count its rows and fingerprint
  them), once per round for scoring, and once per round to read the
  chosen rows back; only the chosen rows are kept in memory.
"""

import hashlib
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from keras_efficient import _validation as v

# Rows hashed into an in-memory pool's fingerprint (evenly spaced).
_SAMPLE_ROWS = 256


def _leaf_array(x):
    """A NumPy array of one input; strings stay strings (or bytes)."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "numpy"):  # a TensorFlow tensor (strings: bytes objects)
        return np.asarray(x.numpy())
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (str, bytes)):
        return np.asarray(x)
    return np.asarray(keras.ops.convert_to_numpy(x))


def is_text(array: np.ndarray) -> bool:
    return array.dtype.kind in "OUS"


def _structure(data, name):
    """`data` as a structure of NumPy arrays (a list of strings is text)."""
    if isinstance(data, (list, tuple)) and data:
        if isinstance(data[0], (str, bytes)):
            return np.asarray(data)
    if isinstance(data, (str, bytes)) or data is None:
        v.fail(name, "an array, a dict of arrays or a dataset", data)
    return keras.tree.map_structure(_leaf_array, data)


def num_rows(data: Any, name: str = "pool") -> int:
    """The common number of rows of a structure of arrays (checked)."""
    leaves = keras.tree.flatten(data)
    if not leaves:
        v.fail(name, "at least one array of inputs", data)
    lengths = []
    for leaf in leaves:
        if leaf.ndim == 0:
            v.fail(
                name,
                "arrays with a leading row axis",
                f"a scalar of dtype {leaf.dtype}",
            )
        lengths.append(len(leaf))
    if len(set(lengths)) > 1:
        shapes = keras.tree.map_structure(lambda a: a.shape, data)
        v.fail(name, "arrays with one number of rows", shapes)
    return lengths[0]


def rows_of(data: Any, rows: np.ndarray) -> Any:
    """The `rows` (indices or a slice) of every array of `data`."""
    return keras.tree.map_structure(lambda a: a[rows], data)


def pad_rows(data: Any, count: int) -> Any:
    """`data` with its first row repeated `count` more times."""
    return keras.tree.map_structure(
        lambda a: np.concatenate([a, np.repeat(a[:1], count, 0)]), data
    )


def concat_rows(parts: list) -> Any:
    return keras.tree.map_structure(lambda *a: np.concatenate(a), *parts)


def _row_bytes(array):
    """Bytes of rows, independent of a string array's fixed width."""
    if is_text(array):
        return b"\0".join(
            s if isinstance(s, bytes) else str(s).encode()
            for s in array.reshape(-1)
        )
    return np.ascontiguousarray(array).tobytes()


def _describe(data):
    """Per input: its place in the structure (dict keys, list positions),
    kind (the dtype of numbers; text) and row shape."""
    return [
        (path, "text" if is_text(a) else str(a.dtype), tuple(a.shape[1:]))
        for path, a in keras.tree.flatten_with_path(data)
    ]


class ArrayPool:
    """A pool held in memory (see the module docstring)."""

    streamed = False

    def __init__(self, data: Any, name: str = "pool"):
        self.data = _structure(data, name)
        self.num_rows = num_rows(self.data, name)
        if self.num_rows == 0:
            shapes = keras.tree.map_structure(lambda a: a.shape, self.data)
            v.fail(name, "at least one input (row)", f"0 rows {shapes}")

    def __len__(self) -> int:
        return self.num_rows

    def describe(self) -> list:
        return _describe(self.data)

    def take(self, indices: np.ndarray) -> Any:
        """The rows at `indices`, in their order, as the pool's structure."""
        idx = np.asarray(indices, np.int64)
        return rows_of(self.data, idx)

    def batches(self, indices: np.ndarray, batch_size: int) -> Iterator:
        """Batches of the rows at `indices` (in order), as given."""
        idx = np.asarray(indices, np.int64)
        for s in range(0, len(idx), batch_size):
            yield self.take(idx[s : s + batch_size])

    def head(self, count: int) -> Any:
        return self.take(np.arange(count) % self.num_rows)

    def fingerprint(self) -> str:
        """Hash of the row count, each input's kind and row shape, and
        up to 256 evenly spaced rows (cheap on any pool size)."""
        n = self.num_rows
        rows = np.unique(np.linspace(0, n - 1, min(n, _SAMPLE_ROWS)).round())
        digest = hashlib.blake2b(digest_size=12)
        digest.update(repr((n, self.describe())).encode())
        for leaf in keras.tree.flatten(self.data):
            digest.update(_row_bytes(leaf[rows.astype(np.int64)]))
        return digest.hexdigest()


def is_stream(data: Any) -> bool:
    if isinstance(data, keras.utils.PyDataset):
        return True
    module = type(data).__module__ or ""
    return module.startswith("tensorflow") and hasattr(data, "cardinality")


class StreamPool:
    """A pool streamed from a `tf.data.Dataset` or `keras.utils.PyDataset`.

    Each element is a batch of inputs (an `(x,)` or `(x, y)` tuple is
    unpacked as Keras does and `y` ignored). The row order is the stream's,
    which must be the same on every pass (no reshuffling per iteration).
    """

    streamed = True

    def __init__(self, source: Any, name: str = "pool"):
        self.source = source
        self.name = name
        if hasattr(source, "cardinality"):
            import tensorflow as tf

            if int(source.cardinality()) == tf.data.INFINITE_CARDINALITY:
                v.fail(name, "a finite dataset", "an infinite dataset")
        elif source.num_batches is None:
            v.fail(name, "a PyDataset with a length", "an infinite PyDataset")
        self._cache_idx = np.zeros(0, np.int64)
        self._cache = None
        self._first = None
        digest = hashlib.blake2b(digest_size=12)
        n = 0
        for x in self._stream():
            if self._first is None:
                self._first = x
                self._describe = _describe(x)
                digest.update(repr(self._describe).encode())
            elif _describe(x) != self._describe:
                v.fail(
                    name,
                    f"batches of one kind and row shape, {self._describe}",
                    f"a batch with {_describe(x)} at row {n}",
                )
            for leaf in keras.tree.flatten(x):
                digest.update(_row_bytes(leaf))
            n += num_rows(x, name)
        if n == 0:
            v.fail(name, "at least one input (row)", "an empty dataset")
        self.num_rows = n
        digest.update(repr(n).encode())
        self._fingerprint = digest.hexdigest()

    def __len__(self) -> int:
        return self.num_rows

    def describe(self) -> list:
        return self._describe

    def fingerprint(self) -> str:
        """Hash of every row, computed while counting them (one pass)."""
        return self._fingerprint

    def _stream(self):
        if isinstance(self.source, keras.utils.PyDataset):
            elements = (self.source[i] for i in range(self.source.num_batches))
        else:
            elements = iter(self.source)
        for element in elements:
            if isinstance(element, tuple):
                element = keras.utils.unpack_x_y_sample_weight(element)[0]
            yield _structure(element, self.name)

    def _read(self, wanted):
        """One pass: the rows at sorted unique `wanted`, in that order."""
        parts, start = [], 0
        for x in self._stream():
            n = num_rows(x, self.name)
            lo, hi = np.searchsorted(wanted, [start, start + n])
            if hi > lo:
                rows = wanted[lo:hi] - start
                parts.append(rows_of(x, rows))
            start += n
        if start != self.num_rows:
            v.fail(
                self.name,
                f"the same {self.num_rows} rows on every pass",
                f"a pass of {start} rows",
            )
        return concat_rows(parts)

    def take(self, indices: np.ndarray) -> Any:
        """The rows at `indices`; rows read once are kept (the chosen
        points are few), others need one pass over the stream."""
        idx = np.asarray(indices, np.int64)
        missing = np.setdiff1d(idx, self._cache_idx)
        if len(missing):
            rows = self._read(missing)
            if self._cache is None:
                self._cache_idx, self._cache = missing, rows
            else:
                order = np.argsort(
                    np.concatenate([self._cache_idx, missing]), kind="stable"
                )
                self._cache_idx = np.concatenate([self._cache_idx, missing])
                self._cache = keras.tree.map_structure(
                    lambda a, b: np.concatenate([a, b]), self._cache, rows
                )
                self._cache_idx = self._cache_idx[order]
                self._cache = keras.tree.map_structure(
                    lambda a: a[order], self._cache
                )
        pos = np.searchsorted(self._cache_idx, idx)
        return keras.tree.map_structure(lambda a: a[pos], self._cache)

    def batches(self, indices: np.ndarray, batch_size: int) -> Iterator:
        """Batches of the rows at `indices` (in order): from memory when
        all were read before, else one pass over the stream."""
        idx = np.asarray(indices, np.int64)
        if len(np.setdiff1d(idx, self._cache_idx)) == 0:
            for s in range(0, len(idx), batch_size):
                yield self.take(idx[s : s + batch_size])
            return
        order = np.argsort(idx, kind="stable")
        if not np.array_equal(order, np.arange(len(idx))):
            # Rows come back in stream order: read, then reorder.
            for s in range(0, len(idx), batch_size):
                yield self.take(idx[s : s + batch_size])
            return
        buffer, start, held = [], 0, 0
        for x in self._stream():
            n = num_rows(x, self.name)
            lo, hi = np.searchsorted(idx, [start, start + n])
            start += n
            if hi == lo:
                continue
            rows = idx[lo:hi] - (start - n)
            buffer.append(rows_of(x, rows))
            held += hi - lo
            while held >= batch_size:
                joined = concat_rows(buffer)
                yield rows_of(joined, slice(None, batch_size))
                rest = rows_of(joined, slice(batch_size, None))
                buffer, held = [rest], held - batch_size
        if held:
            yield concat_rows(buffer)

    def head(self, count: int) -> Any:
        first = self._first
        n = num_rows(first, self.name)
        rows = np.arange(count) % n
        return keras.tree.map_structure(lambda a: a[rows], first)


def as_pool(data: Any, name: str = "pool") -> ArrayPool | StreamPool:
    """An `ArrayPool` or a `StreamPool` for what the user passed."""
    if isinstance(data, (ArrayPool, StreamPool)):
        return data
    if is_stream(data):
        return StreamPool(data, name)
    return ArrayPool(data, name)
