"""Mask computation per structure with `keras.ops` (inside the train step).

The same masks as the NumPy reference in `masks.py`, written with
`keras.ops` so that `MagnitudePruning` computes them in the compiled train
step (XLA on JAX and TensorFlow, eager on PyTorch) without retracing. The
sparsity is a traced value, so the number of kept units `k` is one too:
instead of `top_k` (which needs a static `k`, and whose order among equal
scores is not specified on every backend), the k-th largest score `v` is
found without sorting, by bisection over the float32 bits of the
(non-negative) scores; every unit above `v` is kept, and of the units
equal to `v` the lowest-index ones (a cumulative count), as many as `k`
still needs: exactly the stable-sort rule of the NumPy reference.

Kernels are viewed as `(n_in, n_out)` matrices, the last axis being the
output axis, as in `masks.py`.
"""

from typing import Any

import numpy as np
from keras import ops

# A backend tensor (or array) that `keras.ops` accepts; may be traced.
Tensor = Any


def _as_2d(w):
    shape = tuple(w.shape)
    if len(shape) < 2:
        return ops.reshape(w, (-1, 1))
    return ops.reshape(w, (-1, shape[-1]))


def keep_count(n: int, sparsity: Tensor) -> Tensor:
    """`k = max(round(n * (1 - s)), 1)` as an int32 tensor (float32 math)."""
    keep = 1.0 - ops.cast(sparsity, "float32")
    k = ops.round(ops.cast(n, "float32") * keep)
    return ops.maximum(ops.cast(k, "int32"), 1)


def descending_ranks(x: Tensor, axis: int = -1) -> Tensor:
    """Rank of every entry of `x` along `axis`, 0 for the largest.

    Ties rank by position (stable sort), as `np.argsort(-x, kind="stable")`.
    """
    order = ops.argsort(ops.negative(x), axis=axis)
    return ops.argsort(order, axis=axis)  # inverse permutation


def _block_scores(a, block, pooling):
    r, c = block
    n_in, n_out = tuple(a.shape)
    pi, po = (-n_in) % r, (-n_out) % c
    p = ops.pad(a, ((0, pi), (0, po)))
    p = ops.reshape(p, ((n_in + pi) // r, r, (n_out + po) // c, c))
    if pooling == "max":
        return ops.max(p, axis=(1, 3))
    counts = np.pad(np.ones((n_in, n_out), "float32"), ((0, pi), (0, po)))
    counts = counts.reshape(p.shape).sum(axis=(1, 3))
    return ops.sum(p, axis=(1, 3)) / counts


def unit_scores(
    kernel: Tensor,
    structure: str,
    block: tuple[int, int] | None = None,
    pooling: str = "avg",
) -> Tensor:
    """Scores of the prunable units (weights, blocks or filters), float32."""
    a = ops.abs(ops.cast(_as_2d(kernel), "float32"))
    if structure == "unstructured":
        return a
    if structure == "block":
        return _block_scores(a, block, pooling)
    if structure == "filter":
        return ops.sum(a, axis=0)
    raise ValueError(f"No unit scores for structure={structure!r}")


def units_to_mask(
    keep: Tensor,
    kernel_shape: tuple,
    structure: str,
    block: tuple[int, int] | None = None,
) -> Tensor:
    """Expand a boolean keep-tensor over units to a kernel-shaped mask."""
    kernel_shape = tuple(kernel_shape)
    n_out = kernel_shape[-1] if len(kernel_shape) > 1 else 1
    n_in = int(np.prod(kernel_shape)) // n_out
    m = ops.cast(keep, "float32")
    if structure == "block":
        m = ops.repeat(ops.repeat(m, block[0], axis=0), block[1], axis=1)
        m = m[:n_in, :n_out]
    elif structure == "filter":
        m = ops.broadcast_to(m[None, :], (n_in, n_out))
    return ops.reshape(m, kernel_shape)


def _keep_largest(flat, k):
    """Boolean: the `k` largest of the 1-D non-negative `flat`, ties to the
    lowest index (as `np.argsort(-flat, kind="stable")[:k]`); `k` may be
    traced.

    No sort: the bit patterns of non-negative float32 values order like the
    values, so the k-th largest value is found exactly by bisection over
    its bits (31 rounds of a count, O(n) each). The rounds are one
    `fori_loop` (a single loop in the compiled graph): unrolled, 31 rounds
    per layer made a ResNet's train step take seconds longer to compile.
    """
    bits = ops.view(ops.abs(ops.cast(flat, "float32")), "int32")  # +0 only

    def bisect(_, bounds):
        lo, hi = bounds  # count(bits >= lo) >= k > count(bits >= hi)
        mid = lo + ops.floor_divide(hi - lo, 2)
        ok = ops.greater_equal(
            ops.sum(ops.cast(ops.greater_equal(bits, mid), "int32")), k
        )
        return ops.where(ok, mid, lo), ops.where(ok, hi, mid)

    start = (
        ops.convert_to_tensor(0, "int32"),
        ops.convert_to_tensor(0x7F800001, "int32"),
    )
    lo, _ = ops.fori_loop(0, 31, bisect, start)
    above = ops.greater(bits, lo)  # lo: the bits of the k-th largest
    tied = ops.equal(bits, lo)
    need = k - ops.sum(ops.cast(above, "int32"))
    first = ops.less_equal(ops.cumsum(ops.cast(tied, "int32")), need)
    return ops.logical_or(above, ops.logical_and(tied, first))


def keep_top(scores_list: list, sparsity: Tensor) -> list:
    """Keep exactly `k = max(round(n * (1 - s)), 1)` of the largest scores
    over all of `scores_list` together; one boolean tensor per entry."""
    flat = ops.concatenate([ops.reshape(s, (-1,)) for s in scores_list])
    n = int(flat.shape[0])
    keep = _keep_largest(flat, keep_count(n, sparsity))
    out, i = [], 0
    for s in scores_list:
        size = int(np.prod(s.shape))
        out.append(ops.reshape(keep[i : i + size], s.shape))
        i += size
    return out


def _n_m_groups(kernel, m):
    """`|kernel|` as `(..., out, groups, m)` along the input-channel axis
    (axis -2), the partial last group padded with -1; as
    `masks.n_m_groups`."""
    a = ops.abs(ops.cast(kernel, "float32"))
    a = ops.reshape(a, (1, -1)) if len(a.shape) < 2 else ops.swapaxes(a, -1, -2)
    shape = tuple(a.shape)
    pad = (-shape[-1]) % m
    if pad:
        a = ops.pad(a, [(0, 0)] * (len(shape) - 1) + [(0, pad)], "constant", -1)
    return ops.reshape(a, shape[:-1] + ((shape[-1] + pad) // m, m)), shape[-1]


def n_m_mask(kernel: Tensor, n: int, m: int) -> Tensor:
    """`n` nonzeros in every `m` consecutive weights along the input
    channels (axis -2), a partial last group keeping `min(n, r)`; as
    `masks.n_m_mask`.

    The rank of a weight in its group is counted, not sorted: the number
    of weights of the group above it, plus those equal to it at a lower
    index (`m x m` comparisons per group, exactly the stable order).
    """
    g, n_in = _n_m_groups(kernel, m)
    row, col = g[..., :, None], g[..., None, :]  # row: i, col: j
    lower = np.tril(np.ones((m, m), bool), -1).T  # [i, j]: i < j
    before = ops.logical_or(
        ops.greater(row, col), ops.logical_and(ops.equal(row, col), lower)
    )
    rank = ops.sum(ops.cast(before, "int32"), axis=-2)  # over i, per j
    keep = ops.reshape(ops.less(rank, n), tuple(g.shape[:-2]) + (-1,))
    keep = ops.cast(keep[..., :n_in], "float32")
    if len(kernel.shape) >= 2:
        keep = ops.swapaxes(keep, -1, -2)
    return ops.reshape(keep, tuple(kernel.shape))


def compute_masks(
    kernels: list,
    sparsity: Tensor,
    structure: str,
    scope: str = "layer",
    block: tuple[int, int] | None = None,
    n_m: tuple[int, int] | None = None,
    pooling: str = "avg",
) -> list:
    """Masks (float32 tensors) for a list of kernels; `sparsity` may be a
    traced scalar. Equals `masks.compute_masks` (the NumPy reference).

    For `"n_m"` the sparsity is fixed at `1 - n / m` and `sparsity <= 0`
    gives all ones; otherwise `k` units are kept per layer or, with
    `scope="global"`, across all kernels.

    Example:

    ```python
    import numpy as np
    from keras import ops
    from keras_efficient.pruning import mask_ops

    w = np.arange(8, dtype="float32").reshape(4, 2)
    (mask,) = mask_ops.compute_masks([w], 0.5, "unstructured")
    assert float(ops.sum(mask)) == 4.0
    ```
    """
    if structure == "n_m":
        ones = [ops.ones(tuple(k.shape), "float32") for k in kernels]
        prune = ops.greater(ops.cast(sparsity, "float32"), 0.0)
        return [
            ops.where(prune, n_m_mask(k, n_m[0], n_m[1]), one)
            for k, one in zip(kernels, ones)
        ]
    scores = [unit_scores(k, structure, block, pooling) for k in kernels]
    if scope == "global":
        keeps = keep_top(scores, sparsity)
    else:
        keeps = [keep_top([s], sparsity)[0] for s in scores]
    return [
        units_to_mask(kp, tuple(k.shape), structure, block)
        for kp, k in zip(keeps, kernels)
    ]


def axis_unit_scores(
    w: Tensor, axis: int, parts: int = 1, unit: int = 1
) -> Tensor:
    """As `masks.axis_unit_scores`: the L1 norm of every unit along
    `axis`."""
    a = ops.abs(ops.cast(w, "float32"))
    other = tuple(i for i in range(len(a.shape)) if i != axis)
    per_element = ops.sum(a, axis=other) if other else a
    return ops.sum(ops.reshape(per_element, (parts, -1, unit)), axis=(0, 2))


def axis_units_to_mask(
    keep: Tensor, shape: tuple, axis: int, parts: int = 1, unit: int = 1
) -> Tensor:
    """As `masks.axis_units_to_mask`: the mask keeping the units `keep`."""
    line = ops.repeat(ops.cast(keep, "float32"), unit)
    line = ops.tile(line, (parts,)) if parts > 1 else line
    view = [1] * len(shape)
    view[axis] = -1
    return ops.broadcast_to(ops.reshape(line, view), shape)


def keep_largest(scores: Tensor, k: Tensor) -> Tensor:
    """As `masks.keep_largest`, `k` may be traced (no sort: see
    `_keep_largest`)."""
    return _keep_largest(scores, k)
