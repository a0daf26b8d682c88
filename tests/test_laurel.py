import keras
import numpy as np
import pytest
from keras import ops

from keras_efficient.layers import LaurelBlock
from keras_efficient.layers import LaurelResidual
from keras_efficient.layers import LaurelStack
from tests.harness import assert_allclose
from tests.harness import assert_gradients_reach
from tests.harness import run_layer_test
from tests.harness import to_numpy

VARIANTS = ["rw", "lr", "pa", "rw+lr", "rw+pa", "rw+lr+pa"]
NORMALIZATIONS = ["softmax", "sigmoid", "none"]
D = 8
RANK = 3
K = 3


def data(shape=(2, 5, D), seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype("float32")


def history(variant, shape=(2, 5, D), count=K - 1):
    if "pa" not in variant:
        return None
    return [data(shape, seed=10 + j) for j in range(count)]


def randomize(layer, seed=1, scale=0.5):
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(size=weight.shape) * scale)


def np_reference(layer, x, fx, previous=None):
    """The table's formula for `layer.variant`, in float64 NumPy."""
    parts = layer.variant.split("+")
    x = x.astype("float64")
    fx = fx.astype("float64")
    h = x.copy()
    if parts == ["lr"] or parts == ["rw", "lr"]:
        a = to_numpy(layer.lr_kernel_a).astype("float64")
        b = to_numpy(layer.lr_kernel_b).astype("float64")
        h = h + (x @ a) @ b
    if "pa" in parts:
        low_rank = "lr" in parts or layer.low_rank_history
        gamma = to_numpy(layer.pa_gamma).astype("float64")
        lags = [x] + [p.astype("float64") for p in (previous or [])]
        for j, x_j in enumerate(lags):
            if low_rank:
                a = to_numpy(layer.pa_kernels_a[j]).astype("float64")
                b = to_numpy(layer.pa_kernels_b[j]).astype("float64")
                x_j = (x_j @ a) @ b
            h = h + gamma[j] * x_j
    if "rw" not in parts:
        return fx + h
    theta = to_numpy(layer.residual_weights).astype("float64")
    if layer.normalization == "softmax":
        e = np.exp(theta - theta.max(axis=0))
        w = 2.0 * e / e.sum(axis=0)
    elif layer.normalization == "sigmoid":
        w = 2.0 / (1.0 + np.exp(-theta))
    else:
        w = theta
    return w[0] * fx + w[1] * h


# Identity at init -----------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_identity_at_init(variant):
    x, fx = data(seed=0), data(seed=1)
    options = [
        (normalization, per_dimension, low_rank_history)
        for normalization in NORMALIZATIONS
        for per_dimension in (False, True)
        for low_rank_history in (False, True)
    ]
    for normalization, per_dimension, low_rank_history in options:
        layer = LaurelResidual(
            variant,
            rank=RANK,
            num_activations=K,
            normalization=normalization,
            per_dimension=per_dimension,
            low_rank_history=low_rank_history,
        )
        y = layer(x, fx, previous=history(variant))
        assert_allclose(y, x + fx, atol=1e-6, rtol=0)


def test_identity_at_init_default_options_and_block():
    x = data((2, 4, 4, D))
    for variant in VARIANTS:
        dense = keras.layers.Dense(D)
        block = LaurelBlock(dense, variant=variant, rank=RANK)
        y = block(x, previous=history(variant, x.shape))
        assert_allclose(y, x + to_numpy(dense(x)), atol=1e-6, rtol=0)


def test_identity_at_init_mixed_bfloat16():
    keras.config.set_dtype_policy("mixed_bfloat16")
    x, fx = data(seed=0), data(seed=1)
    for variant in VARIANTS:
        layer = LaurelResidual(variant, rank=RANK)
        y = layer(x, fx, previous=history(variant))
        assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
        expected = ops.add(ops.cast(x, "bfloat16"), ops.cast(fx, "bfloat16"))
        np.testing.assert_array_equal(
            to_numpy(ops.cast(y, "float32")),
            to_numpy(ops.cast(expected, "float32")),
        )


# Numerics against NumPy ------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_numpy_reference(variant):
    x, fx = data(seed=0), data(seed=1)
    previous = history(variant)
    options = [(n, p) for n in NORMALIZATIONS for p in (False, True)]
    for normalization, per_dimension in options:
        layer = LaurelResidual(
            variant,
            rank=RANK,
            num_activations=K,
            normalization=normalization,
            per_dimension=per_dimension,
        )
        layer(x, fx, previous=previous)
        randomize(layer)
        y = layer(x, fx, previous=previous)
        expected = np_reference(layer, x, fx, previous)
        assert np.abs(expected - (x + fx)).max() > 1e-2  # not the identity
        assert_allclose(y, expected, atol=1e-4, rtol=1e-4)


def test_low_rank_history_matches_numpy_reference():
    x, fx = data((2, 3, 3, D), seed=0), data((2, 3, 3, D), seed=1)
    for variant in ["pa", "rw+pa"]:
        previous = history(variant, x.shape)
        layer = LaurelResidual(variant, rank=RANK, low_rank_history=True)
        layer(x, fx, previous=previous)
        randomize(layer)
        y = layer(x, fx, previous=previous)
        assert_allclose(y, np_reference(layer, x, fx, previous), atol=1e-4)


def test_shorter_history_contributes_nothing():
    for variant in ["pa", "rw+lr+pa"]:
        _check_shorter_history(variant)


def _check_shorter_history(variant):
    x, fx = data(seed=0), data(seed=1)
    layer = LaurelResidual(variant, rank=RANK, num_activations=K)
    layer(x, fx)
    randomize(layer)
    previous = history(variant, count=1)
    y = layer(x, fx, previous=previous)
    assert_allclose(y, np_reference(layer, x, fx, previous), atol=1e-4)
    # The same as passing a zero tensor for the missing lag.
    padded = previous + [np.zeros_like(x)]
    assert_allclose(y, layer(x, fx, previous=padded), atol=1e-5)
    # No history at all: only the current input enters the PA sum.
    assert_allclose(layer(x, fx), np_reference(layer, x, fx, None), atol=1e-4)


def test_bfloat16_close_to_float32_reference():
    keras.config.set_dtype_policy("mixed_bfloat16")
    x, fx = data(seed=0), data(seed=1)
    layer = LaurelResidual("rw+lr+pa", rank=RANK, normalization="softmax")
    previous = history("rw+lr+pa")
    layer(x, fx, previous=previous)
    randomize(layer)
    layer.residual_weights.assign(np.array([30.0, -30.0]))
    y = to_numpy(ops.cast(layer(x, fx, previous=previous), "float32"))
    expected = np_reference(layer, x, fx, previous)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, expected, atol=0.1, rtol=0.05)


def test_stack_matches_numpy_reference():
    x = data((2, D))
    blocks = [keras.layers.Dense(D, activation="tanh") for _ in range(4)]
    stack = LaurelStack(
        blocks, variant="rw+lr+pa", rank=RANK, num_activations=K
    )
    stack(x)
    randomize(stack, scale=0.3)
    y = stack(x)

    h, past = x.astype("float64"), []
    for laurel_block in stack.laurel_blocks:
        dense = laurel_block.block
        kernel = to_numpy(dense.kernel).astype("float64")
        bias = to_numpy(dense.bias).astype("float64")
        fx = np.tanh(h @ kernel + bias)
        out = np_reference(laurel_block.residual, h, fx, past)
        past = ([h] + past)[: K - 1]
        h = out
    assert_allclose(y, h, atol=1e-4, rtol=1e-4)


def test_stack_threads_history_to_every_weight():
    x = data((2, D))
    blocks = [keras.layers.Dense(D, activation="tanh") for _ in range(4)]
    stack = LaurelStack(
        blocks, variant="rw+lr+pa", rank=RANK, num_activations=K
    )
    stack(x)
    # Block i is built for min(K, i + 1) activations: no unused weights.
    ks = [b.residual.num_activations for b in stack.laurel_blocks]
    assert ks == [1, 2, 3, 3]
    lrpa = sum(2 * RANK * k * D + k + 2 for k in ks)
    assert stack.count_params() == lrpa + 4 * (D * D + D)
    randomize(stack, scale=0.3)
    assert_gradients_reach(stack, x)


def test_stack_without_history_variant():
    x = data((2, D))
    blocks = [keras.layers.Dense(D) for _ in range(3)]
    stack = LaurelStack(blocks, variant="rw+lr", rank=RANK)
    y = stack(x)
    h = x
    for block in blocks:
        h = h + to_numpy(block(h))
    assert_allclose(y, h, atol=1e-5)
    assert all(b.residual.num_activations == K for b in stack.laurel_blocks)


def test_block_equals_residual_of_block_output():
    x = data((2, 6, D))
    block = LaurelBlock(keras.layers.Dense(D), variant="rw+pa")
    previous = history("rw+pa", x.shape)
    block(x, previous=previous)
    randomize(block)
    fx = to_numpy(block.block(x))
    expected = np_reference(block.residual, x, fx, previous)
    assert_allclose(block(x, previous=previous), expected, atol=1e-4)


# Gradients -------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_weight(variant):
    x, fx = data(seed=0), data(seed=1)
    layer = LaurelResidual(variant, rank=RANK, low_rank_history=True)
    layer(x, fx)
    randomize(layer)
    assert_gradients_reach(layer, (x, fx), {"previous": history(variant)})


def test_up_projection_gets_gradient_at_init():
    # B = 0 at init; the low-rank branch must still be able to learn.
    x, fx = data(seed=0), data(seed=1)
    for variant in ["lr", "rw+lr", "rw+lr+pa"]:
        layer = LaurelResidual(variant, rank=RANK)
        layer(x, fx)
        if variant == "rw+lr+pa":
            b_weights = layer.pa_kernels_b
        else:
            b_weights = [layer.lr_kernel_b]
        grads = _grads(layer, (x, fx), b_weights, history(variant))
        for g in grads:
            assert np.abs(to_numpy(g)).max() > 0, variant


def _grads(layer, arrays, weights, previous):
    from tests.harness import _gradients

    def forward():
        return layer(*arrays, previous=previous)

    return _gradients(forward, weights)


# Parameter counts ------------------------------------------------------------

EXPECTED_COUNTS = {
    "rw": 2,
    "lr": 2 * RANK * D,
    "pa": K,
    "rw+lr": 2 * RANK * D + 2,
    "rw+pa": K + 2,
    "rw+lr+pa": 2 * RANK * K * D + K + 2,
}


def test_parameter_counts():
    for variant in VARIANTS:
        _check_parameter_counts(variant)


def _check_parameter_counts(variant):
    x = data()
    layer = LaurelResidual(variant, rank=RANK, num_activations=K)
    layer(x, x)
    assert layer.count_params() == EXPECTED_COUNTS[variant]
    per_dim = LaurelResidual(
        variant, rank=RANK, num_activations=K, per_dimension=True
    )
    per_dim(x, x)
    rw_extra = 2 * D - 2 if "rw" in variant else 0
    assert per_dim.count_params() == EXPECTED_COUNTS[variant] + rw_extra


def test_parameter_counts_low_rank_history():
    x = data()
    for variant in ["pa", "rw+pa"]:
        layer = LaurelResidual(
            variant, rank=RANK, num_activations=K, low_rank_history=True
        )
        layer(x, x)
        expected = EXPECTED_COUNTS[variant] + 2 * RANK * K * D
        assert layer.count_params() == expected
    # Ignored by variants that already fix h_j (identity LR or low rank).
    for variant in ["rw", "lr", "rw+lr", "rw+lr+pa"]:
        layer = LaurelResidual(
            variant, rank=RANK, num_activations=K, low_rank_history=True
        )
        layer(x, x)
        assert layer.count_params() == EXPECTED_COUNTS[variant]


def test_parameter_counts_match_table_at_paper_scale():
    # ResNet-50's last stage: D = 2048, r = 16.
    x = np.zeros((1, 2048), "float32")
    layer = LaurelResidual("rw+lr", rank=16)
    layer(x, x)
    assert layer.count_params() == 2 * 16 * 2048 + 2


# Initializers ----------------------------------------------------------------


def test_orthogonal_initializer_gives_orthonormal_columns():
    x = data((2, 32))
    layer = LaurelResidual("lr", rank=8, lr_initializer="orthogonal")
    layer(x, x)
    a = to_numpy(layer.lr_kernel_a)
    np.testing.assert_allclose(a.T @ a, np.eye(8), atol=1e-5)
    assert np.all(to_numpy(layer.lr_kernel_b) == 0)

    layer = LaurelResidual("rw+lr+pa", rank=8, lr_initializer="orthogonal")
    layer(x, x)
    for a in layer.pa_kernels_a:
        a = to_numpy(a)
        np.testing.assert_allclose(a.T @ a, np.eye(8), atol=1e-5)


def test_glorot_default_and_custom_initializer():
    x = data((2, 32))
    layer = LaurelResidual("lr", rank=8)
    layer(x, x)
    a = to_numpy(layer.lr_kernel_a)
    limit = np.sqrt(6.0 / (32 + 8))
    assert np.abs(a).max() <= limit and np.abs(a).max() > limit / 2
    assert not np.allclose(a.T @ a, np.eye(8), atol=1e-2)

    layer = LaurelResidual(
        "lr", rank=8, lr_initializer=keras.initializers.Constant(0.25)
    )
    layer(x, x)
    assert np.all(to_numpy(layer.lr_kernel_a) == 0.25)
    clone = LaurelResidual.from_config(layer.get_config())
    clone(x, x)
    assert np.all(to_numpy(clone.lr_kernel_a) == 0.25)


def test_variant_order_is_canonical():
    assert LaurelResidual("LR+rw").variant == "rw+lr"
    assert LaurelResidual("pa+lr+rw").variant == "rw+lr+pa"


# Harness ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant,shape,options",
    [
        ("rw", (3, 5, D), {"normalization": "sigmoid"}),
        ("rw+lr", (3, 4, 4, D), {"per_dimension": True}),
        pytest.param(
            "lr",
            (3, 4, 4, D),
            {"lr_initializer": "orthogonal"},
            marks=pytest.mark.slow,
        ),
        ("rw+lr+pa", (3, 5, D), {"normalization": "none"}),
    ],
)
def test_residual_harness(variant, shape, options):
    x, fx = data(shape, seed=0), data(shape, seed=1)
    call_kwargs = {}
    if "pa" in variant:
        call_kwargs = {"previous": history(variant, shape)}
    run_layer_test(
        lambda: LaurelResidual(variant, rank=RANK, **options),
        (x, fx),
        call_kwargs=call_kwargs,
        expected_output_shape=shape,
    )


def test_block_harness():
    x = data((3, 5, D))
    run_layer_test(
        lambda: LaurelBlock(
            keras.Sequential(
                [
                    keras.layers.Dense(D, activation="relu"),
                    keras.layers.LayerNormalization(),
                ]
            ),
            variant="rw+lr",
            rank=RANK,
        ),
        x,
        expected_output_shape=x.shape,
    )


def test_stack_harness():
    x = data((3, 5, D))
    run_layer_test(
        lambda: LaurelStack(
            [keras.layers.Dense(D, activation="relu") for _ in range(3)],
            variant="rw+pa",
            rank=RANK,
            num_activations=K,
        ),
        x,
        expected_output_shape=x.shape,
    )


def test_jit_compiled_call_with_history():
    x, fx = data(seed=0), data(seed=1)
    previous = history("rw+pa")
    layer = LaurelResidual("rw+pa", num_activations=K)
    layer(x, fx, previous=previous)
    randomize(layer)
    expected = np_reference(layer, x, fx, previous)
    inputs = [keras.Input(shape=a.shape[1:]) for a in [x, fx] + previous]
    out = layer(inputs[0], inputs[1], previous=inputs[2:])
    model = keras.Model(inputs, out)
    model.compile(jit_compile=keras.backend.backend() != "torch")
    y = model.predict([x, fx] + previous, verbose=0)
    assert_allclose(y, expected, atol=1e-4)


# Errors ----------------------------------------------------------------------


def test_unknown_variant():
    for bad in ["rx", "lr+pa", "rw+rw", "", 3]:
        with pytest.raises(ValueError, match="variant"):
            LaurelResidual(bad)


def test_unknown_normalization():
    with pytest.raises(ValueError, match="normalization.*tanh"):
        LaurelResidual("rw", normalization="tanh")


def test_bad_rank():
    with pytest.raises(ValueError, match="rank.*0"):
        LaurelResidual("lr", rank=0)
    with pytest.raises(ValueError, match="rank"):
        LaurelResidual("rw+lr+pa", rank=2.5)
    layer = LaurelResidual("rw+lr", rank=D + 1)
    with pytest.raises(ValueError, match=f"rank.*{D + 1}"):
        layer(data(), data())
    # Ignored (and not validated) without a low-rank map.
    LaurelResidual("rw", rank=None)(data(), data())


def test_bad_num_activations():
    with pytest.raises(ValueError, match="num_activations.*0"):
        LaurelResidual("pa", num_activations=0)


def test_shape_mismatch_suggests_projection_shortcut():
    layer = LaurelResidual("rw")
    with pytest.raises(ValueError, match="projection shortcut"):
        layer(data((2, 5, D)), data((2, 5, 2 * D)))
    block = LaurelBlock(keras.layers.Dense(2 * D), variant="rw")
    with pytest.raises(ValueError, match="projection shortcut"):
        block(data((2, 5, D)))
    with pytest.raises(ValueError, match="rank >= 2"):
        LaurelResidual("rw")(np.ones((D,), "float32"), np.ones((D,), "f4"))


def test_channels_first_rejected():
    with pytest.raises(ValueError, match="channels_first"):
        LaurelResidual("rw+lr", data_format="channels_first")
    with pytest.raises(ValueError, match="data_format"):
        LaurelResidual("rw+lr", data_format="nchw")
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        x = data((2, D, 4, 4))
        with pytest.raises(ValueError, match="channels_first"):
            LaurelResidual("rw+lr", rank=2)(x, x)
        # Explicit channels_last overrides the global setting.
        x = data((2, 4, 4, D))
        LaurelResidual("rw+lr", rank=2, data_format="channels_last")(x, x)
    finally:
        keras.config.set_image_data_format(previous)


def test_bad_previous():
    x, fx = data(), data()
    layer = LaurelResidual("rw+pa", num_activations=K)
    with pytest.raises(ValueError, match=r"previous\[1\].shape"):
        layer(x, fx, previous=[x, data((2, 5, D + 1))])
    with pytest.raises(ValueError, match="at most num_activations - 1 = 2"):
        layer(x, fx, previous=[x, x, x])
    with pytest.raises(ValueError, match="only used by PA variants"):
        LaurelResidual("rw+lr", rank=2)(x, fx, previous=[x])
    with pytest.raises(ValueError, match="only used by PA variants"):
        LaurelBlock(keras.layers.Dense(D), variant="rw")(x, previous=[x])


def test_bad_blocks():
    with pytest.raises(ValueError, match="blocks"):
        LaurelStack([], variant="rw+pa")
    with pytest.raises(ValueError, match="blocks"):
        LaurelStack(keras.layers.Dense(D), variant="rw+pa")
    with pytest.raises(ValueError, match="block"):
        LaurelBlock("dense")
    stack = LaurelStack(
        [keras.layers.Dense(D), keras.layers.Dense(D + 1)], variant="rw+pa"
    )
    with pytest.raises(ValueError, match="projection shortcut"):
        stack(data())


def test_gemma3n_variant_harness_and_math():
    RNG = np.random.default_rng(0)  # noqa: N806
    x = RNG.normal(size=(3, 5, 8)).astype("float32")
    fx = RNG.normal(size=(3, 5, 8)).astype("float32")
    run_layer_test(lambda: LaurelResidual("gemma3n", rank=2), (x, fx))
    layer = LaurelResidual(" Gemma3n ", rank=2)
    assert layer.variant == "gemma3n"
    # B = 0 at init: the branch is z, the merge (x + fx + z) / sqrt(2).
    assert_allclose(layer(x, fx), (2 * x + fx) / np.sqrt(2), atol=1e-6)
    a = RNG.normal(size=(8, 2)).astype("float32")
    b = RNG.normal(size=(2, 8)).astype("float32")
    s = RNG.normal(size=(8,)).astype("float32")
    layer.lr_kernel_a.assign(a)
    layer.lr_kernel_b.assign(b)
    layer.lr_norm_scale.assign(s)
    h = x @ a @ b
    h = h / np.sqrt(np.mean(h**2, -1, keepdims=True) + 1e-6) * s
    assert_allclose(layer(x, fx), (2 * x + fx + h) / np.sqrt(2), atol=1e-5)


# Weight names, merges picked by `implementation`, float32 residual weights ---


@pytest.mark.parametrize(
    "variant, options, names",
    [
        ("rw", {}, ["residual_weights"]),
        ("lr", {}, ["lr_kernel_a", "lr_kernel_b"]),
        ("pa", {}, ["pa_gamma"]),
        ("rw+lr", {}, ["residual_weights", "lr_kernel_a", "lr_kernel_b"]),
        ("rw+pa", {}, ["residual_weights", "pa_gamma"]),
        (
            "pa",
            {"low_rank_history": True, "num_activations": 2},
            ["pa_gamma", "pa_kernel_a_0", "pa_kernel_b_0"]
            + ["pa_kernel_a_1", "pa_kernel_b_1"],
        ),
        (
            "rw+lr+pa",
            {"num_activations": 2},
            ["residual_weights", "pa_gamma", "pa_kernel_a_0", "pa_kernel_b_0"]
            + ["pa_kernel_a_1", "pa_kernel_b_1"],
        ),
        ("gemma3n", {}, ["lr_kernel_a", "lr_kernel_b", "lr_norm_scale"]),
    ],
)
def test_weight_names_and_build_from_x_shape_alone(variant, options, names):
    # Pruning reports and kernel paths key on `variable.path`; `build` with
    # only `x`'s shape (as `from_gemma3n` calls it) takes `fx`'s to match.
    layer = LaurelResidual(variant, rank=RANK, name="res", **options)
    layer.build((None, D))
    assert [w.path for w in layer.weights] == [f"res/{n}" for n in names]


@pytest.mark.parametrize("normalization", ["sigmoid", "none"])
@pytest.mark.parametrize("variant", ["rw", "rw+lr"])
def test_fused_merge_keeps_sigmoid_and_free_weights(variant, normalization):
    # The fused softmax merge takes only `theta_0 - theta_1`; the other
    # normalizations must go through `alpha, beta` on either path.
    x, fx = data(seed=0), data(seed=1)
    for implementation in ("reference", "fused"):
        layer = LaurelResidual(
            variant, rank=RANK, normalization=normalization, per_dimension=True
        )
        layer.implementation = implementation
        layer(x, fx)
        randomize(layer, seed=2)
        theta = to_numpy(layer.residual_weights).astype("float64")
        if normalization == "sigmoid":
            w = 2.0 / (1.0 + np.exp(-theta))
        else:
            w = theta
        h = x.astype("float64")
        if variant == "rw+lr":
            a = to_numpy(layer.lr_kernel_a).astype("float64")
            b = to_numpy(layer.lr_kernel_b).astype("float64")
            h = h + (h @ a) @ b
        expected = w[0] * fx + w[1] * h
        assert np.abs(w.sum(axis=0) - 2.0).max() > 0.1  # not a softmax pair
        assert_allclose(layer(x, fx), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("implementation", ["reference", "fused"])
def test_residual_weights_stay_float32_under_mixed_bfloat16(implementation):
    # theta = (100.4, 100): bfloat16 would round theta_0 to 100.5 and the
    # logit from 0.4 to 0.5 (alpha 1.245 instead of 1.197).
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = LaurelResidual("rw")
    layer.implementation = implementation
    ones = np.ones((2, D), "float32")
    zeros = np.zeros((2, D), "float32")
    layer(zeros, ones)
    assert layer.residual_weights.dtype == "float32"
    layer.residual_weights.assign(np.array([100.4, 100.0], "float32"))
    alpha = 2.0 / (1.0 + np.exp(-0.4))
    got_alpha = to_numpy(ops.cast(layer(zeros, ones), "float32"))
    got_beta = to_numpy(ops.cast(layer(ones, zeros), "float32"))
    # bfloat16 keeps 8 bits: the output is alpha (beta) to within 2**-8.
    np.testing.assert_allclose(got_alpha, alpha, rtol=2**-8, atol=0)
    np.testing.assert_allclose(got_beta, 2.0 - alpha, rtol=2**-8, atol=0)


def test_gemma3n_branch_input_feeds_the_branch():
    rng = np.random.default_rng(3)
    x, fx, z = (rng.normal(size=(2, 4, D)).astype("float32") for _ in "xfz")
    layer = LaurelResidual("gemma3n", rank=RANK, epsilon=1e-5)
    layer(x, fx)
    a = rng.normal(size=(D, RANK)).astype("float32")
    b = rng.normal(size=(RANK, D)).astype("float32")
    s = rng.normal(size=(D,)).astype("float32")
    layer.lr_kernel_a.assign(a)
    layer.lr_kernel_b.assign(b)
    layer.lr_norm_scale.assign(s)
    h = z.astype("float64") @ a @ b
    h = h / np.sqrt(np.mean(h**2, -1, keepdims=True) + 1e-5) * s
    expected = (x + fx + z + h) / np.sqrt(2)
    assert_allclose(layer(x, fx, branch_input=z), expected, atol=1e-5)
    # A float64 branch input is cast to the compute dtype.
    got = layer(x, fx, branch_input=z.astype("float64"))
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    assert_allclose(got, expected, atol=1e-5)
