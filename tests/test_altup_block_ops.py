"""AltUp's predict and correct: the dispatched path (torch's hand-written
gradient) against the `keras.ops` reference, values and gradients of the
blocks and of both coefficients, on the backend in use."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_efficient import _backend
from keras_efficient.layers.altup import block_ops


def _predict_then_correct(predict, correct, active_block):
    """predict -> tanh of the active block (the layer) -> correct."""

    def run(x, p, g):
        predictions = predict(x, p, x.shape[-2])
        outputs = ops.tanh(predictions[..., active_block, :])
        return correct(predictions, outputs, g, active_block)

    return run


def _value_and_grads(fn, *args):
    """`fn(*args)` and the gradients of `sum(fn(*args) * w)` (fixed w)."""
    args = [np.asarray(a, "float32") for a in args]
    w = np.random.default_rng(1).normal(size=args[0].shape).astype("f4")
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        value = fn(*args)
        grads = jax.grad(
            lambda *a: (fn(*a) * w).sum(), argnums=tuple(range(len(args)))
        )(*args)
    elif backend == "tensorflow":
        import tensorflow as tf

        args = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(args)
            value = fn(*args)
            total = tf.reduce_sum(value * w)
        grads = tape.gradient(total, args)
    else:
        import torch

        args = [torch.tensor(a, requires_grad=True) for a in args]
        value = fn(*args)
        (value * torch.tensor(w)).sum().backward()
        grads = [a.grad for a in args]
    return [ops.convert_to_numpy(t) for t in (value, *grads)]


@pytest.mark.parametrize("num_blocks, active_block", [(2, 1), (3, 0)])
@pytest.mark.parametrize("routed", [False, True])
def test_dispatched_predict_correct_match_reference(
    num_blocks, active_block, routed
):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, num_blocks, 8))
    coefficient_shape = (2, 5) if routed else ()
    p = np.eye(num_blocks) + 0.3 * rng.normal(
        size=coefficient_shape + (num_blocks, num_blocks)
    )
    g = 1.0 + 0.3 * rng.normal(size=coefficient_shape + (num_blocks,))
    reference = _value_and_grads(
        _predict_then_correct(
            block_ops.predict_reference,
            block_ops.correct_reference,
            active_block,
        ),
        x,
        p,
        g,
    )
    dispatched = _value_and_grads(
        _predict_then_correct(
            block_ops.predict, block_ops.correct, active_block
        ),
        x,
        p,
        g,
    )
    for ours, theirs in zip(dispatched, reference):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    # Not trivially equal: the coefficients move every block.
    value, grad_x, grad_p, grad_g = reference
    assert np.abs(value - x).max() > 0.1
    assert np.abs(grad_p).min() > 0 and np.abs(grad_g).min() > 0


def test_fast_path_is_torch_only():
    fast = _backend.fast_paths("altup_predict")
    assert set(fast) == set(_backend.fast_paths("altup_correct")) == {"torch"}
    if keras.backend.backend() != "torch":
        reference = block_ops.predict_reference
        assert _backend.dispatch("altup_predict", reference) is reference


def test_predict_reference_without_a_sequence_axis():
    """`(batch, K, d)` blocks (no sequence axis): rows stack on the block
    axis, -2, as in NumPy."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 2, 8)).astype("float32")
    p = rng.normal(size=(2, 2)).astype("float32")
    got = keras.ops.convert_to_numpy(block_ops.predict_reference(x, p, 2))
    np.testing.assert_allclose(got, np.einsum("ij,bjd->bid", p, x), atol=1e-5)
