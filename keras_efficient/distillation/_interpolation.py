"""Piecewise-linear interpolation of knot tables with `keras.ops` (private).

The in-graph half of `TeacherAccuracy`: its isotonic maps are stored as
knots and evaluated here inside compiled steps.
"""

import functools
from typing import Any

import numpy as np
from keras import ops

from keras_efficient import _backend

# Up to this many knots, interpolation selects the segment by comparing the
# margin with every knot: a few fused elementwise kernels on XLA, where
# `searchsorted` is a while loop and `take` a gather (SLaM's k(x) reads up
# to 9 tables a step).
_COMPARE_MAX_KNOTS = 128


def interpolate(xs: list, ys: list, margin: Any) -> Any:
    """Piecewise-linear interpolation of knots `(xs, ys)`, `keras.ops`."""
    return interpolate_tables([(xs, ys)], margin)[..., 0]


def interpolate_tables(tables: list, margin: Any) -> Any:
    """Interpolates several knot tables at `margin`: shape `margin + (J,)`.

    Each table `(xs, ys)` has increasing `xs`; values are constant beyond
    the end knots, and at a repeated knot x jump to the later knot's y
    for `margin >= x` (as `searchsorted(side="right")`).
    """
    tables = [_padded(list(xs), list(ys)) for xs, ys in tables]
    n = max(len(xs) for xs, _ in tables)
    if n > _COMPARE_MAX_KNOTS:
        return ops.stack(
            [_interpolate_search(xs, ys, margin) for xs, ys in tables], -1
        )
    compare = _backend.dispatch("interpolate_tables", _interpolate_compare)
    return compare(tables, margin)


def _knot_arrays(tables):
    """`(kx, ky)`, float32 `(J, n)`: each table's last knot repeated up to
    the longest (repeating it changes none of the table's values)."""
    n = max(len(xs) for xs, _ in tables)
    kx = np.array([xs + xs[-1:] * (n - len(xs)) for xs, _ in tables])
    ky = np.array([ys + ys[-1:] * (n - len(ys)) for _, ys in tables])
    return kx.astype("float32"), ky.astype("float32")


def _interpolate_compare(tables, margin):
    """The `keras.ops` reference: the segment found by comparing the margin
    with every knot, its ends read by one gather each."""
    kx, ky = _knot_arrays(tables)
    n = kx.shape[1]
    kx = ops.convert_to_tensor(kx)
    ky = ops.convert_to_tensor(ky)
    m = ops.expand_dims(ops.cast(margin, "float32"), -1)  # (..., 1)
    # #knots <= m per table, as searchsorted(side="right"): (..., J).
    idx = ops.sum(
        ops.cast(ops.greater_equal(ops.expand_dims(m, -1), kx), "int32"), -1
    )
    # Index the tables flattened: one small gather per end of the segment.
    idx = ops.clip(idx, 1, n - 1) + np.arange(len(tables), dtype="int32") * n
    kx, ky = ops.reshape(kx, (-1,)), ops.reshape(ky, (-1,))
    x0, x1 = ops.take(kx, idx - 1), ops.take(kx, idx)
    y0, y1 = ops.take(ky, idx - 1), ops.take(ky, idx)
    t = ops.clip((m - x0) / ops.maximum(x1 - x0, 1e-12), 0.0, 1.0)
    return y0 + t * (y1 - y0)


def first_reaching(xs: list, ys: list, level: float) -> float | None:
    """The smallest margin at which the table `(xs, ys)` (as
    `interpolate` evaluates it) reaches `level`: -inf when it starts
    there, inf when it never does; None when `ys` decreases somewhere
    (then no single threshold describes it). Host-side, float64.

    For a non-decreasing table, `interpolate(xs, ys, m) >= level` exactly
    when `m >= first_reaching(xs, ys, level)`, up to float32 rounding of
    the interpolation at that point.
    """
    xs, ys = _padded(list(xs), list(ys))
    if any(b < a for a, b in zip(ys, ys[1:])):
        return None
    if ys[0] >= level:
        return -np.inf
    for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:]):
        if y1 >= level:  # y0 < level: the crossing is in this segment
            if x1 <= x0:  # a jump at a repeated knot
                return float(x0)
            return float(x0 + (level - y0) * (x1 - x0) / (y1 - y0))
    return np.inf


@functools.lru_cache(maxsize=64)
def _leading_thresholds(key, level):
    bounds = [first_reaching(xs, ys, level) for xs, ys in key]
    if any(b is None for b in bounds):
        return None
    return tuple(np.minimum.accumulate(bounds).tolist())


def leading_thresholds(tables: list, level: float) -> tuple | None:
    """Margins `M_j` such that the number of leading tables whose value at
    `m` stays below `level` is `#{j: m < M_j}` (the running minimum of
    each table's `first_reaching`); None when a table decreases. Cached
    per table set and level."""
    key = tuple((tuple(xs), tuple(ys)) for xs, ys in tables)
    return _leading_thresholds(key, float(level))


def _padded(xs, ys):
    if len(xs) == 1:
        return xs + [xs[0] + 1.0], ys + ys
    return xs, ys


def _interpolate_search(xs, ys, margin):
    """One table through `searchsorted` and `take`, for many knots."""
    kx = ops.convert_to_tensor(np.asarray(xs, "float32"))
    ky = ops.convert_to_tensor(np.asarray(ys, "float32"))
    margin = ops.cast(margin, "float32")
    # TensorFlow's searchsorted needs values of rank 1 against a 1-D
    # sequence (it matches leading dimensions otherwise), so flatten
    # margins of any rank, e.g. (batch, time) for sequence outputs.
    shape = ops.shape(margin)
    flat = ops.reshape(margin, (-1,))
    idx = ops.searchsorted(kx, flat, side="right")
    idx = ops.clip(idx, 1, len(xs) - 1)
    x0, x1 = ops.take(kx, idx - 1), ops.take(kx, idx)
    y0, y1 = ops.take(ky, idx - 1), ops.take(ky, idx)
    t = ops.clip((flat - x0) / ops.maximum(x1 - x0, 1e-12), 0.0, 1.0)
    return ops.reshape(y0 + t * (y1 - y0), shape)


@functools.lru_cache(maxsize=64)
def _torch_segments(key, device):
    """The knots of a table set as torch tensors, made once per table set
    and device: `kx` (J, n) and, per segment, `(x0, x1 - x0 floored, y0,
    y1 - y0)` in one `(J * (n - 1), 4)` table (one gather reads all four
    ends of the segments; the reference gathers four times)."""
    import torch

    kx, ky = _knot_arrays([(list(xs), list(ys)) for xs, ys in key])
    n = kx.shape[1]
    width = np.maximum(kx[:, 1:] - kx[:, :-1], np.float32(1e-12))
    segments = np.stack(
        [kx[:, :-1], width, ky[:, :-1], ky[:, 1:] - ky[:, :-1]], -1
    )
    offsets = torch.arange(len(key), device=device) * (n - 1) - 1
    segments = torch.from_numpy(segments.reshape(-1, 4)).to(device)
    return torch.from_numpy(kx).to(device), segments, offsets, n


@_backend.register_fast_path("interpolate_tables", "torch")
def _interpolate_compare_torch(tables, margin):
    """`_interpolate_compare` in ~20 aten calls. Eager torch pays per op:
    the reference's `keras.ops` calls (each converting its arguments, and
    the knot tables made into tensors on every call) are ~190 aten calls
    a table set; here the knots are converted once per table set and
    device, and one gather reads a segment's ends."""

    key = tuple((tuple(xs), tuple(ys)) for xs, ys in tables)
    m = ops.convert_to_tensor(margin, "float32")
    kx, segments, offsets, n = _torch_segments(key, m.device)
    m = m.unsqueeze(-1)  # (..., 1)
    # #knots <= m per table, as searchsorted(side="right"): (..., J); the
    # segment from knot idx - 1 to knot idx, flattened over the tables.
    idx = (m.unsqueeze(-1) >= kx).sum(-1).clamp(1, n - 1) + offsets
    x0, width, y0, rise = segments[idx].unbind(-1)
    return y0 + ((m - x0) / width).clamp(0.0, 1.0) * rise


@functools.lru_cache(maxsize=64)
def torch_buckets(xs, ys, device):
    """One knot table `(xs, ys)` (tuples) as the torch tensors that
    `interpolate_buckets_torch` reads, made once per table and device:
    `knots_x` for `bucketize` and, per bucket `i` (the number of knots
    <= the margin), the ends of the segment the reference reads there
    (`clip(i, 1, n - 1) - 1`) in four 1-D tables, `x0`, the width floored
    as the reference floors it, `y0` and the rise (computed in float32 as
    the reference computes them), plus a float32 0 and 1 for the clamp
    (Python numbers are wrapped and copied on every call)."""
    import torch

    kx, ky = _knot_arrays([_padded(list(xs), list(ys))])
    kx, ky = kx[0], ky[0]
    n = len(kx)
    width = np.maximum(kx[1:] - kx[:-1], np.float32(1e-12))
    columns = [kx[:-1], width, ky[:-1], ky[1:] - ky[:-1]]
    bucket = np.clip(np.arange(n + 1), 1, n - 1) - 1
    tables = [
        torch.from_numpy(np.ascontiguousarray(c[bucket])).to(device)
        for c in columns
    ]
    bounds = [_backend.torch_constant(v, device) for v in (0.0, 1.0)]
    return (torch.from_numpy(kx).to(device), *tables, *bounds)


def interpolate_buckets_torch(buckets: tuple, margin: Any) -> Any:
    """`interpolate` of a float32 torch `margin` (any shape) at the table
    of `torch_buckets`: one `bucketize` and four 1-D gathers (`take`; a
    gather from one (n, 4) table and its `unbind` are 5 aten calls
    more), then the reference's float32 arithmetic in its order."""
    import torch

    knots_x, x0, width, y0, rise, zero, one = buckets
    i = torch.bucketize(margin, knots_x, right=True)
    t = ((margin - x0.take(i)) / width.take(i)).clamp(zero, one)
    return y0.take(i) + t * rise.take(i)
