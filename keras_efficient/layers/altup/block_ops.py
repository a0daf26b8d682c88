"""AltUp's predict and correct steps: the `keras.ops` reference and a torch
fast path with a hand-written gradient (private).

`AltUp.predict` and `AltUp.correct` pick their function through
`_backend.dispatch`. On JAX and TensorFlow (`jit_compile=True`) XLA fuses
the reference into a few elementwise kernels. Eager torch runs every op on
its own: the reference's autograd graph reads and writes about 100 block-
sized tensors (N tokens x d) a layer a train step, mostly broadcast
products, `select_backward` zero-fills and their sums
(benchmarks/altup_profile.py). The torch path writes each block once into
a preallocated output and reduces the coefficient gradients with `bmm`.
It is taken for static coefficients (`p` of shape `(K, K)`, `g` of shape
`(K,)`); per-token (routed) coefficients keep the reference.
"""

import functools
from typing import Any

from keras import ops

from keras_efficient import _backend


def predict_reference(inputs: Any, p: Any, num_blocks: int) -> Any:
    """`xhat_i = sum_j p[..., i, j] x_j` over the block axis (-2)."""
    # Unrolled over the K blocks (K is small and static): one fused
    # elementwise loop that reads each block once. A broadcast
    # `(..., K, K, d)` product and a sum over K made XLA CPU write the
    # product out and reduce it in a separate kernel, forward and
    # backward: 1.62x a plain LM step at d=128 instead of 1.09x.
    blocks = [inputs[..., j, :] for j in range(num_blocks)]
    rows = []
    for i in range(num_blocks):
        row = ops.expand_dims(p[..., i, 0], -1) * blocks[0]
        for j in range(1, num_blocks):
            row = row + ops.expand_dims(p[..., i, j], -1) * blocks[j]
        rows.append(row)
    return ops.stack(rows, axis=-2)


def correct_reference(
    predictions: Any, outputs: Any, g: Any, active_block: int
) -> Any:
    """`xhat_i + g[..., i] * (y - xhat_a)` for every block i."""
    active = predictions[..., active_block, :]
    innovation = ops.expand_dims(outputs - active, axis=-2)
    return predictions + ops.expand_dims(g, -1) * innovation


def predict(inputs: Any, p: Any, num_blocks: int) -> Any:
    """The prediction step on the backend in use (see the module doc)."""
    function = _backend.dispatch("altup_predict", predict_reference)
    return function(inputs, p, num_blocks)


def correct(predictions: Any, outputs: Any, g: Any, active_block: int) -> Any:
    """The correction step on the backend in use (see the module doc)."""
    function = _backend.dispatch("altup_correct", correct_reference)
    return function(predictions, outputs, g, active_block)


def _mix_into(out, blocks, p):
    """`out[..., i, :] = sum_j p[i, j] blocks[j]`, written in place."""
    import torch

    for i in range(len(blocks)):
        row = out[..., i, :]
        torch.mul(blocks[0], p[i, 0], out=row)
        for j in range(1, len(blocks)):
            row.addcmul_(blocks[j], p[i, j])
    return out


def _pair_sums(a, b):
    """`sum over tokens and d of a[..., i, :] * b[..., j, :]`: `(K, K)`."""
    k, d = a.shape[-2], a.shape[-1]
    a = a.reshape(-1, k, d)
    b = b.reshape(-1, b.shape[-2], d)
    return (a @ b.transpose(1, 2)).sum(0)


@functools.cache
def _torch_functions():
    import torch

    class Predict(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inputs, p):
            ctx.save_for_backward(inputs, p)
            blocks = inputs.unbind(-2)
            return _mix_into(torch.empty_like(inputs), blocks, p)

        @staticmethod
        def backward(ctx, grad):
            inputs, p = ctx.saved_tensors
            grad = grad.contiguous()
            grad_inputs = _mix_into(
                torch.empty_like(inputs), grad.unbind(-2), p.t()
            )
            return grad_inputs, _pair_sums(grad, inputs).to(p.dtype)

    class Correct(torch.autograd.Function):
        @staticmethod
        def forward(ctx, predictions, outputs, g, active_block):
            innovation = outputs - predictions[..., active_block, :]
            ctx.save_for_backward(innovation, g)
            ctx.active_block = active_block
            out = torch.empty_like(predictions)
            for i in range(predictions.shape[-2]):
                torch.addcmul(
                    predictions[..., i, :], innovation, g[i], out=out[..., i, :]
                )
            return out

        @staticmethod
        def backward(ctx, grad):
            innovation, g = ctx.saved_tensors
            grad = grad.contiguous()
            # d outputs = sum_i g_i grad_i; the active prediction loses it.
            grad_outputs = grad[..., 0, :] * g[0]
            for i in range(1, grad.shape[-2]):
                grad_outputs.addcmul_(grad[..., i, :], g[i])
            grad_predictions = grad.clone()
            grad_predictions[..., ctx.active_block, :].sub_(grad_outputs)
            grad_g = _pair_sums(grad, innovation.unsqueeze(-2))[:, 0]
            return grad_predictions, grad_outputs, grad_g.to(g.dtype), None

    return Predict, Correct


@_backend.register_fast_path("altup_predict", "torch")
def _predict_torch(inputs, p, num_blocks):
    inputs, p = ops.convert_to_tensor(inputs), ops.convert_to_tensor(p)
    if p.ndim != 2:  # per-token coefficients: the reference
        return predict_reference(inputs, p, num_blocks)
    return _torch_functions()[0].apply(inputs, p.to(inputs.dtype))


@_backend.register_fast_path("altup_correct", "torch")
def _correct_torch(predictions, outputs, g, active_block):
    predictions = ops.convert_to_tensor(predictions)
    outputs, g = ops.convert_to_tensor(outputs), ops.convert_to_tensor(g)
    if g.ndim != 1:
        return correct_reference(predictions, outputs, g, active_block)
    g = g.to(predictions.dtype)
    return _torch_functions()[1].apply(
        predictions, outputs.to(predictions.dtype), g, active_block
    )
