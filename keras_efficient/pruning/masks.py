"""Mask computation per structure: the NumPy reference.

`mask_ops.py` computes the same masks with `keras.ops` inside the compiled
train step; this module is the reference it is tested against (and what
`MagnitudePruning` uses once, before the training loop).

Every kernel is viewed as a 2-D matrix `(n_in, n_out)`: the last axis is the
output axis (Dense `(in, out)`, Conv `(*window, in, out)`, EinsumDense with
the output last), all other axes are flattened into the input axis.
"""

import numpy as np

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


def unit_scores(kernel, structure, block=None, pooling="avg"):
    """Scores of the prunable units of one kernel (weights/blocks/filters)."""
    a = np.abs(_as_2d(kernel)).astype("float32")
    if structure == "unstructured":
        return a
    if structure == "block":
        return _block_scores(a, block, pooling)
    if structure == "filter":
        return a.sum(axis=0)
    raise ValueError(f"No unit scores for structure={structure!r}")


def units_to_mask(keep, kernel_shape, structure, block=None):
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


def keep_count(n, sparsity):
    """`k = max(round(n * (1 - s)), 1)`, in float32 (round half to even).

    float32 on purpose: the compiled step computes `k` in float32 on every
    backend (JAX runs without float64), so both paths keep the same count.
    """
    one = np.float32(1.0)
    k = np.round(np.float32(n) * (one - np.float32(sparsity)))
    return max(int(k), 1)


def keep_top(scores_list, sparsity):
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


def n_m_mask(kernel, n, m):
    """N nonzeros in every M consecutive weights along the input axis."""
    a = np.abs(_as_2d(kernel))
    n_in, n_out = a.shape
    if n_in % m:
        raise ValueError(
            f"`n_m=({n}, {m})` needs the input size ({n_in}) of kernel "
            f"{tuple(np.shape(kernel))} to be a multiple of {m}."
        )
    g = a.reshape(n_in // m, m, n_out)
    order = np.argsort(-g, axis=1, kind="stable")
    keep = np.zeros_like(g, bool)
    np.put_along_axis(keep, order[:, :n, :], True, axis=1)
    return keep.reshape(np.shape(kernel)).astype("float32")


def compute_masks(
    kernels,
    sparsity,
    structure,
    scope="layer",
    block=None,
    n_m=None,
    pooling="avg",
):
    """Masks (float32 NumPy arrays) for a list of kernels.

    `structure` is one of "unstructured", "block", "n_m", "filter". For
    "n_m" the sparsity is fixed at `1 - n / m` and `sparsity == 0` means
    all ones; otherwise k units are kept per layer or across all kernels.
    """
    sparsity = _v.check_fraction("sparsity", sparsity)
    _v.check_choice("structure", structure, STRUCTURES)
    _v.check_choice("scope", scope, ("layer", "global"))
    if structure == "n_m":
        n_m = _v.check_int_tuple("n_m", n_m, 2)
        if not n_m[0] < n_m[1]:
            _v.fail("n_m", "a pair (n, m) with 0 < n < m", n_m)
    if structure == "block":
        block = _v.check_int_tuple("block", block, 2)
    if isinstance(kernels, (str, bytes)) or not isinstance(
        kernels, (list, tuple)
    ):
        _v.fail("kernels", "a list of arrays", kernels, _v.ArgumentTypeError)
    kernels = [np.asarray(k) for k in kernels]
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
