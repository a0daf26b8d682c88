"""Transformer width removal: feed-forward neurons, heads, hidden channels.

Tiny random-init keras-hub tasks (no preset, nothing downloaded) and the
package's `TransformerLM`. Removing neurons or heads must compute what the
model with those units zeroed computes; removing hidden channels must copy
exactly the kept slices into the same class built from a smaller config.
"""

import os
import tempfile

import keras
import numpy as np
import pytest

from keras_efficient.applications import TransformerLM
from keras_efficient.pruning import select_transformer_units
from keras_efficient.pruning import shrink
from keras_efficient.pruning import shrink_transformer
from keras_efficient.pruning import transformer_widths
from keras_efficient.pruning import zero_transformer_units

keras_hub = pytest.importorskip("keras_hub")
hub = keras_hub.models

VOCAB, LENGTH = 64, 8
GQA = dict(num_query_heads=4, num_key_value_heads=2)


def _gpt2():
    backbone = hub.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=16,
    )  # fmt: skip
    return hub.GPT2CausalLM(backbone, preprocessor=None)


def _bert():
    backbone = hub.BertBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=16,
    )  # fmt: skip
    model = hub.BertTextClassifier(backbone, num_classes=3, preprocessor=None)
    # BERT's initial weights (std 0.02) leave the classifier's logits
    # nearly blind to any one neuron; larger ones let a removal show.
    rng = np.random.default_rng(1)
    for v in model.weights:
        if v.path.endswith("kernel"):
            v.assign(rng.normal(0, 0.3, v.shape).astype("float32"))
    return model


def _llama():
    backbone = hub.LlamaBackbone(
        vocabulary_size=VOCAB, num_layers=2, hidden_dim=16,
        intermediate_dim=32, **GQA,
    )  # fmt: skip
    return hub.LlamaCausalLM(backbone, preprocessor=None)


def _gemma():
    backbone = hub.GemmaBackbone(
        vocabulary_size=VOCAB, num_layers=2, hidden_dim=16,
        intermediate_dim=32, head_dim=8, **GQA,
    )  # fmt: skip
    return hub.GemmaCausalLM(backbone, preprocessor=None)


def _mistral():
    backbone = hub.MistralBackbone(
        vocabulary_size=VOCAB, num_layers=2, hidden_dim=16,
        intermediate_dim=32, **GQA,
    )  # fmt: skip
    return hub.MistralCausalLM(backbone, preprocessor=None)


def _qwen3():
    backbone = hub.Qwen3Backbone(
        vocabulary_size=VOCAB, num_layers=2, hidden_dim=16,
        intermediate_dim=32, head_dim=8, **GQA,
    )  # fmt: skip
    return hub.Qwen3CausalLM(backbone, preprocessor=None)


def _lm():
    return TransformerLM(
        vocabulary_size=VOCAB, sequence_length=LENGTH, hidden_dim=16,
        num_layers=2, num_heads=4, intermediate_dim=32, positions="learned",
    )  # fmt: skip


BUILDERS = {
    "gpt2": _gpt2,
    "bert": _bert,
    "llama": _llama,
    "gemma": _gemma,
    "mistral": _mistral,
    "qwen3": _qwen3,
    "transformer_lm": _lm,
}
SLOW = ("mistral", "qwen3")
# Families whose config holds the head size: heads go alone.
HEADS_ALONE = ("gemma", "mistral", "qwen3")


def _families(names):
    return [
        pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
        for n in names
    ]


def _inputs(name):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, (2, LENGTH)).astype("int32")
    if name == "transformer_lm":
        return ids
    x = {"token_ids": ids, "padding_mask": np.ones((2, LENGTH), "int32")}
    if name == "bert":
        x["segment_ids"] = np.zeros((2, LENGTH), "int32")
    return x


def _out(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _assert_same(actual, expected):
    """Equal to float rounding, relative to the outputs' scale (BERT's
    classifier logits are ~1e-3 at init)."""
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * scale)


def _assert_differs(actual, expected):
    """The masking changed the outputs (so the equality above can fail)."""
    scale = float(np.abs(expected).max())
    assert float(np.abs(actual - expected).max()) > 1e-3 * scale


def _backbone(model):
    return getattr(model, "backbone", model)


def _reference_params(model, **fields):
    """Parameters of the same class built independently from `fields`."""
    config = dict(_backbone(model).get_config())
    config.update(fields)
    return type(_backbone(model)).from_config(config).count_params()


@pytest.mark.parametrize("name", _families(BUILDERS))
def test_feedforward_removal_equals_masked_model(name):
    model = BUILDERS[name]()
    x = _inputs(name)
    plan = select_transformer_units(model, ffn_ratio=0.5)
    small = shrink(model, ffn_ratio=0.5)
    masked = zero_transformer_units(model, plan)
    assert type(small) is type(model)
    _assert_differs(_out(masked, x), _out(model, x))
    _assert_same(_out(small, x), _out(masked, x))
    width = transformer_widths(model)["ffn"][0]
    assert transformer_widths(small)["ffn"] == [width // 2] * 2
    field = _backbone(model).get_config()["intermediate_dim"] // 2
    assert small.count_params() < model.count_params()
    if hasattr(model, "backbone"):
        assert small.backbone.count_params() == _reference_params(
            model, intermediate_dim=field
        )


@pytest.mark.parametrize("name", _families(HEADS_ALONE))
def test_head_removal_equals_masked_model(name):
    model = BUILDERS[name]()
    x = _inputs(name)
    plan = select_transformer_units(model, head_ratio=0.5)
    small = shrink(model, head_ratio=0.5)
    masked = zero_transformer_units(model, plan)
    _assert_differs(_out(masked, x), _out(model, x))
    _assert_same(_out(small, x), _out(masked, x))
    config = small.backbone.get_config()
    # One of two key / value groups goes, with its two query heads.
    assert config["num_key_value_heads"] == 1
    assert config["num_query_heads"] == 2
    assert config["head_dim"] == 16 // 4 if name == "mistral" else 8
    assert small.backbone.count_params() == _reference_params(
        model, num_query_heads=2, num_key_value_heads=1,
        head_dim=config["head_dim"],
    )  # fmt: skip


@pytest.mark.parametrize(
    "name, field",
    [("gpt2", "num_heads"), ("bert", "num_heads"),
     ("llama", "num_query_heads")],
)  # fmt: skip
# (`TransformerLM` has its own `head_dim`: test_transformer_lm_widths.py.)
def test_inexpressible_axes_raise(name, field):
    model = BUILDERS[name]()
    with pytest.raises(ValueError, match=f"head_ratio.*{field}"):
        shrink(model, head_ratio=0.5)
    with pytest.raises(ValueError, match="hidden_ratio.*hidden_dim"):
        shrink(model, hidden_ratio=0.5)
    with pytest.raises(ValueError, match="hidden_ratio"):
        shrink(model, head_ratio=0.5, hidden_ratio=0.25)


def _kept_heads(groups, group_size):
    return (groups[:, None] * group_size + np.arange(group_size)).ravel()


@pytest.mark.parametrize(
    "name",
    ["gpt2", pytest.param("llama", marks=pytest.mark.slow),
     "gemma", "transformer_lm"],
)  # fmt: skip
def test_hidden_removal_copies_the_kept_slices(name):
    model = BUILDERS[name]()
    plan = select_transformer_units(model, ratio=0.5)
    small = shrink_transformer(model, plan)
    hidden = plan["hidden"]
    assert len(hidden) == 8
    old = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    new = {v.path: keras.ops.convert_to_numpy(v) for v in small.weights}
    np.testing.assert_array_equal(
        new["token_embedding/embeddings"],
        old["token_embedding/embeddings"][:, hidden],
    )
    ffn = plan["ffn"][1]
    heads = plan["heads"][1]
    if name == "transformer_lm":
        up, down = "block_1/feedforward_1/up", "block_1/feedforward_1/down"
        np.testing.assert_array_equal(
            new[f"{up}/kernel"], old[f"{up}/kernel"][hidden][:, ffn]
        )
        np.testing.assert_array_equal(new[f"{up}/bias"], old[f"{up}/bias"][ffn])
        np.testing.assert_array_equal(
            new[f"{down}/kernel"], old[f"{down}/kernel"][ffn][:, hidden]
        )
        qkv = old["block_1/attention/qkv/kernel"].reshape(16, 3, 4, 4)
        np.testing.assert_array_equal(
            new["block_1/attention/qkv/kernel"],
            qkv[hidden][:, :, heads].reshape(8, -1),
        )
        np.testing.assert_array_equal(
            new["final_norm/scale"], old["final_norm/scale"][hidden]
        )
        assert small.hidden_dim == 8 and small.num_heads == 2
        return
    layer = (
        "decoder_block_1/attention" if name == "gemma"
        else "transformer_layer_1/self_attention"
    )  # fmt: skip
    group_size = 2 if name != "gpt2" else 1
    q_heads = _kept_heads(heads, group_size)
    query = old[f"{layer}/query/kernel"]
    key = old[f"{layer}/key/kernel"]
    if name == "gemma":  # (heads, hidden, head_dim)
        expected_q, expected_k = (
            query[q_heads][:, hidden],
            key[heads][:, hidden],
        )
    else:  # (hidden, heads, head_dim)
        expected_q, expected_k = (
            query[hidden][:, q_heads],
            key[hidden][:, heads],
        )
    np.testing.assert_array_equal(new[f"{layer}/query/kernel"], expected_q)
    np.testing.assert_array_equal(new[f"{layer}/key/kernel"], expected_k)
    output = old[f"{layer}/attention_output/kernel"]
    np.testing.assert_array_equal(
        new[f"{layer}/attention_output/kernel"], output[q_heads][:, :, hidden]
    )
    if name == "llama":
        np.testing.assert_array_equal(
            new["transformer_layer_1/feedforward_gate_dense/kernel"],
            old["transformer_layer_1/feedforward_gate_dense/kernel"][hidden][
                :, ffn
            ],
        )
        np.testing.assert_array_equal(
            new["token_embedding/reverse_embeddings"],
            old["token_embedding/reverse_embeddings"][hidden],
        )
    config = small.backbone.get_config()
    assert config["hidden_dim"] == 8
    assert small.backbone.count_params() == _reference_params(
        model, **{k: config[k] for k in config if k != "name"}
    )
    assert small.count_params() < 0.5 * model.count_params()


@pytest.mark.parametrize(
    "name",
    ["gpt2", pytest.param("llama", marks=pytest.mark.slow), "transformer_lm"],
)
def test_keras_round_trip_safe_mode(name):
    model = BUILDERS[name]()
    small = shrink(model, ratio=0.5)
    x = _inputs(name)
    path = os.path.join(tempfile.mkdtemp(), f"{name}.keras")
    small.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(_out(loaded, x), _out(small, x), atol=1e-6)


def test_one_call_ratio_reduces_every_expressible_axis():
    model = _gemma()
    small = shrink(model, ratio=0.5)
    config = small.backbone.get_config()
    assert config["intermediate_dim"] == 16
    assert config["num_key_value_heads"] == 1
    assert config["num_query_heads"] == 2
    assert config["hidden_dim"] == 8
    assert config["head_dim"] == 8
    lm = shrink(_lm(), ratio=0.5)
    assert isinstance(lm, TransformerLM)
    assert (lm.hidden_dim, lm.num_heads, lm.intermediate_dim) == (8, 2, 16)


def test_scores_choose_the_units():
    model = _llama()
    ffn = [np.arange(32.0), -np.arange(32.0)]
    heads = [np.array([0.0, 1.0]), np.array([1.0, 0.0, 0.0, 0.0])]
    plan = select_transformer_units(
        model, ffn_ratio=0.5, scores={"ffn": ffn, "heads": heads}
    )
    np.testing.assert_array_equal(plan["ffn"][0], np.arange(16, 32))
    np.testing.assert_array_equal(plan["ffn"][1], np.arange(16))
    plan = select_transformer_units(model, ratio=0.5, scores={"heads": heads})
    # Per query head (4) summed per key / value group (2).
    assert [list(p) for p in plan["heads"]] == [[1], [0]]


def test_zeroed_units_are_removed_without_ratio():
    model = _llama()
    for i in range(2):
        layer = f"transformer_layer_{i}/feedforward"
        for v in model.weights:
            value = keras.ops.convert_to_numpy(v).copy()
            if v.path.startswith(f"{layer}_output_dense"):
                value[[3, 5 + i]] = 0
            elif v.path.startswith(layer) and "norm" not in v.path:
                value[:, [3, 5 + i]] = 0
            else:
                continue
            v.assign(value)
    small = shrink(model)
    assert small.backbone.get_config()["intermediate_dim"] == 30
    x = _inputs("llama")
    _assert_same(_out(small, x), _out(model, x))


def _non_transformer():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: shrink(m, ratio=1.0), "ratio"),
        (lambda m: shrink(m, ffn_ratio="half"), "ffn_ratio"),
        (lambda m: shrink(m, head_ratio=-0.1), "head_ratio"),
        (lambda m: shrink(m, importance="bn_scale", ratio=0.5), "importance"),
        (lambda m: shrink(m, scores={"neurons": []}), "scores"),
        (lambda m: shrink(m, scores={"ffn": [np.ones(32)]}), "scores"),
        (
            lambda m: shrink(m, scores={"ffn": [np.ones(31), np.ones(32)]}),
            r"scores\['ffn'\]\[0\]",
        ),
        (
            lambda m: shrink(m, scores={"hidden": np.ones(16) * np.nan}),
            "hidden",
        ),
        (
            lambda m: shrink_transformer(
                m,
                {
                    "ffn": [[0, 1], [0]],
                    "heads": [[0], [0]],
                    "hidden": np.arange(16),
                },
            ),
            "plan",
        ),  # fmt: skip
        (
            lambda m: shrink_transformer(
                m,
                {
                    "ffn": [[0, 0], [0, 1]],
                    "heads": [[0], [0]],
                    "hidden": np.arange(16),
                },
            ),
            "plan",
        ),  # fmt: skip
        (lambda m: shrink(_non_transformer(), ffn_ratio=0.5), "ffn_ratio"),
        # Llama's config holds one width per axis for every layer.
        (
            lambda m: shrink(m, ratio=0.5, uniform=False),
            "uniform.*intermediate_dim",
        ),
        (lambda m: transformer_widths(_non_transformer()), "model"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call(_llama())


def test_transformer_lm_options_without_rules_are_refused():
    model = TransformerLM(
        vocabulary_size=VOCAB, sequence_length=LENGTH, hidden_dim=16,
        num_layers=2, num_heads=2, laurel="rw",
    )  # fmt: skip
    with pytest.raises(ValueError, match="laurel"):
        shrink(model, ffn_ratio=0.5)


@pytest.mark.skipif(
    keras.backend.backend() == "torch", reason="jit_compile on JAX / TF"
)
# TensorFlow's XLA compile of the GPT-2 step alone takes ~30 s of the CI
# budget: slow there; the default run compiles it on JAX.
@(
    pytest.mark.slow
    if keras.backend.backend() == "tensorflow"
    else pytest.mark.usefixtures()
)
def test_shrunk_model_compiles():
    small = shrink(_gpt2(), ratio=0.5)
    small.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    x = _inputs("gpt2")
    y = np.roll(x["token_ids"], -1, axis=1)
    loss = small.fit(x, y, epochs=2, verbose=0).history["loss"]
    assert np.all(np.isfinite(loss)) and loss[-1] < loss[0]
