"""Tests of `keras_efficient.layers.SparseLookupTable`."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_efficient.layers import SparseLookupTable
from tests.harness import BACKEND
from tests.harness import assert_allclose
from tests.harness import assert_gradients_reach
from tests.harness import run_layer_test
from tests.harness import to_numpy

RNG = np.random.default_rng(0)
X = RNG.normal(size=(4, 6, 8)).astype("float32")
IDS = RNG.integers(0, 1000, size=(4, 6)).astype("int32")


def _table(layer):
    return to_numpy(layer.embeddings)


@pytest.mark.parametrize(
    "kwargs, with_ids, width",
    [
        ({"lookup": "token_id"}, True, 8),
        (
            {
                "lookup": "token_id",
                "token_mapping": "hash",
                "dim": 4,
                "consume": "concat",
            },
            True,
            12,
        ),
        ({"lookup": "lsh", "num_tables": 2, "seed": 0}, False, 8),
        (
            {"lookup": "router", "top_k": 2, "dim": 3, "consume": "concat"},
            False,
            11,
        ),
    ],
)
def test_harness(kwargs, with_ids, width):
    inputs = (X, IDS) if with_ids else X
    run_layer_test(
        lambda: SparseLookupTable(64, **kwargs),
        inputs,
        expected_output_shape=(4, 6, width),
    )


def test_token_id_modulo_matches_numpy():
    layer = SparseLookupTable(64, lookup="token_id")
    out = layer(X, IDS)
    assert_allclose(out, X + _table(layer)[IDS % 64])


def test_token_id_hash_matches_numpy_and_spreads():
    layer = SparseLookupTable(
        97, dim=5, lookup="token_id", token_mapping="hash", consume="concat"
    )
    out = to_numpy(layer(X, IDS))
    mixed = (IDS.astype(np.int64) * -1640531535) & 0xFFFFFFFF
    mixed = np.where(mixed >= 2**31, mixed - 2**32, mixed)
    index = np.mod(mixed, 97)
    np.testing.assert_allclose(out[..., :8], X)
    np.testing.assert_allclose(out[..., 8:], _table(layer)[index], atol=1e-6)
    # Consecutive ids land in many different rows.
    ids = np.arange(97, dtype="int32")[None]
    rows = to_numpy(layer.entry_indices(np.zeros((1, 97, 8)), ids)[0])
    assert len(np.unique(rows)) > 50


def test_token_id_direct_checks_range():
    layer = SparseLookupTable(16, lookup="token_id", token_mapping="direct")
    ids = np.array([[0, 15]], "int32")
    x = np.zeros((1, 2, 8), "float32")
    assert_allclose(layer(x, ids), _table(layer)[[0, 15]][None])
    with pytest.raises(ValueError, match="token_ids"):
        layer(x, np.array([[0, 16]], "int32"))
    with pytest.raises(ValueError, match="token_ids"):
        layer(x, np.array([[-1, 3]], "int32"))


def test_lsh_sums_one_row_per_table():
    layer = SparseLookupTable(64, lookup="lsh", num_tables=4, seed=1)
    out = to_numpy(layer(X))
    assert layer.hash.num_bits == 4  # 2**4 rows per table
    buckets = to_numpy(layer.hash(X))
    rows = buckets + 16 * np.arange(4)
    assert rows.min() >= 0 and rows.max() < 64
    expected = X + _table(layer)[rows].sum(-2)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_lsh_folds_buckets_into_rows():
    layer = SparseLookupTable(
        30, lookup="lsh", num_tables=3, num_bits=6, seed=1
    )
    buckets = to_numpy(layer.hash(X))
    rows = np.mod(buckets, 10) + 10 * np.arange(3)
    out = to_numpy(layer(X))
    expected = X + _table(layer)[rows].sum(-2)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_router_gates_are_softmax_probabilities():
    layer = SparseLookupTable(32, lookup="router", top_k=3)
    out = to_numpy(layer(X))
    logits = to_numpy(layer.router(X)).astype("float64")
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    top = np.argsort(-probs, axis=-1)[..., :3]
    gates = np.take_along_axis(probs, top, -1)
    expected = X + (gates[..., None] * _table(layer)[top]).sum(-2)
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("lookup", ["router", "lsh"])
def test_gradients_reach_table_and_router(lookup):
    layer = SparseLookupTable(32, lookup=lookup, seed=0)
    assert_gradients_reach(layer, X)
    names = {w.path.split("/")[-1] for w in layer.trainable_weights}
    assert "embeddings" in names
    if lookup == "router":
        assert "kernel" in names


def test_table_is_one_weight_with_entries_first():
    layer = SparseLookupTable(1024, dim=4, lookup="token_id", consume="concat")
    layer(X, IDS)
    assert [tuple(w.shape) for w in layer.trainable_weights] == [(1024, 4)]
    assert layer.count_params() == 4096


def test_only_read_rows_get_gradient():
    layer = SparseLookupTable(64, lookup="token_id")
    ids = np.array([[1, 5, 5]], "int32")
    x = np.ones((1, 3, 8), "float32")
    layer(x, ids)
    if BACKEND == "jax":
        import jax

        def loss(table):
            with keras.StatelessScope(
                state_mapping=[(layer.embeddings, table)]
            ):
                return ops.sum(layer(x, ids))

        grad = np.asarray(jax.grad(loss)(layer.embeddings.value))
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = ops.sum(layer(x, ids))
        grad = ops.convert_to_numpy(
            tf.convert_to_tensor(tape.gradient(loss, layer.embeddings.value))
        )
    else:
        loss = ops.sum(layer(x, ids))
        loss.backward()
        grad = layer.embeddings.value.grad.numpy()
    rows = np.flatnonzero(np.abs(grad).sum(-1))
    np.testing.assert_array_equal(rows, [1, 5])
    np.testing.assert_allclose(grad[5], 2 * np.ones(8))


def test_config_round_trip_keeps_arguments():
    layer = SparseLookupTable(
        128,
        dim=4,
        lookup="lsh",
        consume="concat",
        num_tables=2,
        num_bits=7,
        seed=3,
    )
    clone = SparseLookupTable.from_config(layer.get_config())
    for name in (
        "num_entries",
        "dim",
        "lookup",
        "consume",
        "num_tables",
        "num_bits",
        "top_k",
        "token_mapping",
        "seed",
    ):
        assert getattr(clone, name) == getattr(layer, name)
    expected = layer(X)
    clone(X)
    clone.set_weights(layer.get_weights())
    assert_allclose(clone(X), expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_entries": 0}, "num_entries"),
        ({"num_entries": 8, "top_k": 9, "lookup": "router"}, "top_k"),
        ({"num_entries": 8, "lookup": "hash"}, "lookup"),
        ({"num_entries": 8, "consume": "expert"}, "consume"),
        ({"num_entries": 8, "lookup": "lsh", "num_tables": 3}, "num_tables"),
        ({"num_entries": 8, "lookup": "lsh", "num_bits": 31}, "num_bits"),
        ({"num_entries": 8, "token_mapping": "mod"}, "token_mapping"),
        ({"num_entries": 8, "dim": 0}, "dim"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparseLookupTable(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="dim"):
        SparseLookupTable(8, dim=4, consume="add", lookup="router")(X)
    with pytest.raises(ValueError, match="token_ids"):
        SparseLookupTable(8, lookup="token_id")(X)


def test_initializers_and_sublayer_names():
    """Default table init is N(0, 0.02) and a given initializer is used;
    product sub-keys are N(0, 1/32); the dense router keeps its name (its
    kernel path is what pruning and reports key on)."""
    table = SparseLookupTable(4096, dim=16, lookup="token_id", seed=0)
    table.build((None, None, 16))
    std = to_numpy(table.embeddings).std()
    assert 0.018 < std < 0.022, std
    zeros = SparseLookupTable(
        8, lookup="token_id", embeddings_initializer="zeros"
    )
    zeros.build((None, None, 8))
    assert not to_numpy(zeros.embeddings).any()
    routed = SparseLookupTable(64, lookup="router", router_type="dense")
    routed.build((None, None, 8))
    assert routed.router.name == "router"
    keyed = SparseLookupTable(
        4096, lookup="router", router_type="product_keys", seed=0
    )
    keyed.build((None, None, 8))
    for keys in (keyed.sub_keys_a, keyed.sub_keys_b):
        assert 0.9 < to_numpy(keys).std() * 32**0.5 < 1.1


def test_token_ids_as_a_functional_input():
    tokens = keras.Input((None,), dtype="int32")
    features = keras.Input((None, 8))
    out = SparseLookupTable(16, lookup="token_id")(features, tokens)
    model = keras.Model([features, tokens], out)
    ids = np.array([[1, 20]], "int32")
    x = np.zeros((1, 2, 8), "float32")
    assert to_numpy(model([x, ids])).shape == (1, 2, 8)
