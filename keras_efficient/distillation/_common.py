"""Helpers shared by the distillation modules (private).

Each rule is written once: probabilities from outputs (`keras.ops` for the
losses, NumPy for the callbacks and the estimator), the top-1 minus top-2
margin, and the soft cross-entropy.
"""

import functools
from typing import Any

import numpy as np
from keras import ops

from keras_efficient import _backend


def teacher_probs(y_true: Any, teacher_from_logits: bool) -> Any:
    """Teacher probabilities (float32) from `y_true`, `keras.ops`."""
    return student_probs(y_true, teacher_from_logits)


def student_probs(y_pred: Any, from_logits: bool) -> Any:
    """Probabilities (float32) from outputs, `keras.ops`."""
    y_pred = ops.cast(y_pred, "float32")
    if from_logits:
        return ops.softmax(y_pred, axis=-1)
    return y_pred


def soft_ce(
    target: Any, y_pred: Any, from_logits: bool, eps: float = 1e-7
) -> Any:
    """Cross-entropy of probabilities `target` vs student output, float32."""
    fn = _backend.dispatch("soft_ce", _soft_ce_reference)
    return fn(target, y_pred, from_logits, eps)


def _soft_ce_reference(target, y_pred, from_logits, eps):
    """The `keras.ops` reference of `soft_ce`."""
    y_pred = ops.cast(y_pred, "float32")
    if from_logits:
        logp = ops.log_softmax(y_pred, axis=-1)
    else:
        logp = ops.log(ops.clip(y_pred, eps, 1.0))
    return -ops.sum(target * logp, axis=-1)


@_backend.register_fast_path("soft_ce", "torch")
def _soft_ce_torch(target, y_pred, from_logits, eps):
    """`soft_ce` of student logits without the reference's two conversions
    of tensors it already has (`ops.log_softmax` and `ops.sum` each call
    `.to(device)`): the same three aten operations."""
    import torch

    tensors = isinstance(target, torch.Tensor) and isinstance(
        y_pred, torch.Tensor
    )
    if not (from_logits and tensors and y_pred.dtype == torch.float32):
        return _soft_ce_reference(target, y_pred, from_logits, eps)
    return -(target * torch.log_softmax(y_pred, -1)).sum(-1)


def margin(probs: Any) -> Any:
    """Top-1 minus top-2 probability over the last axis, `keras.ops`.

    Two reductions, not `top_k`: XLA CPU lowers `top_k` to a sort with a
    comparator call per element (180 us a step for 256 x 10 probabilities).
    """
    num_classes = probs.shape[-1]
    if num_classes == 1:
        return ops.ones_like(probs[..., 0])
    return _backend.dispatch("margin", _margin_reductions)(probs)


def _margin_reductions(probs):
    """The `keras.ops` reference of `margin` (two classes or more)."""
    num_classes = probs.shape[-1]
    first = ops.max(probs, axis=-1)
    is_first = ops.one_hot(ops.argmax(probs, axis=-1), num_classes) > 0
    second = ops.max(ops.where(is_first, -np.inf, probs), axis=-1)
    return first - second


@_backend.register_fast_path("margin", "torch")
def _margin_topk_torch(probs):
    """`margin` from one `torch.topk`: 2 aten calls instead of ~70 (eager
    torch pays per op; XLA's objection to top_k does not apply)."""
    import torch

    top2 = torch.topk(ops.convert_to_tensor(probs), 2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def np_probs(outputs: np.ndarray, from_logits: bool) -> np.ndarray:
    """Probabilities (float64) from outputs, NumPy, last axis."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if not from_logits:
        return outputs
    outputs = outputs - outputs.max(axis=-1, keepdims=True)
    outputs = np.exp(outputs)
    return outputs / outputs.sum(axis=-1, keepdims=True)


def np_margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row, NumPy (1 with one class)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[-1] < 2:
        return np.ones(probs.shape[:-1])
    top2 = np.partition(probs, -2, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


def student_log_probs(
    y_pred: Any, from_logits: bool, tiny: float = 1e-30
) -> Any:
    """Log-probabilities (float32) from outputs, `keras.ops`."""
    y_pred = ops.cast(y_pred, "float32")
    if from_logits:
        return ops.log_softmax(y_pred, axis=-1)
    return ops.log(ops.maximum(y_pred, tiny))


# Up to this many classes the k-hot mask comes from pairwise comparisons
# (a fused C x C compare-and-count per row), not from a `top_k` sort.
_PAIRWISE_MAX_CLASSES = 64


def _khot_pairwise(t, k):
    """The `keras.ops` reference of `khot` for a few classes: ranks from
    pairwise comparisons, rank_i = #{j: t_j > t_i} + #{j < i: t_j == t_i};
    keep rank < k."""
    num_classes = t.shape[-1]
    k = ops.expand_dims(ops.cast(k, "int32"), -1)
    ti, tj = ops.expand_dims(t, -1), ops.expand_dims(t, -2)
    earlier = np.tril(np.ones((num_classes, num_classes), bool), -1)
    ahead = ops.logical_or(
        ops.greater(tj, ti), ops.logical_and(ops.equal(tj, ti), earlier)
    )
    rank = ops.sum(ops.cast(ahead, "int32"), axis=-1)
    return ops.less(rank, k)


@functools.lru_cache(maxsize=16)
def _torch_class_ranks(num_classes, device):
    import torch

    return torch.arange(num_classes, device=device)


@_backend.register_fast_path("khot_pairwise", "torch")
def _khot_pairwise_torch(t, k):
    """`_khot_pairwise` in 5 aten calls (the reference: ~47; pairwise
    comparisons in torch: ~10 over C x C per row): the classes sorted by
    a stable descending sort, so ties keep the lowest index first, and the
    first k of that order marked."""
    import torch

    t = ops.convert_to_tensor(t)
    k = ops.convert_to_tensor(k)
    order = torch.argsort(t, dim=-1, descending=True, stable=True)
    first_k = _torch_class_ranks(t.shape[-1], t.device) < k.unsqueeze(-1)
    return torch.zeros_like(t, dtype=torch.bool).scatter_(-1, order, first_k)


def khot(t: Any, k: Any, kmax: int) -> Any:
    """Boolean k-hot of the `k` (per row) largest entries of `t`.

    Exactly k per row: ties at the k-th value go to the lowest class
    indices. `kmax` (a Python int) bounds `k`.
    """
    num_classes = t.shape[-1]
    if num_classes <= _PAIRWISE_MAX_CLASSES:
        return _backend.dispatch("khot_pairwise", _khot_pairwise)(t, k)
    k = ops.expand_dims(ops.cast(k, "int32"), -1)
    kmax = max(1, min(int(kmax), num_classes))
    vals = ops.top_k(t, k=kmax)[0]
    kth = ops.take_along_axis(vals, ops.clip(k - 1, 0, kmax - 1), axis=-1)
    greater = ops.greater(t, kth)
    equal = ops.cast(ops.equal(t, kth), "int32")
    room = k - ops.sum(ops.cast(greater, "int32"), axis=-1, keepdims=True)
    return ops.logical_or(
        greater,
        ops.logical_and(equal > 0, ops.cumsum(equal, axis=-1) <= room),
    )
