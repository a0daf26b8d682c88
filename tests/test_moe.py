"""Tests of `keras_efficient.layers.MixtureOfExperts`."""

import keras
import numpy as np
import pytest

from keras_efficient.layers import MixtureOfExperts
from keras_efficient.layers.experts import capacity_mlp
from keras_efficient.layers.experts import grouped_mlp
from keras_efficient.layers.routing import positions_in_experts
from tests.harness import BACKEND
from tests.harness import JIT
from tests.harness import assert_allclose
from tests.harness import assert_gradients_reach
from tests.harness import run_layer_test
from tests.harness import to_numpy

RNG = np.random.default_rng(0)
X = RNG.normal(size=(3, 8, 6)).astype("float32")


def _numpy_route(layer, x2):
    """`(experts, gates)` from the router's weights, not `layer.route`.

    Softmax router: the `top_k` largest softmax probabilities of
    `x @ kernel`, largest first. LSH router: each table's sign bits of
    `x @ projections` read as a binary number, modulo the expert count,
    with equal gates `1 / top_k`.
    """
    x2 = x2.astype("float64")
    k = layer.top_k
    if layer.router == "softmax":
        logits = x2 @ to_numpy(layer.gate_network.kernel).astype("float64")
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        experts = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
        return experts, np.take_along_axis(probs, experts, axis=-1)
    projections = to_numpy(layer.hash.projections).astype("float64")
    bits = (x2 @ projections > 0).reshape(len(x2), k, -1)
    buckets = bits @ (2 ** np.arange(bits.shape[-1]))
    return buckets % layer.num_experts, np.full(buckets.shape, 1.0 / k)


def _numpy_moe(layer, x):
    """Loop reference: capacity in k-major, then token order."""
    x2 = x.reshape(-1, x.shape[-1])
    experts, gates = _numpy_route(layer, x2)
    w1, b1 = to_numpy(layer.kernel_in), to_numpy(layer.bias_in)
    w2, b2 = to_numpy(layer.kernel_out), to_numpy(layer.bias_out)
    num_tokens = len(x2)
    capacity = layer.capacity(num_tokens) or np.inf
    counts = np.zeros(layer.num_experts, int)
    out = np.zeros((num_tokens, w2.shape[-1]))
    dropped = 0
    for j in range(layer.top_k):
        for t in range(num_tokens):
            e = experts[t, j]
            counts[e] += 1
            if counts[e] > capacity:
                dropped += 1
                continue
            h = np.maximum(x2[t] @ w1[e] + b1[e], 0)
            out[t] += gates[t, j] * (h @ w2[e] + b2[e])
    if layer.num_shared_experts:
        s1, s2 = (
            to_numpy(layer.shared_kernel_in),
            to_numpy(layer.shared_bias_in),
        )
        s3, s4 = (
            to_numpy(layer.shared_kernel_out),
            to_numpy(layer.shared_bias_out),
        )
        out += np.maximum(x2 @ s1 + s2, 0) @ s3 + s4
    fraction = dropped / (num_tokens * layer.top_k)
    return out.reshape(x.shape[:-1] + (-1,)), fraction


@pytest.mark.parametrize(
    "kwargs",
    [
        {"router": "lsh", "seed": 0},
        {"router": "softmax", "top_k": 2, "output_dim": 5},
    ],
)
def test_harness(kwargs):
    out_dim = kwargs.get("output_dim", 6)
    run_layer_test(
        lambda: MixtureOfExperts(4, 16, implementation="reference", **kwargs),
        X,
        expected_output_shape=(3, 8, out_dim),
    )


@pytest.mark.parametrize(
    "router, capacity_factor, shared",
    [
        ("lsh", None, 0),
        ("softmax", None, 0),
        ("softmax", None, 2),
        ("softmax", 1.0, 0),
        ("lsh", 0.5, 1),
        ("softmax", 0.5, 0),
    ],
)
def test_matches_numpy_loop_reference(router, capacity_factor, shared):
    layer = MixtureOfExperts(
        4,
        8,
        router=router,
        top_k=2,
        capacity_factor=capacity_factor,
        num_shared_experts=shared,
        bias_initializer="random_normal",
        implementation="reference",
        seed=0,
    )
    out = layer(X)
    expected, fraction = _numpy_moe(layer, X)
    assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(
        float(layer.dropped_fraction), fraction, rtol=1e-6
    )
    if capacity_factor is None:
        assert fraction == 0
    if capacity_factor == 0.5:
        assert fraction > 0.3


@pytest.mark.parametrize("num_experts", [1, 3, 16])
def test_positions_count_earlier_assignments_to_the_same_expert(num_experts):
    rng = np.random.default_rng(num_experts)
    expert = rng.integers(0, num_experts, 257).astype("int32")
    expected = [np.sum(expert[:i] == e) for i, e in enumerate(expert)]
    got = to_numpy(positions_in_experts(expert, num_experts))
    np.testing.assert_array_equal(got, expected)


def test_lsh_router_sends_each_token_to_its_bucket():
    layer = MixtureOfExperts(8, 4, router="lsh", top_k=3, seed=5)
    x = X.reshape(-1, 6)
    layer(x)
    experts, gates, probs = layer.route(x)
    buckets = to_numpy(layer.hash(x))
    np.testing.assert_array_equal(to_numpy(experts), buckets % 8)
    np.testing.assert_allclose(to_numpy(gates), 1 / 3)
    assert probs is None
    assert layer.hash.num_bits == 3
    assert not layer.hash.trainable_weights


def test_load_balancing_loss_value():
    layer = MixtureOfExperts(
        4, 8, router="softmax", top_k=2, load_balance_weight=0.5
    )
    layer(X)
    x = X.reshape(-1, 6)
    logits = to_numpy(layer.gate_network(x)).astype("float64")
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    top = np.argsort(-probs, -1)[:, :2]
    fraction = np.bincount(top.ravel(), minlength=4) / top.size
    expected = 0.5 * 4 * np.sum(fraction * probs.mean(0))
    assert len(layer.losses) == 1
    np.testing.assert_allclose(to_numpy(layer.losses[0]), expected, rtol=1e-5)
    lsh = MixtureOfExperts(4, 8, router="lsh")
    lsh(X)
    assert not lsh.losses


@pytest.mark.parametrize("router", ["lsh", "softmax"])
def test_gradients_reach_every_weight(router):
    layer = MixtureOfExperts(
        4, 8, router=router, capacity_factor=None, implementation="reference"
    )
    assert_gradients_reach(layer, X)
    if router == "softmax":
        paths = [w.path for w in layer.trainable_weights]
        assert any("router" in p for p in paths), paths


def test_dropped_fraction_is_updated_in_compiled_fit():
    inputs = keras.Input((8, 6))
    moe = MixtureOfExperts(8, 8, router="lsh", capacity_factor=0.25, seed=0)
    model = keras.Model(inputs, inputs + moe(inputs))
    model.compile("sgd", "mse", jit_compile=JIT)
    assert float(moe.dropped_fraction) == 0.0
    model.fit(X, X, batch_size=3, epochs=1, verbose=0)
    _, expected = _numpy_moe(moe, X)
    assert expected > 0.5
    np.testing.assert_allclose(float(moe.dropped_fraction), expected, rtol=1e-6)


def test_dropped_fraction_is_logged_by_fit_per_layer(tmp_path):
    # Clustered tokens: the LSH router sends most to one expert.
    x = (1.0 + 0.01 * X).astype("float32")
    inputs = keras.Input((8, 6))
    capped = MixtureOfExperts(
        4, 8, router="lsh", capacity_factor=1.0, seed=0, name="capped"
    )
    dropless = MixtureOfExperts(4, 8, router="softmax", top_k=2, name="free")
    hidden = inputs + capped(inputs)
    model = keras.Model(inputs, hidden + dropless(hidden))
    model.compile("sgd", "mse", jit_compile=JIT)
    history = model.fit(x, x, batch_size=len(x), epochs=2, verbose=0)
    _, expected = _numpy_moe(capped, x)  # the frozen hash: every epoch
    assert expected > 0.5
    np.testing.assert_allclose(float(capped.dropped_fraction), expected)
    if BACKEND == "jax":  # the JAX trainer's logs come from metric state
        assert set(history.history) == {"loss"}
        assert capped.dropped_fraction_metric is None
        return
    logged = history.history
    expected_logs = [expected] * 2
    np.testing.assert_allclose(logged["capped_dropped_fraction"], expected_logs)
    assert "free_dropped_fraction" not in logged  # dropless: no metric
    path = str(tmp_path / "moe.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    logs = loaded.evaluate(x, x, batch_size=len(x), verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["capped_dropped_fraction"], expected)
    assert "free_dropped_fraction" not in logs


@pytest.mark.skipif(BACKEND != "jax", reason="ragged_dot is JAX only")
@pytest.mark.parametrize("capacity_factor", [None, 0.5])
def test_ragged_dot_path_matches_reference(capacity_factor):
    import jax

    def make(implementation):
        keras.utils.set_random_seed(1)
        layer = MixtureOfExperts(
            8,
            16,
            router="softmax",
            top_k=2,
            capacity_factor=capacity_factor,
            bias_initializer="random_normal",
            implementation=implementation,
        )
        layer.build(X.shape)
        return layer

    reference, ragged = make("reference"), make("ragged")
    for a, b in zip(reference.weights, ragged.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    assert_allclose(ragged(X), reference(X), atol=1e-5)
    assert_allclose(ragged.dropped_fraction, reference.dropped_fraction)

    # The dispatch functions themselves, and their gradients.
    x = X.reshape(-1, 6)
    experts, _, _ = reference.route(x)
    expert = np.asarray(experts).T.reshape(-1)
    token = np.tile(np.arange(len(x), dtype="int32"), 2)
    weights = tuple(
        w.value
        for w in (
            reference.kernel_in,
            reference.bias_in,
            reference.kernel_out,
            reference.bias_out,
        )
    )

    def loss(args, implementation):
        xs, ws = args
        y = grouped_mlp(xs, token, expert, ws, jax.nn.relu, implementation)
        return (y**2).sum()

    grads = {
        impl: jax.jit(jax.grad(loss), static_argnums=1)((x, weights), impl)
        for impl in ("reference", "ragged")
    }
    for a, b in zip(
        jax.tree.leaves(grads["reference"]), jax.tree.leaves(grads["ragged"])
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


@pytest.mark.parametrize("num_tokens, num_experts", [(5, 3), (300, 16)])
def test_grouped_and_capacity_paths_match_a_loop(num_tokens, num_experts):
    rng = np.random.default_rng(num_tokens)
    x = rng.normal(size=(num_tokens, 4)).astype("float32")
    # Clustered: most assignments go to expert 0.
    expert = np.where(
        rng.random(2 * num_tokens) < 0.7,
        0,
        rng.integers(0, num_experts, 2 * num_tokens),
    ).astype("int32")
    token = np.tile(np.arange(num_tokens, dtype="int32"), 2)
    ws = [
        rng.normal(size=s).astype("float32")
        for s in [
            (num_experts, 4, 5),
            (num_experts, 5),
            (num_experts, 5, 3),
            (num_experts, 3),
        ]
    ]
    expected = np.stack(
        [
            np.maximum(x[t] @ ws[0][e] + ws[1][e], 0) @ ws[2][e] + ws[3][e]
            for t, e in zip(token, expert)
        ]
    )
    relu = keras.activations.relu
    got = grouped_mlp(x, token, expert, tuple(ws), relu)
    assert_allclose(got, expected, atol=1e-4, rtol=1e-5)
    position = to_numpy(positions_in_experts(expert))
    keep = position < 3
    got = capacity_mlp(x, token, expert, position, keep, 3, ws, relu)
    assert_allclose(got, expected * keep[:, None], atol=1e-4, rtol=1e-5)
    got = grouped_mlp(x, token, expert, tuple(ws), relu, keep=keep)
    assert_allclose(got, expected * keep[:, None], atol=1e-4, rtol=1e-5)


def test_positions_do_not_overflow_beyond_int32_keys():
    # expert * num + index would pass 2**31 (the old combined sort key).
    rng = np.random.default_rng(0)
    num = 513
    expert = rng.choice([0, 2**30, 2**31 - 1, 7], num).astype("int32")
    assert int(expert.max()) * num > 2**31
    expected = [np.sum(expert[:i] == e) for i, e in enumerate(expert)]
    got = to_numpy(positions_in_experts(expert))
    np.testing.assert_array_equal(got, expected)


def test_dropless_by_default_drops_nothing_on_clustered_routing():
    layer = MixtureOfExperts(16, 8, router="softmax", top_k=2)
    x = np.ones((64, 6), "float32") + 0.01 * X.reshape(-1, 6)[:1]
    layer(x)
    experts, _, _ = layer.route(x)
    assert len(np.unique(to_numpy(experts)[:, 0])) == 1  # all on one expert
    assert float(layer.dropped_fraction) == 0.0
    capped = MixtureOfExperts(
        16, 8, router="softmax", top_k=2, capacity_factor=1.25
    )
    capped(x)
    assert float(capped.dropped_fraction) > 0.8


def test_legacy_config_without_capacity_keeps_the_old_default():
    config = MixtureOfExperts(4, 8).get_config()
    assert config["capacity_factor"] is None
    del config["capacity_factor"]
    assert MixtureOfExperts.from_config(config).capacity_factor == 1.25


def test_z_loss_value():
    layer = MixtureOfExperts(
        4, 8, router="softmax", load_balance_weight=0, z_loss_weight=0.1
    )
    layer(X)
    logits = to_numpy(layer.gate_network(X.reshape(-1, 6))).astype("float64")
    m = logits.max(-1)
    z = m + np.log(np.exp(logits - m[:, None]).sum(-1))
    assert len(layer.losses) == 1
    np.testing.assert_allclose(
        to_numpy(layer.losses[0]), 0.1 * np.mean(z**2), rtol=1e-5
    )


def test_config_round_trip_keeps_arguments():
    layer = MixtureOfExperts(
        6,
        8,
        router="softmax",
        top_k=2,
        capacity_factor=2.0,
        output_dim=3,
        activation="gelu",
        load_balance_weight=0.1,
        z_loss_weight=0.01,
        num_shared_experts=2,
        kernel_initializer="he_normal",
    )
    clone = MixtureOfExperts.from_config(layer.get_config())
    for name in (
        "num_experts",
        "hidden_dim",
        "router",
        "top_k",
        "capacity_factor",
        "output_dim",
        "load_balance_weight",
        "z_loss_weight",
        "num_shared_experts",
        "num_bits",
        "implementation",
        "seed",
    ):
        assert getattr(clone, name) == getattr(layer, name)
    assert clone.activation is keras.activations.gelu


def test_expert_weights_have_the_expert_axis_first():
    layer = MixtureOfExperts(16, 32, output_dim=4)
    layer(X)
    shapes = {w.path.split("/")[-1]: tuple(w.shape) for w in layer.weights}
    assert shapes["kernel_in"] == (16, 6, 32)
    assert shapes["kernel_out"] == (16, 32, 4)
    # Per-expert Glorot: the limit of one expert's 6 x 32 matrix.
    limit = np.sqrt(6 / (6 + 32))
    values = np.abs(to_numpy(layer.kernel_in))
    assert 0.8 * limit < values.max() <= limit


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_experts": 0}, "num_experts"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"top_k": 5}, "top_k"),
        ({"capacity_factor": 0}, "capacity_factor"),
        ({"capacity_factor": -1.0}, "capacity_factor"),
        ({"router": "hash"}, "router"),
        ({"load_balance_weight": -1}, "load_balance_weight"),
        ({"z_loss_weight": -1}, "z_loss_weight"),
        ({"num_shared_experts": -1}, "num_shared_experts"),
        ({"implementation": "pallas"}, "implementation"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"num_experts": 4, "hidden_dim": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        MixtureOfExperts(**args)


@pytest.mark.skipif(BACKEND == "jax", reason="ragged is available on JAX")
def test_ragged_needs_jax():
    with pytest.raises(ValueError, match="implementation"):
        MixtureOfExperts(4, 8, implementation="ragged")


def test_weight_names_and_capacity_of_a_static_token_count():
    """Weights keep their names (pruning reports and kernel paths key on
    them), and a Python-int token count gives ceil(f * n * k / E) slots."""
    layer = MixtureOfExperts(
        4,
        16,
        router="softmax",
        top_k=2,
        capacity_factor=1.25,
        num_shared_experts=1,
        implementation="reference",
    )
    layer.build((None, 8))
    names = {w.name for w in layer.weights}
    assert {
        "kernel_in",
        "bias_in",
        "kernel_out",
        "bias_out",
        "shared_kernel_in",
        "shared_bias_in",
        "shared_kernel_out",
        "shared_bias_out",
        "dropped_fraction",
    } <= names
    assert layer.capacity(64) == 40  # ceil(1.25 * 64 * 2 / 4)
    assert layer.capacity(3) == 2  # ceil(1.875), within n * k
