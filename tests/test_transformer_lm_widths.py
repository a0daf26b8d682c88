"""Per-layer widths of `TransformerLM` and `shrink`'s `uniform=False`.

`TransformerLM` holds `num_heads` and `intermediate_dim` per block and its
own `head_dim`, so width removal can take heads without hidden channels
and leave each block the width its importance earns. The shrunk model
must compute what the model with the removed units zeroed computes, save
and load as `.keras` with `safe_mode=True`, and old configs (no
`head_dim`) must keep loading.
"""

import os
import tempfile

import keras
import numpy as np
import pytest

from keras_efficient.applications import TransformerLM
from keras_efficient.pruning import shrink
from keras_efficient.pruning import transformer_widths
from keras_efficient.pruning.transformer_units import select_transformer_units
from keras_efficient.pruning.transformer_width import zero_transformer_units

VOCAB, LENGTH = 32, 8


def _lm(**overrides):
    keras.utils.set_random_seed(0)
    config = dict(
        vocabulary_size=VOCAB, sequence_length=LENGTH, hidden_dim=16,
        num_layers=2, num_heads=4, intermediate_dim=32, positions="learned",
    )  # fmt: skip
    config.update(overrides)
    return TransformerLM(**config)


def _ids():
    rng = np.random.default_rng(0)
    return rng.integers(0, VOCAB, (2, LENGTH)).astype("int32")


def _out(model):
    return keras.ops.convert_to_numpy(model(_ids(), training=False))


def _assert_same(actual, expected):
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale)


def _scale_block(model, index, factor):
    """Make block `index`'s units weaker than the other block's."""
    for variable in model.weights:
        if variable.path.startswith(f"block_{index}/") and (
            "norm" not in variable.path
        ):
            variable.assign(variable * factor)


def _round_trip(model):
    path = os.path.join(tempfile.mkdtemp(), "lm.keras")
    model.save(path)
    return keras.saving.load_model(path, safe_mode=True)


def test_per_layer_widths_build_the_blocks_they_name():
    model = _lm(num_heads=[4, 2], head_dim=4, intermediate_dim=[32, 8])
    assert transformer_widths(model) == {
        "ffn": [32, 8],
        "heads": [4, 2],
        "hidden": 16,
    }
    # qkv (16 x 3 * heads * 4), output (heads * 4 x 16), up, down.
    block_0 = 16 * 48 + 16 * 16 + (16 * 32 + 32) + (32 * 16 + 16) + 2 * 16
    block_1 = 16 * 24 + 8 * 16 + (16 * 8 + 8) + (8 * 16 + 16) + 2 * 16
    assert model.get_layer("block_0").count_params() == block_0
    assert model.get_layer("block_1").count_params() == block_1
    config = model.get_config()
    assert config["num_heads"] == [4, 2]
    assert config["intermediate_dim"] == [32, 8]
    assert config["head_dim"] == 4
    loaded = _round_trip(model)
    np.testing.assert_allclose(_out(loaded), _out(model), atol=1e-6)


def test_config_without_head_dim_builds_the_old_model():
    model = _lm()
    config = model.get_config()
    assert config["head_dim"] is None
    del config["head_dim"]  # as saved before the argument existed
    old = TransformerLM.from_config(config)
    old.set_weights(model.get_weights())
    np.testing.assert_allclose(_out(old), _out(model), atol=1e-6)
    assert model.get_layer("block_0").attention.head_dim == 4


def test_heads_go_without_hidden_channels():
    model = _lm()
    plan = select_transformer_units(model, head_ratio=0.5)
    small = shrink(model, head_ratio=0.5)
    assert (small.num_heads, small.head_dim, small.hidden_dim) == (2, 4, 16)
    masked = zero_transformer_units(model, plan)
    assert np.abs(_out(masked) - _out(model)).max() > 1e-3
    _assert_same(_out(small), _out(masked))


def test_uniform_false_gives_each_layer_the_width_its_scores_earn():
    model = _lm()
    _scale_block(model, 1, 0.1)
    plan = select_transformer_units(
        model, ffn_ratio=0.5, head_ratio=0.5, uniform=False
    )
    # The same share of each axis goes in total, mostly from block 1.
    kept_ffn = [len(k) for k in plan["ffn"]]
    kept_heads = [len(k) for k in plan["heads"]]
    assert sum(kept_ffn) == 32 and kept_ffn[0] > kept_ffn[1] >= 1
    assert sum(kept_heads) == 4 and kept_heads[0] > kept_heads[1] >= 1
    small = shrink(model, ffn_ratio=0.5, head_ratio=0.5, uniform=False)
    assert isinstance(small, TransformerLM)
    assert small.intermediate_dim == kept_ffn
    assert small.num_heads == kept_heads
    assert transformer_widths(small)["ffn"] == kept_ffn
    masked = zero_transformer_units(model, plan)
    assert np.abs(_out(masked) - _out(model)).max() > 1e-3
    _assert_same(_out(small), _out(masked))
    assert small.count_params() < model.count_params()
    loaded = _round_trip(small)
    assert loaded.intermediate_dim == kept_ffn
    np.testing.assert_allclose(_out(loaded), _out(small), atol=1e-6)
    # Uniform (the default) removes the same share of every layer.
    even = shrink(model, ffn_ratio=0.5, head_ratio=0.5)
    assert (even.intermediate_dim, even.num_heads) == (16, 2)


def test_uniform_false_follows_the_given_scores():
    model = _lm()
    ffn = [np.full(32, 1.0), np.linspace(0.0, 2.0, 32)]
    plan = select_transformer_units(
        model, ffn_ratio=0.5, scores={"ffn": ffn}, uniform=False
    )
    # Each block's best is reserved, then the 30 best of the rest: block
    # 1's scores above 1, then block 0's ties in order.
    np.testing.assert_array_equal(plan["ffn"][1], np.arange(16, 32))
    np.testing.assert_array_equal(plan["ffn"][0], np.arange(16))


def test_zeroed_units_of_different_counts_per_layer_are_removed():
    model = _lm()
    removed = {0: [1, 2, 3], 1: [0, 5, 6, 7, 9]}
    for variable in model.weights:
        path = variable.path
        for index, units in removed.items():
            value = keras.ops.convert_to_numpy(variable).copy()
            if path.startswith(f"block_{index}/feedforward_{index}/up"):
                value[..., units] = 0
            elif path == f"block_{index}/feedforward_{index}/down/kernel":
                value[units] = 0
            else:
                continue
            variable.assign(value)
    small = shrink(model)
    assert isinstance(small, TransformerLM)
    assert small.intermediate_dim == [29, 27]
    _assert_same(_out(small), _out(model))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_heads=[4, 2]), "head_dim"),
        (dict(num_heads=[4, 2, 2], head_dim=4), "num_heads"),
        (dict(num_heads=[4, 0], head_dim=4), "num_heads"),
        (dict(intermediate_dim=[32]), "intermediate_dim"),
        (dict(intermediate_dim="wide"), "intermediate_dim"),
        (dict(head_dim=0), "head_dim"),
        (dict(num_heads=3), "hidden_dim"),
    ],
)
def test_bad_widths_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        _lm(**kwargs)


def test_uniform_false_is_refused_where_the_config_cannot_hold_it():
    inputs = keras.Input((4,))
    dense = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="uniform"):
        shrink(dense, uniform=False)
    with pytest.raises(ValueError, match="uniform"):
        shrink(_lm(), ratio=0.5, uniform="no")
