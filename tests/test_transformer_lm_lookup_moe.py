"""`TransformerLM(lookup=..., moe=...)`: sparse tables and experts."""

import os
import tempfile

import keras
import numpy as np
import pytest

from keras_efficient.applications import TransformerLM
from keras_efficient.layers import MixtureOfExperts
from keras_efficient.layers import SparseLookupTable
from tests.harness import JIT
from tests.harness import assert_allclose
from tests.harness import to_numpy

SMALL = dict(
    vocabulary_size=32,
    sequence_length=12,
    hidden_dim=16,
    num_layers=2,
    num_heads=2,
)
RNG = np.random.default_rng(0)
IDS = RNG.integers(0, 32, size=(4, 13)).astype("int32")
X, Y = IDS[:, :-1], IDS[:, 1:]


def lm(**kwargs):
    return TransformerLM(**{**SMALL, **kwargs})


def fit_save_load(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=JIT,
    )
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(X, Y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [to_numpy(w) for w in model.trainable_weights]
    unchanged = [
        w.path
        for w, a, b in zip(model.trainable_weights, before, after)
        if np.array_equal(a, b)
    ]
    assert not unchanged, unchanged
    expected = model.predict(X, verbose=0)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "lm.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    assert_allclose(loaded.predict(X, verbose=0), expected, atol=1e-5)
    return loaded


def test_lookup_and_lsh_moe_train_and_save():
    model = lm(lookup=256, moe=4)
    tables = [x for x in model.layers if isinstance(x, SparseLookupTable)]
    assert len(tables) == 1 and tables[0].num_entries == 256
    blocks = [x for x in model.layers if "block" in x.name]
    assert all(isinstance(b.feedforward, MixtureOfExperts) for b in blocks)
    assert blocks[0].feedforward.router == "lsh"
    assert blocks[0].feedforward.hidden_dim == 64
    plain = lm()
    table_params = 256 * 16
    assert model.count_params() > plain.count_params() + table_params
    loaded = fit_save_load(model)
    assert loaded.get_config()["lookup"] == 256
    assert loaded.get_config()["moe"] == 4


def test_bigram_ids_reach_the_table():
    model = lm(lookup={"num_entries": 32 * 32, "token_mapping": "modulo"})
    table = model.get_layer("lookup_table")
    # Same current token, different previous token: different outputs.
    a = np.array([[1, 5] + [0] * 10], "int32")
    b = np.array([[2, 5] + [0] * 10], "int32")
    out_a, out_b = to_numpy(model(a)), to_numpy(model(b))
    assert not np.allclose(out_a[0, 1], out_b[0, 1])
    assert table.token_mapping == "modulo"
    unigram = lm(lookup={"num_entries": 64, "ngram": 1})
    assert unigram.get_layer("lookup_table").num_entries == 64


def test_softmax_moe_adds_balance_losses_and_generates():
    model = lm(moe={"num_experts": 4, "router": "softmax", "top_k": 2})
    model(X)
    assert len(model.losses) == 2  # one per block
    out = model.generate(X[:1, :3], max_new_tokens=2)
    assert out.shape == (1, 5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lookup": 0}, "lookup"),
        ({"lookup": "big"}, "lookup"),
        ({"moe": -2}, "moe"),
        ({"lookup": {"num_entries": 8, "ngram": 3}}, "ngram"),
        ({"lookup": 64, "altup": 2}, "altup"),
        ({"moe": {"num_experts": 2, "top_k": 3}}, "top_k"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lm(**kwargs)


def test_moe_flags_reach_every_block():
    model = lm(
        moe={"num_experts": 4, "router": "softmax"},
        moe_top_k=2,
        moe_z_loss_weight=1e-3,
        moe_num_shared_experts=1,
        moe_load_balance_weight=0.0,
    )
    model(X)
    moes = [
        layer for layer in model._flatten_layers()
        if isinstance(layer, MixtureOfExperts)
    ]
    assert moes and all(
        m.top_k == 2 and m.z_loss_weight == 1e-3 and m.num_shared_experts == 1
        and m.capacity_factor is None
        for m in moes
    )
    assert len(model.losses) == len(moes)  # z-loss only
    config = model.get_config()
    assert config["moe_top_k"] == 2
    clone = model.__class__.from_config(config)
    assert clone.moe_capacity_factor is None


def test_legacy_moe_config_keeps_capacity():
    config = lm(moe=4).get_config()
    del config["moe_capacity_factor"]
    clone = lm().__class__.from_config(config)
    assert clone.moe_capacity_factor == 1.25
