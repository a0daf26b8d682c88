"""Mask computation per structure: the NumPy reference.

`mask_ops.py` computes the same masks with `keras.ops` inside the compiled
train step; this module is the reference it is tested against (and what
`MagnitudePruning` uses once, before the training loop).

Every kernel is viewed as a 2-D matrix `(n_in, n_out)`: the last axis is the
output axis (Dense `(in, out)`, Conv `(*window, in, out)`, EinsumDense with
the output last), all other axes are flattened into the input axis. N:M
is the exception: its groups run along the input-channel axis alone (axis
-2), at every spatial position and output channel, as tfmot's.
"""

import numpy as np
import numpy.typing as npt

from keras_efficient import _validation as _v

STRUCTURES = ("unstructured", "block", "n_m", "filter")


def _as_2d(w):
    w = np.asarray(w)
    return w.reshape(-1, w.shape[-1]) if w.ndim > 1 else w.reshape(-1, 1)


def _block_scores(a, block, pooling):
    r, c = block
    n_in, n_out = a.shape
    pi, po = (-n_in) % r, (-n_out) % c
    p = np.pad(a, ((0, pi), (0, po)))
    p = p.reshape(p.shape[0] // r, r, p.shape[1] // c, c)
    if pooling == "max":
        return p.max(axis=(1, 3))
    counts = np.pad(np.ones_like(a), ((0, pi), (0, po)))
    counts = counts.reshape(p.shape).sum(axis=(1, 3))
    return p.sum(axis=(1, 3)) / counts


def _expand_blocks(m, block, shape):
    r, c = block
    return np.kron(m, np.ones((r, c)))[: shape[0], : shape[1]]


def unit_scores(
    kernel: npt.ArrayLike,
    structure: str,
    block: tuple[int, int] | None = None,
    pooling: str = "avg",
) -> np.ndarray:
    """Scores of the prunable units of one kernel (weights/blocks/filters)."""
    a = np.abs(_as_2d(kernel)).astype("float32")
    if structure == "unstructured":
        return a
    if structure == "block":
        return _block_scores(a, block, pooling)
    if structure == "filter":
        return a.sum(axis=0)
    raise ValueError(f"No unit scores for structure={structure!r}")


def units_to_mask(
    keep: np.ndarray,
    kernel_shape: tuple,
    structure: str,
    block: tuple[int, int] | None = None,
) -> np.ndarray:
    """Expand a boolean keep-array over units to a kernel-shaped mask."""
    n_out = kernel_shape[-1] if len(kernel_shape) > 1 else 1
    n_in = int(np.prod(kernel_shape)) // n_out
    if structure == "unstructured":
        m = keep
    elif structure == "block":
        m = _expand_blocks(keep, block, (n_in, n_out))
    else:
        m = np.broadcast_to(keep[None, :], (n_in, n_out))
    return np.asarray(m, "float32").reshape(kernel_shape)


def kept_units(
    mask: npt.ArrayLike, structure: str, block: tuple[int, int] | None = None
) -> np.ndarray:
    """Boolean array over the units (as `unit_scores`) that `mask` keeps."""
    m = _as_2d(mask) > 0
    if structure == "unstructured":
        return m
    if structure == "block":
        return _block_scores(m.astype("float32"), block, "max") > 0
    if structure == "filter":
        return m.any(axis=0)
    raise ValueError(f"No units for structure={structure!r}")


def mask_thresholds(
    kernels: list,
    masks: list,
    structure: str,
    scope: str = "layer",
    block: tuple[int, int] | None = None,
    pooling: str = "avg",
) -> list[float]:
    """The magnitude threshold of each kernel's mask (one shared value,
    repeated, for `scope="global"`): the smallest unit score (`|w|`, the
    block's average or max, the filter's L1 norm) among the units the mask
    keeps, scored on `kernels` as they are now; `0.0` when the masks prune
    nothing.

    Right after a mask update this is tfmot's threshold (the k-th largest
    score: kept units score `>=` it). No threshold exists for "n_m" (each
    group has its own).
    """
    kept = []
    for kernel, mask in zip(kernels, masks):
        score = unit_scores(kernel, structure, block, pooling)
        keep = kept_units(mask, structure, block)
        kept.append((score[keep], bool(keep.all())))

    def smallest(pairs):
        if all(dense for _, dense in pairs):
            return 0.0
        values = np.concatenate([s.ravel() for s, _ in pairs])
        return float(values.min()) if values.size else 0.0

    if scope == "global":
        return [smallest(kept)] * len(kept)
    return [smallest([pair]) for pair in kept]


def keep_count(n: int, sparsity: float) -> int:
    """`k = max(round(n * (1 - s)), 1)`, in float32 (round half to even).

    float32 on purpose: the compiled step computes `k` in float32 on every
    backend (JAX runs without float64), so both paths keep the same count.
    """
    one = np.float32(1.0)
    k = np.round(np.float32(n) * (one - np.float32(sparsity)))
    return max(int(k), 1)


def keep_top(scores_list: list, sparsity: float) -> list[np.ndarray]:
    """Keep the k = max(round(n * (1 - s)), 1) largest scores (exactly k).

    Ties are broken by position (a stable sort of the scores, descending).
    """
    flat = np.concatenate([s.ravel() for s in scores_list])
    n = flat.size
    k = keep_count(n, sparsity)
    order = np.argsort(-flat, kind="stable")
    keep = np.zeros(n, bool)
    keep[order[:k]] = True
    out, i = [], 0
    for s in scores_list:
        out.append(keep[i : i + s.size].reshape(s.shape))
        i += s.size
    return out


def n_m_groups(kernel: npt.ArrayLike, m: int) -> tuple[np.ndarray, int]:
    """`|kernel|` as groups of `m` along the input-channel axis, padded.

    The input-channel axis is axis -2 (Dense `(in, out)`, Conv
    `(*window, in, out)`, expert kernels `(experts, in, out)`); a 1-D
    kernel is one row. Returns `(groups, n_in)`: `groups` has shape
    `(*other axes, out, ceil(n_in / m), m)`, the padding (at the end of the
    last, partial group) is -1, below every magnitude.
    """
    a = np.abs(np.asarray(kernel, "float32"))
    a = a.reshape(1, -1) if a.ndim < 2 else np.swapaxes(a, -1, -2)
    n_in = a.shape[-1]
    pad = (-n_in) % m
    a = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, pad)], constant_values=-1)
    return a.reshape(a.shape[:-1] + ((n_in + pad) // m, m)), n_in


def n_m_groups_to_mask(
    keep: np.ndarray, kernel_shape: tuple, n_in: int
) -> np.ndarray:
    """Inverse of `n_m_groups`: drop the padding, back to `kernel_shape`."""
    keep = keep.reshape(keep.shape[:-2] + (-1,))[..., :n_in]
    if len(kernel_shape) >= 2:
        keep = np.swapaxes(keep, -1, -2)
    return keep.reshape(kernel_shape).astype("float32")


def n_m_mask(kernel: npt.ArrayLike, n: int, m: int) -> np.ndarray:
    """`n` nonzeros in every `m` consecutive weights along input channels.

    Groups run along the input-channel axis (axis -2: `in` of a Dense
    kernel `(in, out)`, `cin` of a Conv kernel `(*window, cin, cout)` at
    each spatial position and output channel), as tfmot's
    `sparsity_m_by_n` does. When that axis is not a multiple of `m`, the
    last group is partial (`r < m` weights) and keeps its `min(n, r)`
    largest, as tfmot does (it zero-pads the group and takes the top `n`).
    Ties go to the lower input index.
    """
    groups, n_in = n_m_groups(kernel, m)
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return n_m_groups_to_mask(keep, np.shape(kernel), n_in)


def resolve_n_m(
    n_m: tuple[int, int] | None = None,
    sparsity_m_by_n: tuple[int, int] | None = None,
) -> tuple[int, int] | None:
    """The N:M pattern as our `(n, m)` (`n` nonzeros in every `m`), from
    either spelling: ours, `n_m=(n, m)`, or tfmot's
    `sparsity_m_by_n=(zeros, m)` (`zeros` zeros in every `m`, so
    `(2, 4)` is the same 2:4 in both). None when neither is given; an
    error when both are.
    """
    if n_m is not None and sparsity_m_by_n is not None:
        raise ValueError(
            "Pass either `n_m=(n, m)` (n nonzeros in every m) or tfmot's "
            "`sparsity_m_by_n=(zeros, m)` (zeros in every m), not both. "
            f"Received: n_m={n_m!r}, sparsity_m_by_n={sparsity_m_by_n!r}"
        )
    if sparsity_m_by_n is not None:
        zeros, m = _v.check_int_tuple("sparsity_m_by_n", sparsity_m_by_n, 2)
        if not zeros < m:
            _v.fail(
                "sparsity_m_by_n",
                "a pair (zeros, m) with 0 < zeros < m",
                sparsity_m_by_n,
            )
        return (m - zeros, m)
    if n_m is None:
        return None
    n_m = _v.check_int_tuple("n_m", n_m, 2)
    if not n_m[0] < n_m[1]:
        _v.fail("n_m", "a pair (n, m) with 0 < n < m", n_m)
    return n_m


def _check_kernels(kernels):
    if isinstance(kernels, (str, bytes)) or not isinstance(
        kernels, (list, tuple)
    ):
        _v.fail("kernels", "a list of arrays", kernels, _v.ArgumentTypeError)
    return [np.asarray(k) for k in kernels]


def compute_masks(
    kernels: list,
    sparsity: float,
    structure: str,
    scope: str = "layer",
    block: tuple[int, int] | None = None,
    n_m: tuple[int, int] | None = None,
    pooling: str = "avg",
    sparsity_m_by_n: tuple[int, int] | None = None,
) -> list[np.ndarray]:
    """Masks (float32 NumPy arrays) for a list of kernels.

    `structure` is one of "unstructured", "block", "n_m", "filter". For
    "n_m" (pattern `n_m=(n, m)`, or tfmot's `sparsity_m_by_n=(zeros, m)`,
    see `resolve_n_m`) the sparsity is fixed at `1 - n / m` and
    `sparsity == 0` means all ones; otherwise k units are kept per layer
    or across all kernels.
    """
    sparsity = _v.check_fraction("sparsity", sparsity)
    _v.check_choice("structure", structure, STRUCTURES)
    _v.check_choice("scope", scope, ("layer", "global"))
    _v.check_choice("pooling", pooling, ("avg", "max"))
    n_m = resolve_n_m(n_m, sparsity_m_by_n)
    if structure == "n_m" and n_m is None:
        _v.fail("n_m", "a pair (n, m) with 0 < n < m", n_m)
    if structure == "block":
        block = _v.check_int_tuple("block", block, 2)
    kernels = _check_kernels(kernels)
    if sparsity <= 0.0:
        return [np.ones(k.shape, "float32") for k in kernels]
    if structure == "n_m":
        return [n_m_mask(k, n_m[0], n_m[1]) for k in kernels]
    scores = [unit_scores(k, structure, block, pooling) for k in kernels]
    if scope == "global":
        keeps = keep_top(scores, sparsity)
    else:
        keeps = [keep_top([s], sparsity)[0] for s in scores]
    return [
        units_to_mask(kp, k.shape, structure, block)
        for kp, k in zip(keeps, kernels)
    ]


def axis_unit_scores(
    w: npt.ArrayLike, axis: int, parts: int = 1, unit: int = 1
) -> np.ndarray:
    """L1 norm of every unit along `axis` of `w`: the axis holds `parts`
    blocks of `n` units of `unit` elements each (a fused query-key-value
    kernel has 3 parts); returns the `n` scores, in float32."""
    a = np.abs(np.asarray(w, dtype=np.float32))
    other = tuple(i for i in range(a.ndim) if i != axis)
    per_element = a.sum(axis=other, dtype=np.float32)
    return per_element.reshape(parts, -1, unit).sum(axis=(0, 2))


def axis_units_to_mask(
    keep: np.ndarray, shape: tuple, axis: int, parts: int = 1, unit: int = 1
) -> np.ndarray:
    """The float32 mask of `shape` that keeps the units `keep` (boolean,
    `n`) along `axis` (laid out as in `axis_unit_scores`)."""
    line = np.tile(np.repeat(np.asarray(keep, np.float32), unit), parts)
    view = [1] * len(shape)
    view[axis] = -1
    return np.broadcast_to(line.reshape(view), shape).astype(np.float32)


def keep_largest(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean: the `k` largest of the 1-D `scores`, ties to the lowest
    index (a stable sort, descending)."""
    keep = np.zeros(len(scores), bool)
    keep[np.argsort(-np.asarray(scores), kind="stable")[:k]] = True
    return keep
