"""Every pruning capability on tiny random-init keras-hub tasks.

GPT2CausalLM, BertTextClassifier, LlamaCausalLM and GemmaCausalLM (no
preset, `preprocessor=None`, nothing downloaded): pruning with
`MagnitudePruning` in `fit` reaches every Dense / EinsumDense kernel Keras
tracks inside them, `sparsity_report` is keyed by `variable.path`,
`strip_pruning` bakes the zeros in, `shrink` removes each axis the class
can express, and the results load from `.keras` with `safe_mode=True`.
GPT-2 runs the whole path by default; the other families are `slow`.
"""

import logging
import os

import keras
import numpy as np
import pytest

from keras_efficient.callbacks import MagnitudePruning
from keras_efficient.pruning import ConstantSparsity
from keras_efficient.pruning import select_transformer_units
from keras_efficient.pruning import sensitivity_analysis
from keras_efficient.pruning import shrink
from keras_efficient.pruning import sparsity_report
from keras_efficient.pruning import strip_pruning
from keras_efficient.pruning import transformer_widths
from keras_efficient.pruning import zero_transformer_units
from keras_efficient.pruning.constraints import MaskConstraint
from keras_efficient.pruning.targets import find_target_weights

keras_hub = pytest.importorskip("keras_hub")
hub = keras_hub.models

BACKEND = keras.backend.backend()
VOCAB, LENGTH, BATCH = 64, 8, 4
SMALL = dict(vocabulary_size=VOCAB, num_layers=2, hidden_dim=16,
             intermediate_dim=32)  # fmt: skip
GQA = dict(num_query_heads=4, num_key_value_heads=2)


def _gpt2():
    backbone = hub.GPT2Backbone(num_heads=2, max_sequence_length=16, **SMALL)
    return hub.GPT2CausalLM(backbone, preprocessor=None)


def _bert():
    backbone = hub.BertBackbone(num_heads=2, max_sequence_length=16, **SMALL)
    return hub.BertTextClassifier(backbone, num_classes=3, preprocessor=None)


def _llama():
    backbone = hub.LlamaBackbone(**SMALL, **GQA)
    return hub.LlamaCausalLM(backbone, preprocessor=None)


def _gemma():
    backbone = hub.GemmaBackbone(head_dim=8, **SMALL, **GQA)
    return hub.GemmaCausalLM(backbone, preprocessor=None)


# (builder, kernels per Transformer layer + kernels outside them, the
# shrink calls the class can express: GPT-2, BERT and Llama derive the
# head size from `hidden_dim / heads`, so heads go with hidden channels).
FAMILIES = {
    "gpt2": (_gpt2, 2 * 6, "derived"),
    "bert": (_bert, 2 * 6 + 2, "derived"),  # + pooler and classifier head
    "llama": (_llama, 2 * 7, "derived"),  # gated FFN: gate, up, down
    "gemma": (_gemma, 2 * 7, "own"),
}
AXES = {
    "derived": [dict(ffn_ratio=0.5), dict(head_ratio=0.5, hidden_ratio=0.5)],
    "own": [dict(ffn_ratio=0.5), dict(head_ratio=0.5), dict(hidden_ratio=0.5)],
}
DEFAULT = ("gpt2",)


def _families():
    return [
        n if n in DEFAULT else pytest.param(n, marks=pytest.mark.slow)
        for n in FAMILIES
    ]


def _data(name):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, (BATCH, LENGTH)).astype("int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    if name == "bert":
        x["segment_ids"] = np.zeros_like(ids)
        return x, rng.integers(0, 3, BATCH)
    return x, np.roll(ids, -1, axis=1)


def _out(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _assert_close(actual, expected):
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * scale)


def _round_trip(model, path, x):
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    _assert_close(_out(loaded, x), _out(model, x))
    return loaded


class _CountCompiles(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        if "Compiling jit(train_step)" in record.getMessage():
            self.messages.append(record.getMessage())


def _fit_pruned(model, x, y):
    """Fit with 50% magnitude pruning; the number of JAX train-step
    compiles (None on the other backends)."""
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=BACKEND != "torch",
    )
    callback = MagnitudePruning(ConstantSparsity(0.5, 0, frequency=1))
    if BACKEND != "jax":
        model.fit(x, y, batch_size=2, epochs=2, verbose=0,
                  callbacks=[callback])  # fmt: skip
        return callback, None
    import jax

    handler, logger = _CountCompiles(), logging.getLogger("jax")
    logger.addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    try:
        model.fit(x, y, batch_size=2, epochs=2, verbose=0,
                  callbacks=[callback])  # fmt: skip
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)
    return callback, len(handler.messages)


@pytest.mark.parametrize("name", _families())
def test_prune_report_strip_shrink_save(name, tmp_path):
    build, kernel_count, head_size = FAMILIES[name]
    model = build()
    x, y = _data(name)
    found = find_target_weights(model)
    assert len(found) == kernel_count, [v.path for _, v in found]

    callback, compiles = _fit_pruned(model, x, y)
    if compiles is not None:
        assert compiles == 1  # the masks are updated inside the step
    assert sorted(callback.target_weights) == sorted(v.path for _, v in found)

    report = sparsity_report(model)
    assert sorted(report["layers"]) == sorted(v.path for _, v in found)
    for path, entry in report["layers"].items():
        assert entry["sparsity"] == pytest.approx(0.5, abs=0.02), path
    assert report["sparsity"] == pytest.approx(0.5, abs=0.02)

    stripped = strip_pruning(model)
    assert not any(
        isinstance(getattr(w, "constraint", None), MaskConstraint)
        for w in stripped.weights
    )
    _assert_close(_out(stripped, x), _out(model, x))
    assert sparsity_report(stripped)["layers"] == report["layers"]
    _round_trip(stripped, os.path.join(tmp_path, "stripped.keras"), x)

    for i, axes in enumerate(AXES[head_size]):
        small = shrink(stripped, **axes)
        assert type(small) is type(stripped)
        assert small.count_params() < stripped.count_params()
        if set(axes) == {"ffn_ratio"}:
            plan = select_transformer_units(stripped, **axes)
            masked = zero_transformer_units(stripped, plan)
            _assert_close(_out(small, x), _out(masked, x))
        _round_trip(small, os.path.join(tmp_path, f"small{i}.keras"), x)


@pytest.mark.parametrize(
    "name", ["gpt2", *[pytest.param(n, marks=pytest.mark.slow)
                       for n in ("bert", "llama", "gemma")]],
)  # fmt: skip
def test_nested_backbone_is_found_and_shrunk(name):
    """A keras-hub backbone inside a user's functional model: all its
    kernels are pruning targets, and `shrink` narrows its feed-forward
    layers (its hidden width, the outer model's interface, stays)."""
    task = FAMILIES[name][0]()
    backbone = task.backbone
    x, _ = _data(name)
    inputs = {k: keras.Input((LENGTH,), dtype="int32", name=k) for k in x}
    h = backbone(inputs)
    if isinstance(h, dict):  # BERT: sequence and pooled outputs
        h = h["sequence_output"]
    h = keras.layers.GlobalAveragePooling1D()(h)
    outputs = keras.layers.Dense(3, name="head")(h)
    model = keras.Model(inputs, outputs)
    inner = len(find_target_weights(backbone))
    assert len(find_target_weights(model)) == inner + 1

    # Zero 8 of 32 neurons of every layer's feed-forward network: `shrink`
    # removes them and the outputs stay.
    layout = select_transformer_units(backbone, ffn_ratio=0.25)
    keep = {"ffn": layout["ffn"]}
    heads = transformer_widths(backbone)["heads"]
    keep["heads"] = [np.arange(n) for n in heads]
    keep["hidden"] = np.arange(backbone.hidden_dim)
    zeroed = zero_transformer_units(backbone, keep)
    for old, new in zip(backbone.weights, zeroed.weights):
        old.assign(new)
    small = shrink(model)
    _assert_close(_out(small, x), _out(model, x))
    inner_small = small.get_layer(backbone.name)
    assert inner_small.get_config()["intermediate_dim"] == 24
    assert inner_small.get_config()["hidden_dim"] == 16

    small = shrink(model, ratio=0.5)
    inner_small = small.get_layer(backbone.name)
    assert inner_small.get_config()["intermediate_dim"] == 16
    assert small.output.shape == model.output.shape


def test_subclassed_model_shrink_is_a_clear_error():
    class Subclassed(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(8)
            self.out = keras.layers.Dense(2)

        def call(self, x):
            return self.out(self.hidden(x))

    model = Subclassed()
    model(np.ones((1, 4), "float32"))
    assert len(find_target_weights(model)) == 2
    with pytest.raises(ValueError, match="`model` must be a functional"):
        shrink(model, ratio=0.5)
    x, y = np.ones((4, 4), "float32"), np.zeros(4, "int32")
    table = sensitivity_analysis(
        model, x, y, sparsities=[0.5], structure="unstructured", verbose=0
    )
    assert table["layer"] == [v.path for _, v in find_target_weights(model)]
    with pytest.raises(ValueError, match="structure"):
        sensitivity_analysis(model, x, y, verbose=0)


def test_sensitivity_reaches_every_gpt2_kernel():
    model = _gpt2()
    x, y = _data("gpt2")
    before = [np.array(w) for w in model.get_weights()]

    def agreement(y_true, y_pred):
        return float(np.mean(np.argmax(y_pred, -1) == y_true))

    table = sensitivity_analysis(model, x, y, sparsities=[0.9],
                                 metric=agreement, structure="unstructured",
                                 verbose=0)  # fmt: skip
    assert table["layer"] == [v.path for _, v in find_target_weights(model)]
    assert all(p > 0 for p in table["params"])
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_gpt2_head_size_axis_is_refused_by_name():
    model = _gpt2()
    with pytest.raises(ValueError, match="num_heads"):
        shrink(model, head_ratio=0.5)
