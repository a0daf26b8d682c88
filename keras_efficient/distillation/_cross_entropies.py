"""The per-example cross-entropies of SLaM and debiased (private).

Each is written once with `keras.ops` (the reference, run on JAX and
TensorFlow, where XLA fuses it) and once for eager torch, which pays a
fixed host cost per aten call and per autograd node: a
`torch.autograd.Function` computing the value in a few aten calls and the
gradient to the student outputs in a few more, instead of ~15 `keras.ops`
calls forward and as many autograd nodes backward. Both are picked through
`_backend.dispatch` and compared in tests/test_backend_fast_paths.py.

The torch versions differentiate the student outputs only: when anything
else (the teacher's probabilities, alpha(x), r(x), the weights) requires a
gradient they hand over to the reference.
"""

from typing import Any

from keras import ops

from keras_efficient import _backend
from keras_efficient.distillation import _common

# Smallest `1 - alpha` mass kept in log space (alpha = 1 is plain CE), and
# the floor of a student probability before its log (`from_logits=False`).
TINY = 1e-30
# The clip of student probabilities in the soft cross-entropy.
EPSILON = 1e-7


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


def weighted_cross_entropy(
    target: Any, y_pred: Any, weights: Any, from_logits: bool
) -> Any:
    """`weights * cross_entropy(target, y_pred)` per example, float32:
    debiased distillation's loss (`weights` of shape `y_pred.shape[:-1]`;
    probabilities clipped to `[EPSILON, 1]` when not `from_logits`)."""
    fn = _backend.dispatch("weighted_cross_entropy", _weighted_ce_reference)
    return fn(target, y_pred, weights, from_logits)


def _weighted_ce_reference(target, y_pred, weights, from_logits):
    """The `keras.ops` reference of `weighted_cross_entropy`."""
    return weights * _common.soft_ce(target, y_pred, from_logits, EPSILON)


def _needs_reference(*tensors):
    """Whether a gradient is wanted through more than the student outputs
    (the torch functions below give only that one), or the tensors are
    not torch tensors yet."""
    import torch

    return any(
        not isinstance(x, torch.Tensor) or x.requires_grad for x in tensors
    )


def _student_log_probs_torch(x, from_logits, floor):
    """float32 log-probabilities of the student outputs `x` (float32) and
    what their gradient needs: the probabilities (`from_logits`), else the
    mask where the floor / clip passes the gradient (as `torch.maximum`
    and `torch.clip` do, ties aside)."""
    import torch

    if from_logits:
        logp = torch.log_softmax(x, -1)
        return logp, None
    if floor == TINY:
        return x.clamp_min(floor).log(), x > floor
    return x.clamp(floor, 1.0).log(), (x >= floor) & (x <= 1.0)


def _log_probs_backward(grad_logp, x, logp, mask, from_logits):
    """The gradient to the student outputs from the one to their
    log-probabilities (`_student_log_probs_torch`'s)."""
    import torch

    if from_logits:
        # g - softmax * sum(g), in the one aten call autograd uses for
        # `log_softmax` (four calls written out).
        return torch._log_softmax_backward_data(
            grad_logp, logp, -1, torch.float32
        )
    return torch.where(mask, grad_logp / x, 0.0)


def _autograd_functions():
    """The two `torch.autograd.Function`s, defined on first use (torch is
    imported only on the torch backend)."""
    import torch

    class MixtureCE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y_pred, target, alpha, r, topk, from_logits):
            x = y_pred.to(torch.float32)
            logp, mask = _student_log_probs_torch(x, from_logits, TINY)
            shifted = torch.log1p(-r).unsqueeze(-1) + logp
            mixed = torch.logaddexp(
                r.clamp_min(TINY).log().unsqueeze(-1), shifted
            )
            logmix = torch.where(topk, mixed, logp)
            logmix += alpha.log().unsqueeze(-1)
            # log of the top-k classes' share (1 - r) f / (r + (1 - r) f)
            # of the mixture: d log mix / d log f there.
            shifted -= mixed
            ctx.from_logits = from_logits
            ctx.dtype = y_pred.dtype
            ctx.save_for_backward(x, logp, mask, shifted, topk, target)
            return -(target * logmix).sum(-1)

        @staticmethod
        def backward(ctx, grad):
            x, logp, mask, log_share, topk, target = ctx.saved_tensors
            share = torch.where(topk, log_share.exp(), 1.0)
            grad_logp = target * share * grad.neg().unsqueeze(-1)
            grad_x = _log_probs_backward(
                grad_logp, x, logp, mask, ctx.from_logits
            )
            return grad_x.to(ctx.dtype), None, None, None, None, None

    class WeightedCE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y_pred, target, weights, from_logits):
            x = y_pred.to(torch.float32)
            logp, mask = _student_log_probs_torch(x, from_logits, EPSILON)
            ctx.from_logits = from_logits
            ctx.dtype = y_pred.dtype
            ctx.save_for_backward(x, logp, mask, target, weights)
            return -(target * logp).sum(-1) * weights

        @staticmethod
        def backward(ctx, grad):
            x, logp, mask, target, weights = ctx.saved_tensors
            grad_logp = target * (grad * weights).neg_().unsqueeze(-1)
            grad_x = _log_probs_backward(
                grad_logp, x, logp, mask, ctx.from_logits
            )
            return grad_x.to(ctx.dtype), None, None, None

    return MixtureCE, WeightedCE


_FUNCTIONS = []


def _functions():
    if not _FUNCTIONS:
        _FUNCTIONS.extend(_autograd_functions())
    return _FUNCTIONS


@_backend.register_fast_path("mixture_cross_entropy", "torch")
def _mixture_ce_torch(target, y_pred, alpha, r, topk, from_logits):
    """`mixture_cross_entropy` as one autograd node: ~12 aten calls
    forward and ~8 backward (the reference: ~50 and ~25)."""
    y_pred = ops.convert_to_tensor(y_pred)
    if _needs_reference(target, alpha, r, topk):
        return _mixture_ce_reference(
            target, y_pred, alpha, r, topk, from_logits
        )
    return _functions()[0].apply(y_pred, target, alpha, r, topk, from_logits)


@_backend.register_fast_path("weighted_cross_entropy", "torch")
def _weighted_ce_torch(target, y_pred, weights, from_logits):
    """`weighted_cross_entropy` as one autograd node."""
    y_pred = ops.convert_to_tensor(y_pred)
    if _needs_reference(target, weights):
        return _weighted_ce_reference(target, y_pred, weights, from_logits)
    return _functions()[1].apply(y_pred, target, weights, from_logits)
