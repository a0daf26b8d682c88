"""SLaM's teacher side: from teacher probabilities to the k-hot mask,
alpha(x) and r (private).

The reference composes `SLaMLoss`'s `keras.ops` methods (the margin, the
estimator's alpha(x), k(x), the k-hot mask, the floor); JAX and TensorFlow
compile it into a few fused kernels. Eager torch pays a host cost per aten
call (~5 us), so torch has one fast path for the whole teacher side: one
stable descending sort serves the margin, the top-1 probability and the
k-hot mask; k(x) is read off the sorted positions by one comparison with
cached per-position margins; alpha(x) is one `bucketize` and four
gathers into cached segments (`_interpolation.torch_buckets`, shared with
debiased's alpha(x)); the floors are cached per k. It covers the
configurations whose k(x) is fixed or read at coverage points (see
`_torch_plan`) and hands the rest to the reference; tests compare the two
(tests/test_backend_fast_paths.py).
"""

import functools

import numpy as np
from keras import ops

from keras_efficient import _backend
from keras_efficient.distillation import _common
from keras_efficient.distillation import _interpolation

# Up to this many knots alpha(x)'s reference interpolates by comparisons
# (`_interpolation._COMPARE_MAX_KNOTS`); beyond, by `searchsorted`.
_MAX_KNOTS = _interpolation._COMPARE_MAX_KNOTS


def teacher_side(loss, t):
    """`(topk, alpha, r)` of `loss` (a `SLaMLoss`) for teacher
    probabilities `t` (float32): the boolean k(x)-hot mask, alpha(x) after
    its floor and `r = (1 - alpha) / (alpha * norm)`."""
    return _backend.dispatch("slam_teacher_side", _reference)(loss, t)


def _reference(loss, t):
    """The `keras.ops` reference of `teacher_side`."""
    num_classes = t.shape[-1]
    margin = _common.margin(t)  # once, for k(x) and alpha(x)
    estimate, accuracy = loss._estimates(margin, num_classes)
    k = loss.example_k(t, margin, accuracy)
    topk = _common.khot(t, k, loss._kmax(num_classes))
    alpha = loss.alpha(t, k, margin, estimate)
    if loss.normalize:
        r = (1.0 - alpha) / (alpha * (ops.cast(k, "float32") - 1.0))
    else:
        r = (1.0 - alpha) / alpha
    return topk, alpha, r


def _plan_key(loss, num_classes):
    """What the torch path needs of `loss`, hashable (the cache key), or
    None where it hands over to the reference: fewer than two classes,
    k(x) from interpolated top-k maps (a map decreases), alpha(x)'s knots
    beyond `_MAX_KNOTS`."""
    if num_classes is None or num_classes < 2:
        return None
    est = loss.teacher_accuracy
    knots = None
    if est is not None and est.fitted:
        if len(est.knots_x) > _MAX_KNOTS:
            return None
        knots = (tuple(est.knots_x), tuple(est.knots_y))
    kmax = loss._kmax(num_classes)
    if loss._per_example() and kmax > 2:
        bounds = loss._coverage_margins(kmax)
        if bounds is None:
            return None
        k_rule = ("bounds", bounds)
    else:
        # As `example_k`: 2 where per-example maps stop at k = 2.
        k_rule = ("fixed", 2 if loss._per_example() else kmax)
    return (num_classes, knots, k_rule, loss.normalize, loss.min_alpha)


@functools.lru_cache(maxsize=64)
def _torch_plan(key, device):
    """The torch tensors of a plan, made once per plan and device:

    - `open_at`: per sorted position j, the margin below which position j
      is in the k-hot set, so that `margin < open_at` is the mask in
      sorted order and k(x) its row sum: inf for j < k where k is fixed;
      for k(x), inf for j < 2, the coverage margin of k = j + 1 next and
      -inf beyond kmax;
    - `k`: the fixed k, or None;
    - `buckets`: alpha(x)'s knot table for `bucketize`
      (`_interpolation.torch_buckets`); None without a fitted estimator;
    - `floor`: alpha(x)'s floor, a float32 0-d tensor, or (normalize with
      k(x) per example) a tensor indexed by k, computed with the
      reference's float32 operations;
    - `k_minus_1`: float32 k - 1 (normalize), for the fixed k or indexed
      by k; else None;
    - `one`: a float32 1.

    The constants are tensors: torch wraps a Python number in a tensor
    and copies it on every call.
    """
    import torch

    num_classes, knots, (rule, value), normalize, min_alpha = key
    if rule == "bounds":
        positions, k = [np.inf, np.inf, *value], None
    else:
        positions, k = [np.inf] * value, value
    positions += [-np.inf] * (num_classes - len(positions))
    open_at = torch.tensor(positions, dtype=torch.float32, device=device)
    buckets = None
    if knots is not None:
        buckets = _interpolation.torch_buckets(knots[0], knots[1], device)
    gap = 0.05 if min_alpha is None else 1e-3
    one = _backend.torch_constant(1.0, device)
    k_minus_1 = None
    if normalize:
        ks = torch.arange(num_classes + 1, device=device).clamp_min(1)
        floor = torch.minimum(1.0 / ks.to(torch.float32) + gap, one)
        if min_alpha is not None:
            floor = floor.clamp_min(min_alpha)
        k_minus_1 = ks.to(torch.float32) - 1.0
        if k is not None:
            floor, k_minus_1 = floor[k].clone(), k_minus_1[k].clone()
    else:
        floor = min(0.5 + gap, 1.0)
        if min_alpha is not None:
            floor = max(floor, min_alpha)
        floor = _backend.torch_constant(floor, device)
    return open_at, k, buckets, floor, k_minus_1, one


@_backend.register_fast_path("slam_teacher_side", "torch")
def _teacher_side_torch(loss, t):
    """`_reference` in 17 torch calls (38 aten events, nested ones
    included, for the default loss at 256 x 10; the reference: 102,
    through five dispatched helpers and `keras.ops`)."""
    import torch

    key = _plan_key(loss, t.shape[-1]) if t.shape else None
    if key is None or not isinstance(t, torch.Tensor):
        return _reference(loss, t)
    open_at, k, buckets, floor, k_minus_1, one = _torch_plan(key, t.device)
    # Stable: tied classes keep the lowest index first, as the reference.
    values, order = torch.sort(t, dim=-1, descending=True, stable=True)
    margin = values[..., 0] - values[..., 1]
    first_k = margin.unsqueeze(-1) < open_at
    # `order` is a permutation: the scatter writes every entry.
    topk = torch.empty_like(first_k).scatter_(-1, order, first_k)
    if buckets is None:
        alpha = values[..., 0]
    else:
        alpha = _interpolation.interpolate_buckets_torch(buckets, margin)
    if k_minus_1 is None:
        alpha = alpha.clamp(floor, one)
        return topk, alpha, (one - alpha) / alpha
    if k is None:
        ks = topk.sum(-1)
        floor, k_minus_1 = floor.take(ks), k_minus_1.take(ks)
    alpha = torch.minimum(torch.maximum(alpha, floor), one)
    return topk, alpha, (one - alpha) / (alpha * k_minus_1)
