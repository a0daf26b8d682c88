"""Structural removal: equal outputs for every layer type and coupling."""

import os
import tempfile

import keras
import numpy as np
import pytest

import keras_efficient
from keras_efficient.layers import LaurelResidual
from keras_efficient.pruning.cost import compare_cost
from keras_efficient.pruning.cost import model_cost
from keras_efficient.pruning.masks import compute_masks
from keras_efficient.pruning.shrink import find_groups
from keras_efficient.pruning.shrink import shrink
from keras_efficient.pruning.shrink import zero_units

L = keras.layers


def _randomize(model, seed=0):
    """Random weights everywhere, batch-norm statistics included."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        w = rng.normal(0, 0.3, v.shape).astype("float32")
        if "variance" in v.path:
            w = np.abs(w) + 0.5
        v.assign(w)
    return model


def _x(model, n=4, seed=1):
    rng = np.random.default_rng(seed)
    shape = tuple(model.inputs[0].shape[1:])
    if "int" in str(model.inputs[0].dtype):
        return rng.integers(0, 16, (n,) + shape).astype("int32")
    return rng.random((n,) + shape).astype("float32")


def _assert_same(a, b, x):
    ya = keras.ops.convert_to_numpy(a(x, training=False))
    yb = keras.ops.convert_to_numpy(b(x, training=False))
    np.testing.assert_allclose(ya, yb, atol=1e-5, rtol=0)


def _mlp():
    inputs = keras.Input((6,))
    x = L.Dense(12, activation="relu", name="hidden")(inputs)
    x = L.Dropout(0.1)(x)
    x = L.Dense(8, activation="tanh", name="hidden2")(x)
    return keras.Model(inputs, L.Dense(3, name="out")(x))


def _conv2d():
    inputs = keras.Input((8, 8, 2))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU()(x)
    x = L.MaxPooling2D()(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.SeparableConv2D(6, 3, padding="same", name="sep")(x)
    x = L.Conv2D(6, 1, name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(4, name="out")(x))


def _conv1d_flatten():
    inputs = keras.Input((10, 2))
    x = L.Conv1D(6, 3, activation="relu", name="c1")(inputs)
    x = L.AveragePooling1D(2)(x)
    x = L.Flatten()(x)
    return keras.Model(inputs, L.Dense(3, name="out")(x))


def _residual_concat():
    inputs = keras.Input((5,))
    a = L.Dense(8, name="a")(inputs)
    b = L.Dense(8, activation="relu", name="b")(a)
    s = L.Add(name="add")([a, b])
    c = L.Dense(4, name="c")(inputs)
    x = L.Concatenate(name="cat")([s, c])
    x = L.Dense(6, activation="relu", name="d")(x)
    return keras.Model(inputs, L.Dense(2, name="out")(x))


def _laurel():
    inputs = keras.Input((4, 6))
    x = L.Dense(8, name="x")(inputs)
    fx = L.Dense(8, activation="gelu", name="fx")(x)
    y = LaurelResidual("rw+lr", rank=6, per_dimension=True, name="lr")(x, fx)
    return keras.Model(inputs, L.Dense(3, name="out")(y))


def _embedding_attention():
    inputs = keras.Input((5,), dtype="int32")
    x = L.Embedding(16, 8, name="emb")(inputs)
    h = L.Dense(8, name="proj")(x)
    a = L.MultiHeadAttention(4, 3, name="mha")(h, h)
    x = L.Dense(6, activation="relu", name="ff")(a)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, L.Dense(2, name="out")(x))


def _sequential():
    return keras.Sequential(
        [
            keras.Input((6,)),
            L.Dense(10, activation="relu", name="s1"),
            L.BatchNormalization(name="sbn"),
            L.Dense(3, name="s2"),
        ]
    )


BUILDERS = {
    "mlp": _mlp,
    "conv2d_bn_depthwise_separable": _conv2d,
    "conv1d_flatten": _conv1d_flatten,
    "residual_add_concatenate": _residual_concat,
    "laurel_rw_lr_per_dimension": _laurel,
    "embedding_attention_heads": _embedding_attention,
    "sequential": _sequential,
}


def _separable(depth_multiplier, rank=2):
    """A pruned producer feeds a separable convolution with multiplier m."""

    def build():
        conv, separable = {
            1: (L.Conv1D, L.SeparableConv1D),
            2: (L.Conv2D, L.SeparableConv2D),
        }[rank]
        inputs = keras.Input((6,) * rank + (3,))
        x = conv(8, 3, padding="same", name="c1")(inputs)
        x = L.ReLU()(x)
        x = separable(
            6,
            3,
            depth_multiplier=depth_multiplier,
            padding="same",
            activation="relu",
            name="sep",
        )(x)
        x = L.Flatten()(x)
        return keras.Model(inputs, L.Dense(4, name="out")(x))

    return build


BUILDERS.update(
    {
        "separable2d_depth_multiplier_2": _separable(2),
        "separable2d_depth_multiplier_3": _separable(3),
        "separable1d_depth_multiplier_3": _separable(3, rank=1),
    }
)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_removal_gives_equal_outputs(name):
    model = _randomize(BUILDERS[name]())
    masked = zero_units(model, 0.5)
    small = shrink(masked)
    x = _x(model)
    _assert_same(masked, small, x)
    assert small.count_params() < model.count_params()
    assert isinstance(small, keras.Sequential) == (name == "sequential")


def test_groups_found_by_coupling():
    groups = find_groups(_residual_concat())
    # `a`, `b` and the add are one group; `c` and `d` their own.
    assert groups == {"a": 8, "c": 4, "d": 6}
    assert find_groups(_embedding_attention()) == {
        "emb": 8,
        "proj": 8,
        "mha/heads": 4,
        "mha": 8,
        "ff": 6,
    }


def test_removed_counts_and_argument_untouched():
    model = _randomize(_residual_concat())
    before = [w.copy() for w in model.get_weights()]
    small = shrink(model, ratio=0.5)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert small.get_layer("a").units == 4
    assert small.get_layer("b").units == 4
    assert small.get_layer("c").units == 2
    assert small.get_layer("d").units == 3
    assert small.get_layer("out").units == 2  # outputs stay


def test_channel_zero_in_one_producer_only_is_kept():
    model = _randomize(_residual_concat())
    kernel = model.get_layer("b").kernel
    k = keras.ops.convert_to_numpy(kernel).copy()
    k[:, :3] = 0
    kernel.assign(k)
    model.get_layer("b").bias.assign(np.zeros(8, "float32"))
    small = shrink(model)  # `a` still writes those channels of the add
    assert small.get_layer("a").units == 8


def test_filter_masks_then_shrink():
    """Zero filters with compute_masks (as MagnitudePruning does)."""
    model = _randomize(_mlp())
    for name in ("hidden", "hidden2"):
        layer = model.get_layer(name)
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        mask = compute_masks([kernel], 0.5, "filter")[0]
        layer.kernel.assign(kernel * mask)
        layer.bias.assign(keras.ops.convert_to_numpy(layer.bias) * mask[0])
    small = shrink(model)
    assert small.get_layer("hidden").units == 6
    assert small.get_layer("hidden2").units == 4
    _assert_same(model, small, _x(model))


def test_layer_norm_keeps_its_group_whole():
    inputs = keras.Input((6,))
    x = L.Dense(8, name="a")(inputs)
    x = L.LayerNormalization()(x)
    x = L.Dense(5, activation="relu", name="b")(x)
    model = _randomize(keras.Model(inputs, L.Dense(2)(x)))
    assert find_groups(model) == {"b": 5}
    small = shrink(model, ratio=0.4)
    assert small.get_layer("a").units == 8
    assert small.get_layer("b").units == 3


class _Scale(L.Layer):
    def call(self, x):
        return 2.0 * x


def test_unsupported_layer_is_named():
    inputs = keras.Input((4,))
    x = _Scale(name="my_scale")(L.Dense(4)(inputs))
    model = keras.Model(inputs, x)
    with pytest.raises(ValueError, match="my_scale.*_Scale"):
        shrink(model)


def test_bad_arguments():
    model = _mlp()
    with pytest.raises(ValueError, match="ratio"):
        shrink(model, ratio=1.0)
    with pytest.raises(ValueError, match="importance"):
        shrink(model, ratio=0.5, importance="taylor")
    with pytest.raises(ValueError, match="ratio"):
        shrink(model, ratio={"nope": 0.5})
    with pytest.raises(ValueError, match="model"):
        shrink("model")
    with pytest.raises(TypeError, match="^`model` must be a keras.Model"):
        zero_units("model", 0.5)


def test_fully_zeroed_layer_keeps_one_unit():
    """A layer with every unit zero keeps exactly one (its first)."""
    model = _randomize(_mlp())
    hidden = model.get_layer("hidden")
    hidden.kernel.assign(np.zeros(hidden.kernel.shape, "float32"))
    hidden.bias.assign(np.zeros(hidden.bias.shape, "float32"))
    small = shrink(model)
    assert small.get_layer("hidden").units == 1
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(small.get_layer("hidden2").kernel),
        keras.ops.convert_to_numpy(model.get_layer("hidden2").kernel)[:1],
    )
    _assert_same(model, small, _x(model))


@pytest.mark.parametrize("laurel", [None, "rw", "rw+lr"])
def test_resnet20(laurel):
    model = keras_efficient.applications.ResNet20(
        input_shape=(8, 8, 1), classes=10, laurel=laurel, laurel_rank=4
    )
    model = _randomize(model)
    masked = zero_units(model, 0.5, importance="l2")
    small = shrink(masked)
    _assert_same(masked, small, _x(model))
    assert small.count_params() < 0.3 * model.count_params()
    if laurel == "rw+lr":
        path = os.path.join(tempfile.mkdtemp(), "small.keras")
        small.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        _assert_same(small, loaded, _x(model))


def test_laurel_rank_folded_when_width_drops_below_rank():
    model = _randomize(_laurel())  # rank 6, width 8 -> 4
    masked = zero_units(model, 0.5)
    small = shrink(masked)
    assert small.get_layer("lr").rank == 4
    _assert_same(masked, small, _x(model))


def test_transformer_lm_feedforward_units():
    model = keras_efficient.applications.TransformerLM(
        vocabulary_size=16, sequence_length=8, hidden_dim=8, num_layers=2,
        num_heads=2,
    )  # fmt: skip
    groups = find_groups(model)
    assert groups == {
        "block_0/feedforward_0/up": 32,
        "block_1/feedforward_1/up": 32,
    }
    masked = zero_units(model, 0.5)
    small = shrink(masked)
    x = np.random.default_rng(0).integers(0, 16, (2, 8)).astype("int32")
    _assert_same(masked, small, x)
    assert small.count_params() < model.count_params()
    path = os.path.join(tempfile.mkdtemp(), "lm.keras")
    small.save(path)
    _assert_same(small, keras.saving.load_model(path, safe_mode=True), x)


def test_model_cost_counts():
    model = _mlp()
    cost = model_cost(model)
    assert cost["params"] == model.count_params()
    assert cost["flops"] == 2 * (6 * 12 + 12 * 8 + 8 * 3)
    small = shrink(_randomize(model), ratio=0.5)
    report = compare_cost(model, small, (6,), batch_size=4, rounds=2)
    assert report["params_ratio"] < 1.0
    assert report["flops_ratio"] < 1.0
    assert report["dense"]["latency_median_ms"] > 0


def test_nested_model_with_outputs_of_two_widths():
    """A nested model's second output (another width than its first) feeds
    an elementwise layer: shrink keeps the nested model whole and gives the
    same outputs."""
    inner_in = keras.Input((6,))
    inner = keras.Model(
        inner_in,
        [
            L.Dense(8, name="wide")(inner_in),
            L.Dense(4, name="narrow")(inner_in),
        ],
        name="two_heads",
    )
    inputs = keras.Input((6,))
    wide, narrow = inner(L.Dense(6, activation="relu", name="pre")(inputs))
    narrow = L.BatchNormalization(name="bn")(narrow)
    x = L.Concatenate()([wide, narrow])
    x = L.Dense(10, activation="relu", name="hidden")(x)
    model = _randomize(keras.Model(inputs, L.Dense(2, name="out")(x)))
    small = shrink(model, ratio=0.5)
    assert small.get_layer("hidden").units == 5
    assert small.get_layer("two_heads").get_layer("narrow").units == 4
    _assert_same(model, shrink(model), _x(model))
