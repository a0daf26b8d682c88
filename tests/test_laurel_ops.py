"""LAuReL's RW+LR merge: the hand-written gradient against the reference."""

import keras
import numpy as np
import pytest

from keras_efficient import _backend
from keras_efficient.layers import LaurelResidual
from keras_efficient.layers.laurel_ops import rw_lr_fused
from keras_efficient.layers.laurel_ops import rw_lr_reference
from keras_efficient.layers.laurel_ops import rw_lr_softmax_fused
from keras_efficient.layers.laurel_ops import rw_lr_softmax_reference
from keras_efficient.layers.laurel_ops import rw_softmax_fused
from keras_efficient.layers.laurel_ops import rw_softmax_reference
from tests.harness import _gradients
from tests.harness import assert_allclose
from tests.harness import to_numpy

BACKEND = keras.backend.backend()


def _arrays(shape, rank, per_dimension, seed=0):
    rng = np.random.default_rng(seed)
    dim = shape[-1]
    weight_shape = (dim,) if per_dimension else ()
    arrays = [
        rng.normal(size=shape),
        rng.normal(size=shape),
        rng.normal(size=(dim, rank)),
        rng.normal(size=(rank, dim)),
        rng.uniform(0.2, 1.8, size=weight_shape),
        rng.uniform(0.2, 1.8, size=weight_shape),
    ]
    upstream = rng.normal(size=shape).astype("float32")
    return [a.astype("float32") for a in arrays], upstream


def _value_and_grads(merge, arrays, upstream):
    """`merge(*arrays)` and the gradient of `sum(merge(*arrays) *
    upstream)` with respect to each of the six arguments."""
    if BACKEND == "jax":
        import jax

        def loss(*args):
            return (merge(*args) * upstream).sum()

        grads = jax.grad(loss, argnums=tuple(range(len(arrays))))(*arrays)
        return merge(*arrays), grads
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = merge(*tensors)
            loss = tf.reduce_sum(value * upstream)
        return value, tape.gradient(loss, tensors)
    import torch

    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    value = merge(*tensors)
    (value * torch.tensor(upstream)).sum().backward()
    return value, [t.grad for t in tensors]


@pytest.mark.parametrize(
    "shape, per_dimension",
    [
        ((2, 5, 8), False),
        ((2, 5, 8), True),
        ((3, 8), False),
        ((2, 3, 3, 8), True),
    ],
)
def test_fused_matches_reference_values_and_gradients(shape, per_dimension):
    arrays, upstream = _arrays(shape, rank=3, per_dimension=per_dimension)
    ref_value, ref_grads = _value_and_grads(rw_lr_reference, arrays, upstream)
    value, grads = _value_and_grads(rw_lr_fused, arrays, upstream)
    assert_allclose(value, ref_value, atol=1e-5)
    names = ("x", "fx", "kernel_a", "kernel_b", "alpha", "beta")
    for name, grad, ref, array in zip(names, grads, ref_grads, arrays):
        assert grad is not None, name
        assert tuple(grad.shape) == array.shape, name
        # Gradients are O(10) here; a wrong term is off by O(1).
        assert_allclose(grad, ref, atol=1e-4, msg=name)
    # Not vacuous: the gradient of beta includes the low-rank branch.
    assert np.abs(to_numpy(ref_grads[3])).max() > 0.1


SOFTMAX_MERGES = {
    "rw": (rw_softmax_reference, rw_softmax_fused),
    "rw+lr": (rw_lr_softmax_reference, rw_lr_softmax_fused),
}


@pytest.mark.parametrize("variant", ["rw", "rw+lr"])
@pytest.mark.parametrize(
    "shape, per_dimension",
    [((2, 5, 8), False), ((2, 5, 8), True), ((2, 3, 3, 8), True)],
)
def test_softmax_fused_matches_reference(variant, shape, per_dimension):
    """The merges taking the logit `u = theta_0 - theta_1`: same values
    and the same gradients for every input, the logit's included."""
    arrays, upstream = _arrays(shape, rank=3, per_dimension=per_dimension)
    x, fx, kernel_a, kernel_b, alpha, _ = arrays
    logit = (alpha - 1.0).astype("float32")  # trained-looking, not 0
    inputs = [x, fx, kernel_a, kernel_b, logit]
    if variant == "rw":
        inputs = [x, fx, logit]
    reference, fused = SOFTMAX_MERGES[variant]
    ref_value, ref_grads = _value_and_grads(reference, inputs, upstream)
    value, grads = _value_and_grads(fused, inputs, upstream)
    assert_allclose(value, ref_value, atol=1e-5)
    names = ("x", "fx", "kernel_a", "kernel_b")[: len(inputs) - 1]
    for name, grad, ref, array in zip(
        names + ("logit",), grads, ref_grads, inputs
    ):
        assert grad is not None, name
        assert tuple(grad.shape) == array.shape, name
        assert_allclose(grad, ref, atol=1e-4, msg=name)
    # Not vacuous: the logit's gradient is O(1), so a missing term
    # (the low-rank branch, beta / 2) would be seen.
    assert np.abs(to_numpy(ref_grads[-1])).max() > 0.5


@pytest.mark.parametrize(
    "variant, normalization, per_dimension",
    [
        ("rw+lr", "none", False),
        ("rw+lr", "none", True),
        ("rw+lr", "softmax", False),
        ("rw+lr", "softmax", True),
        ("rw", "softmax", False),
        ("rw", "sigmoid", True),
    ],
)
def test_layer_paths_agree(variant, normalization, per_dimension):
    """`LaurelResidual("rw")` / `("rw+lr")` give the same output and
    weight gradients through either merge, with trained-looking weights."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    fx = rng.normal(size=(2, 5, 8)).astype("float32")
    layers = {}
    for implementation in ("reference", "fused"):
        layer = LaurelResidual(
            variant,
            rank=3,
            per_dimension=per_dimension,
            normalization=normalization,
        )
        layer(x, fx)
        layer.implementation = implementation
        for i, weight in enumerate(layer.weights):
            seeded = np.random.default_rng(i)
            weight.assign(seeded.uniform(0.2, 1.5, size=weight.shape))
        layers[implementation] = layer
    outputs = {k: layer(x, fx) for k, layer in layers.items()}
    assert_allclose(outputs["fused"], outputs["reference"], atol=1e-5)
    grads = {
        k: _gradients(lambda layer=layer: layer(x, fx), layer.weights)
        for k, layer in layers.items()
    }
    for weight, a, b in zip(
        layers["fused"].weights, grads["fused"], grads["reference"]
    ):
        assert_allclose(a, b, rtol=1e-5, atol=1e-3, msg=weight.path)


@pytest.mark.parametrize("variant", ["rw", "rw+lr"])
def test_fused_softmax_gradient_holds_in_bfloat16(variant):
    """Under `mixed_bfloat16` the fused merge sums the residual weights'
    gradient in float32: within 3% of the float32 gradient (bfloat16
    matmuls alone move it 1.2% on TensorFlow). (Autodiff of
    the reference sums in bfloat16; on JAX's CPU it was 36% off here.)"""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 16, 32)).astype("float32")
    fx = 0.3 * rng.normal(size=(4, 16, 32)).astype("float32")
    grads = {}
    for dtype in ("float32", "mixed_bfloat16"):
        layer = LaurelResidual(variant, rank=4, dtype=dtype)
        layer(x, fx)
        layer.implementation = "fused"
        for i, weight in enumerate(layer.weights):
            seeded = np.random.default_rng(i)
            weight.assign(seeded.uniform(0.2, 1.5, size=weight.shape))
        grad = _gradients(lambda layer=layer: layer(x, fx), layer.weights)
        grads[dtype] = to_numpy(grad[0]).astype("float32")
    assert np.abs(grads["float32"]).max() > 100.0
    assert_allclose(grads["mixed_bfloat16"], grads["float32"], rtol=3e-2)


def test_auto_takes_the_fused_merge_and_bad_names_raise():
    expected = "fused" if BACKEND == "jax" else "reference"
    paths = ("fused",)
    assert _backend.resolve_implementation("auto", paths) == expected
    assert _backend.resolve_implementation("reference", paths) == "reference"
    assert _backend.resolve_implementation("fused", paths) == "fused"
    with pytest.raises(ValueError, match="implementation='fast'"):
        _backend.resolve_implementation("fast", paths)
    with pytest.raises(ValueError, match="implementation='ragged'"):
        _backend.resolve_implementation("ragged", paths)


def test_softmax_references_keep_the_input_dtype():
    """Under bfloat16 inputs the merge weights are cast to bfloat16, so the
    output stays bfloat16 (no silent promotion to float32)."""
    rng = np.random.default_rng(0)
    x = keras.ops.cast(rng.normal(size=(2, 8)).astype("float32"), "bfloat16")
    fx = keras.ops.cast(rng.normal(size=(2, 8)).astype("float32"), "bfloat16")
    a = keras.ops.cast(rng.normal(size=(8, 2)).astype("float32"), "bfloat16")
    b = keras.ops.cast(rng.normal(size=(2, 8)).astype("float32"), "bfloat16")
    logit = keras.ops.convert_to_tensor(0.3, "float32")
    assert (
        keras.backend.standardize_dtype(
            rw_softmax_reference(x, fx, logit).dtype
        )
        == "bfloat16"
    )
    assert (
        keras.backend.standardize_dtype(
            rw_lr_softmax_reference(x, fx, a, b, logit).dtype
        )
        == "bfloat16"
    )
