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
  gradient scales the small factors instead (`beta B`, `beta (A x)^T g`);
- the `B` gradient `(A x)^T g` contracts the token axis with `g` on the
  right, which XLA on CPU lays out as a transposed `D x t` copy of `g`; the
  fused gradient puts the skinny factor on the left of both weight
  gradients (`(A x)^T g` and `(g_u^T x)^T`), so only `t x r` tensors are
  laid out again.

`alpha` and `beta` are scalars or vectors of the size `D` of the last axis
(`per_dimension=True`), already in the compute dtype.
"""

from typing import Any

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


@ops.custom_gradient
def rw_lr_fused(
    x: Any, fx: Any, kernel_a: Any, kernel_b: Any, alpha: Any, beta: Any
) -> Any:
    """`rw_lr_reference` with a gradient that stores only `A x`."""
    projected = ops.matmul(x, kernel_a)
    output = alpha * fx + beta * (x + ops.matmul(projected, kernel_b))

    def grad(*args, upstream=None):
        # keras.ops.custom_gradient passes the upstream gradient
        # positionally on JAX / TensorFlow and by keyword on torch.
        g = args[0] if upstream is None else upstream
        scaled_b = beta * kernel_b  # r x D: beta on the small factor
        grad_projected = ops.matmul(g, ops.transpose(scaled_b))
        # Both weight gradients contract the tokens with the skinny operand
        # (A x or its gradient) on the left: XLA lays that one out again,
        # not the t x D one.
        projected_g = _token_gram(projected, g)
        grad_a = ops.transpose(_token_gram(grad_projected, x))
        grad_b = projected_g * beta
        grad_x = beta * g + ops.matmul(grad_projected, ops.transpose(kernel_a))
        grad_fx = alpha * g
        grad_alpha = _sum_to(g * fx, alpha)
        # sum(g * B(A x)) = sum(B * (A x)^T g): an r x D sum, not t x D.
        grad_beta = _sum_to(g * x, beta) + _sum_to(kernel_b * projected_g, beta)
        return grad_x, grad_fx, grad_a, grad_b, grad_alpha, grad_beta

    return output, grad
