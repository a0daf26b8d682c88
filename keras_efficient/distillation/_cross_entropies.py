"""SLaM's per-example cross-entropy against its mixture (private).

It is written once with `keras.ops` (the reference, run on JAX and
TensorFlow, where XLA fuses it) and once in plain torch calls for eager
torch, which pays a host cost per call: every `keras.ops` call converts
and checks its arguments before its aten call (~10 us each here). Both are
picked through `_backend.dispatch` and compared, values and gradients, in
tests/test_backend_fast_paths.py. Debiased's weighted cross-entropy is
`_common.soft_ce`, whose torch path only skips the reference's two
conversions of tensors it already has (its whole weighted cross-entropy
written in torch measured no faster than the reference in a train step:
1.013x, within the noise; `benchmarks/loss_ops.py`).

Torch differentiates the fast paths itself: a `torch.autograd.Function`
with the gradient written out (fewer aten calls backward) measured slower
here, its backward running in Python where autograd's nodes run in C++
(SLaM's loss and gradient: 298 us against 287 us; debiased's: 168 us
against 135 us, 256 x 10, min of 15 x 100 calls).
"""

from typing import Any

from keras import ops

from keras_efficient import _backend
from keras_efficient.distillation import _common

# Smallest `1 - alpha` mass kept in log space (alpha = 1 is plain CE), and
# the floor of a student probability before its log (`from_logits=False`).
TINY = 1e-30


def mixture_cross_entropy(
    target: Any, y_pred: Any, alpha: Any, r: Any, topk: Any, from_logits: bool
) -> Any:
    """SLaM's `-sum(target * log mix(f))` per example, float32.

    With f the student's probabilities (`y_pred`, logits if `from_logits`)
    and per example `alpha` (the floored teacher accuracy) and `r = (1 -
    alpha) / (alpha * norm)`, both of shape `y_pred.shape[:-1]`,
    `log mix(f) = log alpha + log(r + (1 - r) f)` on the classes where the
    boolean `topk` holds and `log alpha + log f` elsewhere, computed in
    log space (`logaddexp`), so no class loses its gradient.
    """
    fn = _backend.dispatch("mixture_cross_entropy", _mixture_ce_reference)
    return fn(target, y_pred, alpha, r, topk, from_logits)


def _mixture_ce_reference(target, y_pred, alpha, r, topk, from_logits):
    """The `keras.ops` reference of `mixture_cross_entropy`."""
    alpha = ops.expand_dims(alpha, -1)
    r = ops.expand_dims(r, -1)
    logf = _common.student_log_probs(y_pred, from_logits, TINY)
    mixed = ops.logaddexp(ops.log(ops.maximum(r, TINY)), ops.log1p(-r) + logf)
    logmix = ops.log(alpha) + ops.where(topk, mixed, logf)
    return -ops.sum(target * logmix, axis=-1)


def _torch_inputs(*tensors):
    """Whether every input is a torch tensor already (the losses pass
    tensors; anything else goes to the reference, which converts it)."""
    import torch

    return all(isinstance(x, torch.Tensor) for x in tensors)


@_backend.register_fast_path("mixture_cross_entropy", "torch")
def _mixture_ce_torch(target, y_pred, alpha, r, topk, from_logits):
    """`mixture_cross_entropy` in ~14 aten calls forward and as many
    native autograd nodes backward (the reference: ~50 calls through
    `keras.ops`, each converting its arguments). `clamp_min` floors the
    probabilities: its gradient differs from `maximum`'s only at a
    probability of exactly `TINY`."""
    import torch

    if not _torch_inputs(target, y_pred, alpha, r, topk):
        return _mixture_ce_reference(
            target, y_pred, alpha, r, topk, from_logits
        )
    # Only what does work dispatches: a float32 `y_pred` is not cast, `r`
    # gets its class axis once.
    x = y_pred if y_pred.dtype == torch.float32 else y_pred.to(torch.float32)
    logf = torch.log_softmax(x, -1) if from_logits else x.clamp_min(TINY).log()
    r = r.unsqueeze(-1)
    mixed = torch.logaddexp(r.clamp_min(TINY).log(), torch.log1p(-r) + logf)
    logmix = alpha.log().unsqueeze(-1) + torch.where(topk, mixed, logf)
    return -(target * logmix).sum(-1)
