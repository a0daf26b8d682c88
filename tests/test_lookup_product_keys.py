"""Product-key routing of `SparseLookupTable(lookup="router")`."""

import numpy as np
import pytest

from keras_efficient.layers import SparseLookupTable
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
