"""The RW+LR merge of LAuReL, `alpha f + beta (x + B(A x))`, two ways.

`rw_lr_reference` is the plain `keras.ops` expression; autodiff takes its
gradient. `rw_lr_fused` computes the same values with a hand-written
gradient (`keras.ops.custom_gradient`) that XLA compiles to less memory
traffic. What autodiff of the reference costs, in the compiled JAX train
step of a 2-layer `TransformerLM` at d = 512, r = 64 (see
`docs/methods/laurel.md`):

- it stores `h = x + B(A x)` for the gradient of `beta`
  (`sum(g * h)`); the fused gradient uses
  `sum(g * x) + sum(B * (A x)^T g)` instead, an `r x D` sum;
- it scales the upstream gradient `g` by `beta` into new `t x D` tensors
  (one per use, and a transposed copy for the `B` gradient); the fused
  gradient scales the `r x D` weight gradients instead, and `x`'s
  gradient `beta (g + (g B^T) A^T)` in the add that forms it (a scalar
  `beta`; one per dimension scales `B`);
- the `B` gradient `(A x)^T g` contracts the token axis with `g` on the
  right, which XLA on CPU lays out as a transposed `D x t` copy of `g`; the
  fused gradient puts the skinny factor on the left of both weight
  gradients (`(A x)^T g` and `(g_u^T x)^T`), so only `t x r` tensors are
  laid out again.

`alpha` and `beta` are scalars or vectors of the size `D` of the last axis
(`per_dimension=True`), already in the compute dtype.

With the default `normalization="softmax"`, `alpha, beta = 2 softmax(theta)
= (2 sigmoid(u), 2 - 2 sigmoid(u))` for the logit `u = theta_0 - theta_1`,
and `rw_softmax_*` / `rw_lr_softmax_*` take `u` (float32) instead of
`alpha, beta`. Their one weight gradient is that of `u`:
`d out / d u = alpha beta / 2 (f - h) = beta / 2 (out - 2 h)` (as
`alpha + beta = 2`, `out - 2 h = alpha (f - h)`), so the fused gradient
reads `out`, which the next block keeps anyway, and `x`: one reduction
`sum(g * (out - 2 x))` instead of autodiff's two (`sum(g * f)`,
`sum(g * h)`), and `f` is no longer stored for the backward pass (it
stays fused into the merge of the forward pass).
"""

from typing import Any

import keras
from keras import ops


def rw_lr_reference(
    x: Any, fx: Any, kernel_a: Any, kernel_b: Any, alpha: Any, beta: Any
) -> Any:
    """`alpha * fx + beta * (x + (x @ kernel_a) @ kernel_b)`, `keras.ops`."""
    low_rank = ops.matmul(ops.matmul(x, kernel_a), kernel_b)
    return alpha * fx + beta * (x + low_rank)


def _token_gram(a, b):
    """`a^T b` over all leading (token) axes: `(a.shape[-1], b.shape[-1])`."""
    a = ops.reshape(a, (-1, a.shape[-1]))
    b = ops.reshape(b, (-1, b.shape[-1]))
    return ops.matmul(ops.transpose(a), b)


def _sum_to(value, like):
    """`value` summed over the axes that `like` (a scalar or a `(D,)`
    vector) broadcasts along."""
    if len(like.shape) == 0:
        return ops.sum(value)
    return ops.sum(value, axis=tuple(range(len(value.shape) - 1)))


def _lr_grads(g, x, projected, kernel_a, kernel_b, alpha, beta):
    """The gradients of `alpha f + beta (x + B(A x))` for `x`, `f`, `A`,
    `B`, and `(A x)^T g` (`r x D`), from `projected = A x`."""
    # Both weight gradients contract the tokens with the skinny operand
    # (A x or its gradient) on the left: XLA lays that one out again,
    # not the t x D one.
    projected_g = _token_gram(projected, g)
    grad_b = projected_g * beta
    if len(beta.shape) == 0:
        # A scalar beta goes on the outputs: `A`'s gradient (r x D) and
        # `x`'s, where it joins the add that scales `g` anyway, so XLA
        # folds it into kernels it runs already (no `beta B` kernel).
        grad_projected = ops.matmul(g, ops.transpose(kernel_b))
        grad_a = ops.transpose(_token_gram(grad_projected, x)) * beta
        low_rank = ops.matmul(grad_projected, ops.transpose(kernel_a))
        return beta * (g + low_rank), alpha * g, grad_a, grad_b, projected_g
    # beta per dimension scales the columns of B: r x D, not t x D.
    grad_projected = ops.matmul(g, ops.transpose(beta * kernel_b))
    grad_a = ops.transpose(_token_gram(grad_projected, x))
    grad_x = beta * g + ops.matmul(grad_projected, ops.transpose(kernel_a))
    return grad_x, alpha * g, grad_a, grad_b, projected_g


def _upstream(args, upstream):
    # keras.ops.custom_gradient passes the upstream gradient positionally
    # on JAX / TensorFlow and by keyword on torch.
    return args[0] if upstream is None else upstream


@ops.custom_gradient
def rw_lr_fused(
    x: Any, fx: Any, kernel_a: Any, kernel_b: Any, alpha: Any, beta: Any
) -> Any:
    """`rw_lr_reference` with a gradient that stores only `A x`."""
    projected = ops.matmul(x, kernel_a)
    output = alpha * fx + beta * (x + ops.matmul(projected, kernel_b))

    def grad(*args, upstream=None):
        g = _upstream(args, upstream)
        grad_x, grad_fx, grad_a, grad_b, projected_g = _lr_grads(
            g, x, projected, kernel_a, kernel_b, alpha, beta
        )
        grad_alpha = _sum_to(g * fx, alpha)
        # sum(g * B(A x)) = sum(B * (A x)^T g): an r x D sum, not t x D.
        grad_beta = _sum_to(g * x, beta) + _sum_to(kernel_b * projected_g, beta)
        return grad_x, grad_fx, grad_a, grad_b, grad_alpha, grad_beta

    return output, grad


def softmax_weights(logit: Any, dtype: str) -> tuple:
    """`alpha, beta = 2 softmax([t0, t1])` in `dtype` from the float32 logit
    `u = t0 - t1`, and `beta / 2` in float32.

    `2 softmax([t0, t1]) = (2 sigmoid(u), 2 - that)`: one scalar op instead
    of a softmax over a 2-vector and two slices. Both are computed in
    float32 and cast once, so they stay exact in bfloat16.
    """
    alpha = 2.0 * ops.sigmoid(logit)
    beta = 2.0 - alpha
    return ops.cast(alpha, dtype), ops.cast(beta, dtype), 0.5 * beta


def _logit_grad(g, output, x, logit, half_beta):
    """`sum(g * d out / d u)` with `d out / d u = beta / 2 (out - 2 x)`,
    summed in float32 to the logit's shape."""
    # `out - x - x`, not `out - 2 x`: XLA's CPU reduction kernels take a
    # scalar constant as a materialized `t x D` broadcast.
    product = ops.cast(g * ((output - x) - x), "float32")
    return half_beta * _sum_to(product, logit)


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


def rw_softmax_reference(x: Any, fx: Any, logit: Any) -> Any:
    """`alpha * fx + beta * x` with `alpha, beta` from the logit `u`."""
    alpha, beta, _ = softmax_weights(logit, _dtype(x))
    return alpha * fx + beta * x


@ops.custom_gradient
def rw_softmax_fused(x: Any, fx: Any, logit: Any) -> Any:
    """`rw_softmax_reference` with one reduction for the logit's gradient
    and no stored `fx`."""
    alpha, beta, half_beta = softmax_weights(logit, _dtype(x))
    output = alpha * fx + beta * x

    def grad(*args, upstream=None):
        g = _upstream(args, upstream)
        grad_logit = _logit_grad(g, output, x, logit, half_beta)
        return beta * g, alpha * g, grad_logit

    return output, grad


def rw_lr_softmax_reference(
    x: Any, fx: Any, kernel_a: Any, kernel_b: Any, logit: Any
) -> Any:
    """`rw_lr_reference` with `alpha, beta` from the logit `u`."""
    alpha, beta, _ = softmax_weights(logit, _dtype(x))
    return rw_lr_reference(x, fx, kernel_a, kernel_b, alpha, beta)


@ops.custom_gradient
def rw_lr_softmax_fused(
    x: Any, fx: Any, kernel_a: Any, kernel_b: Any, logit: Any
) -> Any:
    """`rw_lr_softmax_reference` with a gradient that stores only `A x`
    and takes the logit's gradient in one `t x D` reduction."""
    alpha, beta, half_beta = softmax_weights(logit, _dtype(x))
    projected = ops.matmul(x, kernel_a)
    output = alpha * fx + beta * (x + ops.matmul(projected, kernel_b))

    def grad(*args, upstream=None):
        g = _upstream(args, upstream)
        grad_x, grad_fx, grad_a, grad_b, projected_g = _lr_grads(
            g, x, projected, kernel_a, kernel_b, alpha, beta
        )
        # out - 2 h = out - 2 x - 2 B(A x), and
        # sum(g * B(A x)) = sum(B * (A x)^T g): an r x D sum.
        low_rank = _sum_to(ops.cast(kernel_b * projected_g, "float32"), logit)
        grad_logit = _logit_grad(g, output, x, logit, half_beta)
        grad_logit = grad_logit - 2.0 * half_beta * low_rank
        return grad_x, grad_fx, grad_a, grad_b, grad_logit

    return output, grad
