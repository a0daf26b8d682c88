"""Product-key routing of `SparseLookupTable(lookup="router")`."""

import keras
import numpy as np
import pytest
from keras import ops as keras_ops

from keras_efficient.layers import SparseLookupTable
from keras_efficient.layers import product_keys
from keras_efficient.layers.product_keys import blocked_top_k
from keras_efficient.layers.product_keys import product_key_topk
from keras_efficient.layers.product_keys import sub_key_counts
from tests.harness import assert_gradients_reach
from tests.harness import run_layer_test
from tests.harness import to_numpy

RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 5, 8)).astype("float32")


@pytest.mark.parametrize("num_entries, k", [(64, 1), (64, 3), (70, 2), (5, 1)])
def test_product_keys_pick_the_best_entries_of_the_full_grid(num_entries, k):
    n_a, n_b = sub_key_counts(num_entries)
    assert n_a * n_b >= num_entries and n_a * (n_b - 1) < num_entries + n_a
    query = RNG.normal(size=(7, 8)).astype("float32")
    keys_a = RNG.normal(size=(n_a, 4)).astype("float32")
    keys_b = RNG.normal(size=(n_b, 4)).astype("float32")
    index, gates = product_key_topk(query, keys_a, keys_b, k, num_entries)
    full = (query[:, :4] @ keys_a.T)[:, :, None] + (
        query[:, 4:] @ keys_b.T
    )[:, None, :]
    full = full.reshape(7, -1)[:, :num_entries]
    expected = np.argsort(-full, axis=-1)[:, :k]
    np.testing.assert_array_equal(
        np.sort(to_numpy(index), -1), np.sort(expected, -1)
    )
    gates = to_numpy(gates)
    assert np.all(gates > 0) and np.all(gates.sum(-1) <= 1 + 1e-6)


def test_layer_harness_and_gradients():
    def make():
        return SparseLookupTable(
            100, lookup="router", router_type="product_keys", top_k=2, seed=0
        )

    run_layer_test(make, X, expected_output_shape=(2, 5, 8))
    layer = make()
    assert_gradients_reach(layer, X)
    names = {w.path.split("/")[-1] for w in layer.trainable_weights}
    assert {"sub_keys_a", "sub_keys_b", "embeddings"} <= names


def test_auto_uses_product_keys_only_for_large_tables():
    small = SparseLookupTable(4096, lookup="router")
    large = SparseLookupTable(4097, lookup="router")
    assert not small.uses_product_keys and large.uses_product_keys
    large(X)
    # Memory sub-linear in N: no weight has N rows besides the table.
    shapes = [tuple(w.shape) for w in large.weights]
    assert max(s[0] for s in shapes if s != (4097, 8)) < 100


def test_legacy_config_keeps_the_dense_router():
    config = SparseLookupTable(8192, lookup="router").get_config()
    assert config["router_type"] == "auto"
    del config["router_type"]
    clone = SparseLookupTable.from_config(config)
    assert clone.router_type == "dense" and not clone.uses_product_keys


def test_bad_router_type():
    with pytest.raises(ValueError, match="router_type"):
        SparseLookupTable(16, lookup="router", router_type="sorted")


class _CountingOps:
    """`keras.ops` that counts `top_k` calls (monkeypatched into the module)."""

    def __init__(self):
        self.top_k_calls = 0

    def __getattr__(self, name):
        return getattr(keras_ops, name)

    def top_k(self, *args, **kwargs):
        self.top_k_calls += 1
        return keras_ops.top_k(*args, **kwargs)


@pytest.mark.parametrize("shape", [(5, 300), (7, 1024), (3, 257), (4, 255)])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_blocked_top_k_matches_top_k(shape, k, monkeypatch):
    scores = RNG.normal(size=shape).astype("float32")
    # Some rows entirely negative (the padding is -inf, not 0) and one row
    # whose best entries share a block (and lie in the padded last block).
    scores[0] -= 100.0
    scores[-1, -3:] = 50.0 + np.arange(3)
    counting = _CountingOps()
    monkeypatch.setattr(product_keys, "ops", counting)
    got = to_numpy(blocked_top_k(keras_ops.convert_to_tensor(scores), k))
    blocked = shape[1] >= product_keys.BLOCKED_TOP_K_MIN_LENGTH
    assert counting.top_k_calls == (2 if blocked else 1)
    assert got.shape == (shape[0], k) and got.dtype == np.int32
    expected = to_numpy(keras_ops.top_k(scores, k)[1])
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, np.argsort(-scores, axis=-1)[:, :k])


def test_blocked_top_k_with_ties_returns_a_top_set():
    scores = np.zeros((2, 400), "float32")
    scores[:, [3, 17, 200, 399]] = 1.0
    got = to_numpy(blocked_top_k(keras_ops.convert_to_tensor(scores), 3))
    assert np.all(scores[np.arange(2)[:, None], got] == 1.0)
    assert all(len(set(row)) == 3 for row in got.tolist())


def _grads(fn, arrays):
    """Gradients of the scalar `fn(*arrays)` with respect to each array."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.grad(fn, argnums=tuple(range(len(arrays))))(*arrays)
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.Variable(a) for a in arrays]
        with tf.GradientTape() as tape:
            value = fn(*tensors)
        return tape.gradient(value, tensors)
    import torch

    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    fn(*tensors).backward()
    return [t.grad for t in tensors]


def _dense_gates(query, keys_a, keys_b, k):
    """`product_key_topk`'s gates from dense sub-key scores (`N = n_a n_b`)."""
    half = keys_a.shape[-1]
    s_a = keras_ops.matmul(query[:, :half], keras_ops.transpose(keys_a))
    s_b = keras_ops.matmul(query[:, half:], keras_ops.transpose(keys_b))
    k_sub = max(k, 2)
    index_a = keras_ops.top_k(keras_ops.stop_gradient(s_a), k_sub)[1]
    index_b = keras_ops.top_k(keras_ops.stop_gradient(s_b), k_sub)[1]
    top_a = keras_ops.take_along_axis(s_a, index_a, axis=-1)
    top_b = keras_ops.take_along_axis(s_b, index_b, axis=-1)
    scores = keras_ops.reshape(
        keras_ops.expand_dims(top_a, -1) + keras_ops.expand_dims(top_b, -2),
        (-1, k_sub * k_sub),
    )
    return keras_ops.top_k(keras_ops.softmax(scores, axis=-1), k)[0]


@pytest.mark.parametrize("num_sub_keys", [16, 300])
def test_gate_gradients_reach_query_and_sub_keys(num_sub_keys):
    # 300 sub-keys a side take the blocked top-k; N = n_a * n_b exactly.
    num_entries, k = num_sub_keys**2, 2
    query = RNG.normal(size=(6, 8)).astype("float32")
    keys_a = RNG.normal(size=(num_sub_keys, 4)).astype("float32")
    keys_b = RNG.normal(size=(num_sub_keys, 4)).astype("float32")
    weights = keras_ops.convert_to_tensor(
        RNG.normal(size=(6, k)).astype("float32")
    )

    def sparse(q, a, b):
        gates = product_key_topk(q, a, b, k, num_entries)[1]
        return keras_ops.sum(gates * weights)

    def dense(q, a, b):
        return keras_ops.sum(_dense_gates(q, a, b, k) * weights)

    arrays = (query, keys_a, keys_b)
    got = [to_numpy(g) for g in _grads(sparse, arrays)]
    want = [to_numpy(g) for g in _grads(dense, arrays)]
    for name, g, w in zip(("query", "keys_a", "keys_b"), got, want):
        assert np.abs(g).max() > 1e-4, f"no gradient reaches {name}"
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6, err_msg=name)
    # Sparse in the sub-keys: only the picked (at most 6 x 2) rows.
    for g in got[1:]:
        assert np.count_nonzero(np.any(g != 0, axis=1)) <= 6 * 2


def test_blocked_product_keys_fit_with_a_partial_last_batch():
    # 65,536 entries: 256 sub-keys a side take the blocked top-k.
    inputs = keras.Input((5, 4))
    table = SparseLookupTable(
        65536, lookup="router", router_type="product_keys", top_k=2, seed=0
    )
    model = keras.Model(inputs, table(inputs))
    model.compile("adam", "mse", jit_compile=keras.backend.backend() != "torch")
    x = RNG.normal(size=(3, 5, 4)).astype("float32")
    history = model.fit(x, np.zeros_like(x), batch_size=2, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert model.predict(x[:1], verbose=0).shape == (1, 5, 4)
