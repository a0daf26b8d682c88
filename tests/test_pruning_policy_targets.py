"""Per-layer targets (`layer_sparsity`), e.g. from `sparsity_policy`."""

import keras
import numpy as np
import pytest

from keras_efficient.callbacks import MagnitudePruning
from keras_efficient.pruning import ConstantSparsity
from keras_efficient.pruning import PolynomialDecay
from tests.callback_harness import assert_config_round_trip
from tests.callback_harness import dense_classifier
from tests.callback_harness import fit

JIT = keras.backend.backend() != "torch"


def _model(seed=0):
    return dense_classifier(hidden=(16, 8), seed=seed, names=("a", "b", "c"))


def _sparsity(model, name):
    w = keras.ops.convert_to_numpy(model.get_layer(name).kernel)
    return float(np.mean(w == 0))


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantSparsity(0.5, begin_step=1, frequency=1),
        PolynomialDecay(0.0, 0.5, begin_step=1, end_step=6, frequency=1),
    ],
)
def test_each_layer_reaches_its_own_sparsity(schedule):
    model = _model()
    cb = MagnitudePruning(
        schedule, layer_sparsity={"a": 0.75, "b": 0.25, "c": 0.0}
    )
    fit(model, [cb])
    assert _sparsity(model, "a") == pytest.approx(0.75, abs=1e-6)
    assert _sparsity(model, "b") == pytest.approx(0.25, abs=1e-6)
    assert _sparsity(model, "c") == 0.0


def test_unnamed_layers_follow_the_schedule():
    model = _model()
    cb = MagnitudePruning(
        ConstantSparsity(0.5, begin_step=1, frequency=2),
        layer_sparsity={"a": 0.875},
    )
    fit(model, [cb])
    assert _sparsity(model, "a") == pytest.approx(0.875, abs=1e-6)
    assert _sparsity(model, "b") == pytest.approx(0.5, abs=1e-6)
    assert _sparsity(model, "c") == pytest.approx(0.5, abs=1e-6)


def test_filter_structure_per_layer():
    model = _model()
    cb = MagnitudePruning(
        ConstantSparsity(0.5, begin_step=1, frequency=1),
        structure="filter",
        layer_sparsity={"a": 0.75, "b": 0.0},
    )
    fit(model, [cb], epochs=1)
    w = keras.ops.convert_to_numpy(model.get_layer("a").kernel)
    assert int(np.sum(np.all(w == 0, axis=0))) == 12
    assert _sparsity(model, "b") == 0.0


def test_unknown_names_list_the_valid_ones():
    model = _model()
    cb = MagnitudePruning(
        ConstantSparsity(0.5, begin_step=1), layer_sparsity={"nope": 0.5}
    )
    with pytest.raises(
        ValueError, match=r"nope.*Valid names: \['a', 'b', 'c'\]"
    ):
        fit(model, [cb], epochs=1)


def test_invalid_arguments():
    s = ConstantSparsity(0.5, begin_step=1)
    with pytest.raises(ValueError, match="scope='layer'"):
        MagnitudePruning(s, scope="global", layer_sparsity={"a": 0.5})
    with pytest.raises(ValueError, match="n_m"):
        MagnitudePruning(s, n_m=(2, 4), layer_sparsity={"a": 0.5})
    with pytest.raises(ValueError, match="peak_sparsity"):
        MagnitudePruning(ConstantSparsity(0.0), layer_sparsity={"a": 0.5})
    with pytest.raises((ValueError, TypeError)):
        MagnitudePruning(s, layer_sparsity={"a": 1.0})
    with pytest.raises((ValueError, TypeError)):
        MagnitudePruning(s, layer_sparsity=[("a", 0.5)])


def test_config_round_trip():
    cb = MagnitudePruning(
        PolynomialDecay(0.0, 0.8, begin_step=0, end_step=10),
        layer_sparsity={"a": 0.4, "b": 0.0},
    )
    back = assert_config_round_trip(cb)
    assert back.layer_sparsity == {"a": 0.4, "b": 0.0}
    # A callable cannot be serialised: get_config says so, never drops it.
    with_callable = MagnitudePruning(
        ConstantSparsity(0.5), targets=lambda layer: layer.name == "a"
    )
    with pytest.raises(ValueError, match="callable `targets`"):
        with_callable.get_config()
    names = MagnitudePruning(ConstantSparsity(0.5), targets=("a", "b"))
    assert assert_config_round_trip(names).targets == ["a", "b"]
    plain = MagnitudePruning.from_config(
        MagnitudePruning(ConstantSparsity(0.5)).get_config()
    )
    assert plain.layer_sparsity is None


def _conv_model(kind):
    keras.utils.set_random_seed(0)
    layers = [
        keras.layers.Conv2D(8, 3, padding="same", name="c1"),
        keras.layers.BatchNormalization(name="bn1"),
        keras.layers.ReLU(),
        keras.layers.Conv2D(8, 3, padding="same", name="c2"),
        keras.layers.BatchNormalization(name="bn2"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, name="head"),
    ]
    if kind == "sequential":
        return keras.Sequential([keras.Input((6, 6, 3))] + layers)
    inputs = keras.Input((6, 6, 3))
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_filter_pruning_zeroes_following_batch_norm_for_shrink(kind):
    from keras_efficient.pruning import shrink
    from keras_efficient.pruning import strip_pruning

    model = _conv_model(kind)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=JIT,
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6, 6, 3)).astype("float32")
    y = rng.integers(0, 3, size=(32,))
    cb = MagnitudePruning(
        ConstantSparsity(0.5, begin_step=1, frequency=1),
        structure="filter",
        targets=["c1", "c2"],
    )
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[cb])
    for conv, bn in (("c1", "bn1"), ("c2", "bn2")):
        k = keras.ops.convert_to_numpy(model.get_layer(conv).kernel)
        pruned = np.all(k.reshape(-1, k.shape[-1]) == 0, axis=0)
        assert int(pruned.sum()) == 4
        for name in ("gamma", "beta"):
            w = keras.ops.convert_to_numpy(getattr(model.get_layer(bn), name))
            assert np.all(w[pruned] == 0) and np.all(w[~pruned] != 0)
    stripped = strip_pruning(model)
    small = shrink(stripped)
    assert small.get_layer("c1").kernel.shape[-1] == 4
    assert small.get_layer("c2").kernel.shape[-1] == 4
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(small(x[:4], training=False)),
        keras.ops.convert_to_numpy(stripped(x[:4], training=False)),
        atol=1e-4,
    )


def _gpt2():
    hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = hub.models.GPT2Backbone(
        vocabulary_size=32, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=8,
    )  # fmt: skip
    return hub.models.GPT2CausalLM(backbone, preprocessor=None)


def _kernel_sparsity(model, path):
    (kernel,) = [v for v in model.weights if v.path == path]
    return float(np.mean(keras.ops.convert_to_numpy(kernel) == 0))


def test_kernel_paths_address_kernels_inside_a_keras_hub_backbone():
    from keras_efficient.pruning import sparsity_report

    model = _gpt2()
    query_0 = "transformer_layer_0/self_attention/query/kernel"
    query_1 = "transformer_layer_1/self_attention/query/kernel"
    cb = MagnitudePruning(
        ConstantSparsity(0.5, begin_step=0, frequency=1),
        layer_sparsity={
            query_0: 0.75,  # a `variable.path`, as reports key kernels
            # ... with the backbone's name in front, as users write it
            "gpt2_backbone/" + query_1: 0.0,
            # a layer path: both kernels of this one layer
            "transformer_layer_1/feedforward_output_dense": 0.25,
        },
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 32, (16, 8)).astype("int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    fit(
        model, [cb], data=(x, np.roll(ids, -1, axis=1)), epochs=1,
        batch_size=8,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )  # fmt: skip
    assert _kernel_sparsity(model, query_0) == 0.75
    assert _kernel_sparsity(model, query_1) == 0.0
    ffn_out = "transformer_layer_1/feedforward_output_dense/kernel"
    assert _kernel_sparsity(model, ffn_out) == 0.25
    key_0 = "transformer_layer_0/self_attention/key/kernel"
    assert _kernel_sparsity(model, key_0) == 0.5  # not named: the schedule
    report = sparsity_report(model, targets=[query_0, "gpt2_backbone/" + key_0])
    assert set(report["layers"]) == {query_0, key_0}
    assert report["layers"][query_0]["sparsity"] == 0.75


def test_an_unknown_kernel_path_is_named_with_valid_paths():
    model = _gpt2()
    bad = "transformer_layer_7/self_attention/query/kernel"
    cb = MagnitudePruning(
        ConstantSparsity(0.5, begin_step=0), layer_sparsity={bad: 0.5}
    )
    x = {"token_ids": np.zeros((8, 8), "int32"),
         "padding_mask": np.ones((8, 8), "int32")}  # fmt: skip
    with pytest.raises(ValueError) as info:
        fit(
            model, [cb], data=(x, np.zeros((8, 8), "int32")), epochs=1,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )  # fmt: skip
    message = str(info.value)
    assert "layer_sparsity" in message and bad in message
    assert "transformer_layer_0/self_attention/query/kernel" in message
