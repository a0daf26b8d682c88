import keras
import numpy as np
import pytest

from keras_efficient.layers import AltUp
from keras_efficient.layers import AltUpEmbedding
from keras_efficient.layers import AltUpInput
from keras_efficient.layers import AltUpReadout
from keras_efficient.layers import AltUpStack
from keras_efficient.layers.altup import active_blocks
from tests.harness import assert_allclose
from tests.harness import assert_gradients_reach
from tests.harness import run_layer_test
from tests.harness import to_numpy

RNG = np.random.default_rng(0)
D = 8


def widened(batch=3, length=5, k=2, d=D):
    return RNG.normal(size=(batch, length, k, d)).astype("float32")


class ShapeProbe(keras.layers.Layer):
    """A residual layer recording the shapes it is called on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []
        self.dense = keras.layers.Dense(D)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        self.seen.append(tuple(x.shape))
        return x + self.dense(x)


def dense_reference(layer, x):
    kernel, bias = (to_numpy(w) for w in layer.weights)
    return x @ kernel + bias


def numpy_altup(x, p, g, active, inner):
    """NumPy AltUp; `p` (..., K, K) or (K, K), `g` (..., K) or (K,)."""
    if p.ndim == 2:
        xhat = np.einsum("ij,...jd->...id", p, x)
    else:
        xhat = np.einsum("...ij,...jd->...id", p, x)
    y = inner(xhat[..., active, :])
    innovation = (y - xhat[..., active, :])[..., None, :]
    return xhat + g[..., :, None] * innovation


# --- shared harness -------------------------------------------------------


@pytest.mark.parametrize("coefficients", ["static", "routed"])
@pytest.mark.parametrize("routing", ["gemma3n", "active_input"])
def test_altup_harness(coefficients, routing):
    if coefficients == "static" and routing == "active_input":
        pytest.skip("routing only matters for routed coefficients")
    x = widened(k=3)
    run_layer_test(
        lambda: AltUp(
            keras.layers.Dense(D),
            num_blocks=3,
            active_block=1,
            coefficients=coefficients,
            coefficient_clip=2.0,
            routing=routing,
            output_scale=False,
        ),
        x,
        expected_output_shape=x.shape,
    )


def test_altup_stack_harness():
    x = widened(k=2)
    run_layer_test(
        lambda: AltUpStack(
            [keras.layers.Dense(D, activation="tanh") for _ in range(3)],
            num_blocks=2,
        ),
        x,
        expected_output_shape=x.shape,
    )


@pytest.mark.parametrize("mode", ["split", "replicate"])
def test_altup_input_harness(mode):
    x = RNG.normal(size=(3, 5, D)).astype("float32")
    out = run_layer_test(
        lambda: AltUpInput(2, mode=mode),
        x,
        run_training=False,
    )
    if mode == "split":
        np.testing.assert_array_equal(to_numpy(out), x.reshape(3, 5, 2, 4))
    else:
        np.testing.assert_array_equal(to_numpy(out)[:, :, 0], x)
        np.testing.assert_array_equal(to_numpy(out)[:, :, 1], x)


@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="torch tensor strides"
)
def test_replicated_blocks_are_copies_not_a_zero_stride_view():
    # A view with a zero stride over the blocks (what `ops.repeat` gives on
    # torch) sends the first block's predict backward to torch's strided
    # batched matmul instead of BLAS: 8.5 ms of a 56 ms train step at
    # d = 128 (Recycled-AltUp 1.28x the plain model, AltUp 1.10x).
    ids = RNG.integers(0, 20, size=(3, 5)).astype("int32")
    x = RNG.normal(size=(3, 5, D)).astype("float32")
    outputs = [
        AltUpEmbedding(20, D, num_blocks=2, recycled=True)(ids),
        AltUpInput(2, mode="replicate")(x),
    ]
    for out in outputs:
        assert out.is_contiguous() and 0 not in out.stride()


@pytest.mark.parametrize("recycled", [False, True])
def test_altup_embedding(recycled):
    ids = RNG.integers(0, 20, size=(3, 5)).astype("int32")
    out = run_layer_test(
        lambda: AltUpEmbedding(20, D, num_blocks=2, recycled=recycled),
        ids,
        expected_output_shape=(3, 5, 2, D),
        run_training=False,
    )
    layer = AltUpEmbedding(20, D, num_blocks=2, recycled=recycled)
    out = to_numpy(layer(ids))
    table = to_numpy(layer.embeddings)
    if recycled:
        assert table.shape == (20, D)
        np.testing.assert_array_equal(out[:, :, 0], table[ids])
        np.testing.assert_array_equal(out[:, :, 1], table[ids])
    else:
        assert table.shape == (20, 2 * D)
        np.testing.assert_array_equal(out, table[ids].reshape(3, 5, 2, D))


@pytest.mark.parametrize("mode", ["sum", "mean", "projection"])
def test_altup_readout(mode):
    x = widened(k=2)
    out = run_layer_test(lambda: AltUpReadout(2, mode=mode), x)
    expected = x.sum(-2) if mode == "sum" else x.mean(-2)
    # The projection starts as the mean of the blocks.
    assert_allclose(out, expected, atol=1e-5)
    if mode == "projection":
        layer = AltUpReadout(2, mode="projection")
        layer.build(x.shape)
        kernel = RNG.normal(size=(2 * D, D)).astype("float32")
        layer.kernel.assign(kernel)
        assert_allclose(layer(x), x.reshape(3, 5, 2 * D) @ kernel, atol=1e-4)


# --- the math -------------------------------------------------------------


@pytest.mark.parametrize("coefficients", ["static", "routed"])
def test_one_block_at_init_is_the_plain_layer(coefficients):
    x = RNG.normal(size=(3, 5, D)).astype("float32")
    inner = keras.layers.Dense(D)
    layer = AltUp(inner, num_blocks=1, coefficients=coefficients)
    out = layer(x[:, :, None, :])
    assert_allclose(out[:, :, 0, :], inner(x), atol=1e-6)


def test_at_init_every_block_gets_the_same_update():
    x = widened(k=3)
    inner = keras.layers.Dense(D)
    out = to_numpy(AltUp(inner, num_blocks=3, active_block=2)(x))
    update = to_numpy(inner(x[:, :, 2])) - x[:, :, 2]
    for i in range(3):
        assert_allclose(out[:, :, i], x[:, :, i] + update, atol=1e-5)


@pytest.mark.parametrize("coefficients", ["static", "routed"])
def test_wrapped_layer_only_sees_width_d(coefficients):
    probe = ShapeProbe()
    layer = AltUp(
        probe, num_blocks=4, active_block=3, coefficients=coefficients
    )
    layer(widened(k=4))
    symbolic = keras.Input((5, 4, D))
    layer(symbolic)
    assert probe.seen, "the wrapped layer was never called"
    assert all(shape[-1] == D and len(shape) == 3 for shape in probe.seen)

    probes = [ShapeProbe() for _ in range(3)]
    AltUpStack(probes, num_blocks=2)(widened(k=2))
    for p in probes:
        assert p.seen and all(s == (3, 5, D) for s in p.seen), p.seen


def test_static_matches_numpy():
    x = widened(k=3)
    inner = keras.layers.Dense(D)
    layer = AltUp(inner, num_blocks=3, active_block=1)
    layer.build(x.shape)
    p = RNG.normal(size=(3, 3)).astype("float32")
    g = RNG.normal(size=(3,)).astype("float32")
    layer.prediction_coefficients.assign(p)
    layer.correction_coefficients.assign(g)
    expected = numpy_altup(x, p, g, 1, lambda h: dense_reference(inner, h))
    assert_allclose(layer(x), expected, atol=1e-4, rtol=1e-4)


def routed_reference(layer, inner, x, clip=None):
    """The 0.1 routed form (`routing="active_input"`)."""
    k = layer.num_blocks
    w_r, w_p, w_c = (
        to_numpy(layer.router_kernel),
        to_numpy(layer.prediction_kernel),
        to_numpy(layer.correction_kernel),
    )
    active = x[..., layer.active_block, :]
    normed = active / np.sqrt(np.mean(active**2, -1, keepdims=True) + 1e-6)
    r = np.tanh(normed / x.shape[-1] @ w_r)
    dp = (r @ w_p).reshape(r.shape[:-1] + (k, k))
    dg = r @ w_c
    if clip is not None:
        dp, dg = np.clip(dp, -clip, clip), np.clip(dg, -clip, clip)
    p = np.eye(k) + dp
    g = 1.0 + dg
    expected = numpy_altup(
        x, p, g, layer.active_block, lambda h: dense_reference(inner, h)
    )
    return expected, p, g


def randomise_router(layer, scale=1.0):
    k, d = layer.num_blocks, layer.width
    layer.router_kernel.assign(RNG.normal(size=(d, k)) * 50.0)
    layer.prediction_kernel.assign(RNG.normal(size=(k, k * k)) * scale)
    layer.correction_kernel.assign(RNG.normal(size=(k, k)) * scale)


def test_routed_matches_numpy():
    x = widened(k=3)
    inner = keras.layers.Dense(D)
    layer = AltUp(
        inner,
        num_blocks=3,
        active_block=2,
        coefficients="routed",
        routing="active_input",
    )
    layer.build(x.shape)
    randomise_router(layer)
    expected, p, _ = routed_reference(layer, inner, x)
    # Coefficients really vary per token.
    assert p.reshape(-1, 9).std(axis=0).max() > 0.05
    assert_allclose(layer(x), expected, atol=1e-4, rtol=1e-4)


def test_routed_clip_is_applied():
    x = widened(k=2)
    inner = keras.layers.Dense(D)
    layer = AltUp(
        inner,
        num_blocks=2,
        coefficients="routed",
        coefficient_clip=0.1,
        routing="active_input",
    )
    layer.build(x.shape)
    randomise_router(layer, scale=10.0)
    expected, p, g = routed_reference(layer, inner, x, clip=0.1)
    unclipped, _, _ = routed_reference(layer, inner, x)
    assert np.abs(expected - unclipped).max() > 1e-2  # the clip binds
    assert_allclose(layer(x), expected, atol=1e-4, rtol=1e-4)
    p_layer, g_layer = layer.compute_coefficients(x)
    assert np.abs(to_numpy(p_layer) - np.eye(2)).max() <= 0.1 + 1e-6
    assert np.abs(to_numpy(g_layer) - 1.0).max() <= 0.1 + 1e-6


def test_static_clip_is_applied():
    x = widened(k=2)
    inner = keras.layers.Dense(D)
    layer = AltUp(inner, num_blocks=2, coefficient_clip=0.5)
    layer.build(x.shape)
    p = np.array([[3.0, -2.0], [0.2, 1.1]], "float32")
    g = np.array([-1.0, 1.3], "float32")
    layer.prediction_coefficients.assign(p)
    layer.correction_coefficients.assign(g)
    p_clip = np.eye(2) + np.clip(p - np.eye(2), -0.5, 0.5)
    g_clip = 1.0 + np.clip(g - 1.0, -0.5, 0.5)
    expected = numpy_altup(
        x, p_clip, g_clip, 0, lambda h: dense_reference(inner, h)
    )
    assert_allclose(layer(x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("routing", ["gemma3n", "active_input"])
def test_routed_gradients_reach_every_weight(routing):
    x = widened(k=2)
    layer = AltUp(
        keras.layers.Dense(D),
        num_blocks=2,
        coefficients="routed",
        routing=routing,
    )
    layer.build(x.shape)
    randomise_router(layer, scale=0.5)
    assert_gradients_reach(layer, x)


def test_schedule():
    assert active_blocks(5, 2) == [0, 1, 0, 1, 0]
    assert active_blocks(5, 3, "same") == [0] * 5
    stack = AltUpStack([keras.layers.Dense(D) for _ in range(4)], num_blocks=3)
    assert [a.active_block for a in stack.altup_layers] == [0, 1, 2, 0]
    stack = AltUpStack(
        [keras.layers.Dense(D) for _ in range(2)], num_blocks=3, schedule="same"
    )
    assert [a.active_block for a in stack.altup_layers] == [0, 0]


def test_stack_matches_sequential_wrappers():
    x = widened(k=2)
    inners = [keras.layers.Dense(D) for _ in range(3)]
    stack = AltUpStack(inners, num_blocks=2)
    out = to_numpy(stack(x))
    h = x
    for index, inner in enumerate(inners):
        h = numpy_altup(
            h,
            np.eye(2),
            np.ones(2),
            index % 2,
            lambda v, inner=inner: dense_reference(inner, v),
        )
    assert_allclose(out, h, atol=1e-4, rtol=1e-4)


# --- errors ---------------------------------------------------------------


def test_errors():
    dense = keras.layers.Dense(D)
    with pytest.raises(ValueError, match="num_blocks"):
        AltUp(dense, num_blocks=0)
    with pytest.raises(ValueError, match="active_block"):
        AltUp(dense, num_blocks=2, active_block=2)
    with pytest.raises(ValueError, match="active_block"):
        AltUp(dense, num_blocks=2, active_block=-1)
    with pytest.raises(ValueError, match="coefficients"):
        AltUp(dense, coefficients="learned")
    with pytest.raises(ValueError, match="coefficient_clip"):
        AltUp(dense, coefficient_clip=0.0)
    with pytest.raises(ValueError, match="routing"):
        AltUp(dense, coefficients="routed", routing="output")
    with pytest.raises(ValueError, match="clip_mode"):
        AltUp(dense, coefficients="routed", clip_mode="coefficients")
    with pytest.raises(ValueError, match="layer"):
        AltUp("dense")
    with pytest.raises(ValueError, match="num_blocks=3"):
        AltUp(keras.layers.Dense(D), num_blocks=3)(widened(k=2))
    with pytest.raises(ValueError, match="rank"):
        AltUp(keras.layers.Dense(D))(np.ones((3, D), "float32"))
    with pytest.raises(ValueError, match="width"):
        AltUp(keras.layers.Dense(D + 1))(widened(k=2))
    with pytest.raises(ValueError, match="divisible"):
        AltUpInput(3, mode="split")(np.ones((2, 4, D), "float32"))
    with pytest.raises(ValueError, match="mode"):
        AltUpInput(2, mode="copy")
    with pytest.raises(ValueError, match="mode"):
        AltUpReadout(2, mode="max")
    with pytest.raises(ValueError, match="num_blocks=3"):
        AltUpReadout(3)(widened(k=2))
    with pytest.raises(ValueError, match="schedule"):
        AltUpStack([keras.layers.Dense(D)], schedule="random")
    with pytest.raises(ValueError, match="layers"):
        AltUpStack(keras.layers.Dense(D))
    with pytest.raises(ValueError, match="num_blocks"):
        AltUpEmbedding(10, D, num_blocks=0)


def test_old_routed_config_keeps_its_form():
    layer = AltUp(keras.layers.Dense(D), num_blocks=2, coefficients="routed")
    config = layer.get_config()
    assert config["routing"] == "gemma3n"
    del config["routing"]  # a config saved by keras-efficient 0.1
    assert AltUp.from_config(config).routing == "active_input"
    stack = AltUpStack([keras.layers.Dense(D)], coefficients="routed")
    config = stack.get_config()
    del config["routing"]
    old = AltUpStack.from_config(config)
    assert old.altup_layers[0].routing == "active_input"


def test_public_names_have_one_home_and_keep_their_paths():
    """Each AltUp name is defined in one module of `layers/altup/`; the
    0.1.0 paths (`keras_efficient.layers.altup.X`, `keras_efficient.layers.X`)
    are re-exports in `__init__.py` files and give the same object."""
    import keras_efficient.layers as layers
    from keras_efficient.layers import altup as package
    from keras_efficient.layers.altup import ends
    from keras_efficient.layers.altup import layer
    from keras_efficient.layers.altup import stack

    homes = {
        layer: ("AltUp", "COEFFICIENT_MODES"),
        ends: ("AltUpInput", "AltUpEmbedding", "AltUpReadout"),
        stack: ("AltUpStack", "active_blocks", "SCHEDULES"),
    }
    for module, names in homes.items():
        for name in names:
            obj = getattr(module, name)
            assert getattr(package, name) is obj, name
            if hasattr(obj, "__module__"):
                assert obj.__module__ == module.__name__, name
            if name[0].isupper() and not name.isupper():
                assert getattr(layers, name) is obj, name
    assert layers.active_blocks is stack.active_blocks
    assert active_blocks(3, 2) == [0, 1, 0]


@pytest.mark.parametrize(
    "coefficients, routing, algorithm",
    [
        ("static", "gemma3n", "StaticCoefficients"),
        ("static", "active_input", "StaticCoefficients"),
        ("routed", "gemma3n", "Gemma3nRouting"),
        ("routed", "active_input", "ActiveInputRouting"),
    ],
)
def test_each_configuration_runs_one_named_algorithm(
    coefficients, routing, algorithm
):
    from keras_efficient.layers.altup import coefficients as algorithms

    layer = AltUp(
        keras.layers.Dense(D),
        coefficients=coefficients,
        routing=routing,
        coefficient_clip=0.5,
    )
    assert type(layer.coefficient_algorithm) is getattr(algorithms, algorithm)
    layer.build((None, 3, 2, D))
    names = sorted(
        w.path.split("/")[-1] for w in layer.weights if "dense" not in w.path
    )
    expected = {
        "StaticCoefficients": [
            "correction_coefficients",
            "prediction_coefficients",
        ],
        "ActiveInputRouting": [
            "correction_kernel",
            "prediction_kernel",
            "router_kernel",
        ],
        "Gemma3nRouting": [
            "correction_kernel",
            "prediction_kernel",
            "router_kernel",
            "router_norm_scale",
        ],
    }[algorithm]
    assert names == expected
    # Only Hugging Face's Gemma 3n clip keeps the kernels clamped.
    constrained = [w for w in layer.weights if w.constraint is not None]
    assert len(constrained) == (2 if algorithm == "Gemma3nRouting" else 0)


# --- checks the mutation run asked for ------------------------------------


def test_negative_epsilon_is_rejected_by_name():
    with pytest.raises(ValueError, match="^`epsilon` must") as info:
        AltUp(keras.layers.Dense(D), coefficients="routed", epsilon=-1.0)
    assert "epsilon=-1.0" in str(info.value)
    assert AltUp(keras.layers.Dense(D), epsilon=0.0).epsilon == 0.0


def test_wrapped_layer_changing_the_width_is_named():
    # Case-sensitive: the sentence starts with a capital (Keras may put
    # its own context before it).
    with pytest.raises(ValueError, match="The wrapped `layer` must keep"):
        AltUp(keras.layers.Dense(D + 1))(widened(k=2))


def test_built_altup_called_on_another_width_names_both_widths():
    layer = AltUp(keras.layers.Dense(D), num_blocks=2)
    layer(widened(k=2))
    with pytest.raises(ValueError, match="built for `inputs` of width 8") as e:
        layer(widened(k=2, d=2 * D))
    assert "make a new layer for width 16" in str(e.value)


def gemma3n_reference(layer, inner, x, w_p, w_c):
    """NumPy Gemma 3n AltUp with the given prediction/correction kernels."""
    k, d = layer.num_blocks, x.shape[-1]
    w_r = to_numpy(layer.router_kernel)
    scale = to_numpy(layer.router_norm_scale)

    def route(z):
        normed = z / np.sqrt(np.mean(z**2, -1, keepdims=True) + 1e-6)
        return np.tanh((normed * scale / d) @ w_r)

    a = layer.active_block
    mix = (route(x[..., a, :]) @ w_p).reshape(x.shape[:-2] + (k, k))
    xhat = x + np.einsum("...ij,...jd->...id", mix, x)
    y = dense_reference(inner, xhat[..., a, :])
    g = 1.0 + route(y) @ w_c
    return xhat + g[..., :, None] * (y - xhat[..., a, :])[..., None, :]


def test_gemma3n_training_call_uses_the_clipped_prediction_kernel():
    """Hugging Face clamps `W_p` in training only; `W_c` always."""
    x = widened(k=2)
    inner = keras.layers.Dense(D)
    layer = AltUp(
        inner,
        num_blocks=2,
        coefficients="routed",
        coefficient_clip=0.1,
        routing="gemma3n",
        clip_mode="weights",
    )
    layer.build(x.shape)
    # `assign` bypasses the constraint: kernels beyond the clip.
    randomise_router(layer, scale=2.0)
    w_p = to_numpy(layer.prediction_kernel)
    w_c_clipped = np.clip(to_numpy(layer.correction_kernel), -0.1, 0.1)
    clipped = gemma3n_reference(
        layer, inner, x, np.clip(w_p, -0.1, 0.1), w_c_clipped
    )
    unclipped = gemma3n_reference(layer, inner, x, w_p, w_c_clipped)
    assert np.abs(clipped - unclipped).max() > 1e-2  # the clip binds
    assert_allclose(layer(x, training=True), clipped, atol=1e-4, rtol=1e-4)
    assert_allclose(layer(x, training=False), unclipped, atol=1e-4, rtol=1e-4)


def test_compute_coefficients_cast_inputs_to_the_compute_dtype():
    """float64 inputs give float32 coefficients, as a call would."""
    x = widened(k=3).astype("float64")
    inner = keras.layers.Dense(D)
    layer = AltUp(
        inner,
        num_blocks=3,
        active_block=1,
        coefficients="routed",
        routing="active_input",
    )
    layer.build(x.shape)
    randomise_router(layer)
    _, p, g = routed_reference(layer, inner, x)
    p_layer, g_layer = layer.compute_coefficients(x)
    for name, ours, expected in (("p", p_layer, p), ("g", g_layer, g)):
        dtype = keras.backend.standardize_dtype(ours.dtype)
        assert dtype == "float32", (name, dtype)
        assert_allclose(ours, expected, atol=1e-4, rtol=1e-4)


class UnregisteredResidual(keras.layers.Layer):
    """A layer class that is not registered for serialization."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.dense = keras.layers.Dense(width)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return x + self.dense(x)

    def get_config(self):
        return {**super().get_config(), "width": self.width}


def test_from_config_passes_custom_objects_to_the_wrapped_layer():
    layer = AltUp(UnregisteredResidual(D), num_blocks=2, active_block=1)
    config = layer.get_config()
    restored = AltUp.from_config(
        config, custom_objects={"UnregisteredResidual": UnregisteredResidual}
    )
    assert type(restored.layer) is UnregisteredResidual
    assert restored.layer.width == D and restored.active_block == 1


@pytest.mark.parametrize("routing", ["active_input", "gemma3n"])
def test_compute_coefficients_under_mixed_bfloat16(routing):
    """Outside a call, the weights are read in the compute dtype as a call
    reads them: the same (p, g) as inside one, in bfloat16."""
    layer = AltUp(
        keras.layers.Dense(D),
        num_blocks=2,
        coefficients="routed",
        routing=routing,
        dtype="mixed_bfloat16",
    )
    x = widened(k=2)
    layer(x)
    p, g = layer.compute_coefficients(x, outputs=x[..., 0, :])
    assert keras.backend.standardize_dtype(p.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(g.dtype) == "bfloat16"
