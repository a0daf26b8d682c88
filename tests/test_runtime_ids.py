"""Run-time checks of what the user passes as ids and labels.

Token ids against the vocabulary (`AltUpEmbedding`, `TransformerLM` and its
`generate`, `SparseLookupTable(lookup="token_id")`), in eager calls and in
compiled `fit` (JAX and TensorFlow with `jit_compile=True`, TensorFlow
also with `jit_compile=False`), and class labels against the model's outputs
(`sensitivity_analysis`). Each error names the argument it is about.
"""

import keras
import numpy as np
import pytest

from keras_efficient import _data_checks
from keras_efficient.applications import TransformerLM
from keras_efficient.layers import AltUpEmbedding
from keras_efficient.layers import SparseLookupTable
from keras_efficient.pruning.sensitivity import sensitivity_analysis

BACKEND = keras.backend.backend()
VOCAB = 16


def _lm(**kwargs):
    options = dict(
        vocabulary_size=VOCAB,
        sequence_length=8,
        hidden_dim=8,
        num_layers=1,
        num_heads=1,
    )
    options.update(kwargs)
    return TransformerLM(**options)


def _ids(bad=None, shape=(4, 8), seed=0):
    ids = np.random.default_rng(seed).integers(0, VOCAB, shape)
    ids = ids.astype("int32")
    if bad is not None:
        ids[1, 3] = bad
    return ids


def _compile_case(jit_compile):
    """Skips the compiled cases a backend does not have."""
    if BACKEND == "torch" and jit_compile:
        pytest.skip("torch has no jit_compile=True fit")


def _range(bad, size=VOCAB):
    """The message part naming the range and the culprit."""
    end = "min" if bad < 0 else "max"
    return rf"\[0, {size}\).*{end} {bad}"


# ---------------------------------------------------------------- AltUp


@pytest.mark.parametrize("recycled", [False, True])
@pytest.mark.parametrize("bad", [VOCAB, VOCAB + 7, -1, -100])
def test_altup_embedding_refuses_ids_outside_the_vocabulary(recycled, bad):
    layer = AltUpEmbedding(VOCAB, 4, num_blocks=2, recycled=recycled)
    clean = keras.ops.convert_to_numpy(layer(_ids()))
    assert np.all(np.isfinite(clean))
    with pytest.raises(ValueError, match=r"`inputs` must be in " + _range(bad)):
        layer(_ids(bad))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_altup_embedding_refuses_float_ids(dtype):
    layer = AltUpEmbedding(VOCAB, 4)
    # (Keras casts float inputs to the layer's compute dtype first.)
    with pytest.raises(TypeError, match=r"`inputs` must be integer.*float"):
        layer(_ids().astype(dtype))


# ---------------------------------------------------------------- LM


@pytest.mark.parametrize("altup", [1, 2])
@pytest.mark.parametrize("bad", [VOCAB, 255, -1])
def test_transformer_lm_call_refuses_ids_outside_the_vocabulary(altup, bad):
    model = _lm(altup=altup)
    logits = keras.ops.convert_to_numpy(model(_ids()))
    assert np.all(np.isfinite(logits))
    with pytest.raises(ValueError, match=r"`inputs` must be in " + _range(bad)):
        model(_ids(bad))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_float_ids_on_the_first_fit_get_our_type_error(dtype):
    model = _lm()
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    ids = _ids().astype(dtype)
    with pytest.raises(TypeError, match=r"`inputs` must be integer ids"):
        model.fit(ids, _ids(), epochs=1, verbose=0)


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("bad", [VOCAB, -1])
def test_compiled_fit_refuses_ids_outside_the_vocabulary(jit_compile, bad):
    _compile_case(jit_compile)
    model = _lm()
    model.compile(
        keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    model.fit(_ids(), _ids(seed=1), batch_size=4, epochs=1, verbose=0)
    with pytest.raises(Exception, match=r"`inputs` must be in \[0, 16\)"):
        model.fit(_ids(bad), _ids(seed=1), batch_size=4, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "prompt, lengths",
    [([[1, 2], [3]], r"\[1, 2\]"), ([[1], [2, 3, 4], [5, 6]], r"\[1, 2, 3\]")],
)
def test_generate_refuses_ragged_prompts(prompt, lengths):
    with pytest.raises(ValueError, match=r"`prompt_ids` must be rectangular.*"
                       + lengths):  # fmt: skip
        _lm().generate(prompt, max_new_tokens=2)


@pytest.mark.parametrize("bad", [VOCAB, 40, -1])
def test_generate_refuses_prompt_ids_outside_the_vocabulary(bad):
    with pytest.raises(
        ValueError, match=r"`prompt_ids` must be in " + _range(bad)
    ):
        _lm().generate([[1, bad, 3]], max_new_tokens=2)


def test_generate_refuses_float_prompts():
    with pytest.raises(TypeError, match=r"`prompt_ids` must be integer.*float"):
        _lm().generate(np.array([[1.0, 2.5]]), max_new_tokens=2)


def test_generate_refuses_non_finite_logits_instead_of_emitting_zeros():
    model = _lm()
    out = model.generate([[1, 2, 3]], max_new_tokens=3)
    assert out.shape == (1, 6) and np.all(out >= 0) and np.all(out < VOCAB)
    head = model.get_layer("logits")
    head.kernel.assign(np.full(head.kernel.shape, np.nan, "float32"))
    with pytest.raises(ValueError, match=r"non-finite logits at generated "
                       "token 0.*prompt_ids.shape"):  # fmt: skip
        model.generate([[1, 2, 3]], max_new_tokens=3)


# ---------------------------------------------------------------- lookup


def _table(mapping, **kwargs):
    return SparseLookupTable(
        8, lookup="token_id", token_mapping=mapping, **kwargs
    )


@pytest.mark.parametrize("mapping", ["modulo", "hash", "direct"])
@pytest.mark.parametrize("bad", [-1, -9])
def test_lookup_refuses_negative_ids_under_every_mapping(mapping, bad):
    x = np.zeros((1, 3, 4), "float32")
    with pytest.raises(ValueError, match=rf"`token_ids` must be .*min {bad}"):
        _table(mapping)(x, np.array([[0, bad, 2]], "int32"))


@pytest.mark.parametrize("bad", [8, 9, 1000])
def test_direct_lookup_refuses_ids_past_the_table(bad):
    x = np.zeros((1, 3, 4), "float32")
    with pytest.raises(
        ValueError, match=r"`token_ids` must be in " + _range(bad, 8)
    ):
        _table("direct")(x, np.array([[0, bad, 2]], "int32"))


@pytest.mark.parametrize("mapping", ["modulo", "hash"])
def test_hashed_lookup_accepts_large_ids(mapping):
    table = _table(mapping, embeddings_initializer="ones")
    x = np.zeros((1, 2, 4), "float32")
    out = keras.ops.convert_to_numpy(table(x, np.array([[7, 10**6]], "int32")))
    np.testing.assert_allclose(out, np.ones((1, 2, 4)))


def test_lookup_refuses_float_ids():
    x = np.zeros((1, 2, 4), "float32")
    with pytest.raises(TypeError, match=r"`token_ids` must be integer.*float"):
        _table("direct")(x, np.array([[1.0, 2.0]], "float32"))


def _lookup_model(mapping):
    # The ids reach only the table (an Embedding of them would fail on
    # TensorFlow first, with its own message).
    features = keras.Input((5, 4))
    ids = keras.Input((5,), dtype="int32")
    x = _table(mapping, name="table")(features, ids)
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(x))
    return keras.Model([features, ids], outputs)


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("mapping, bad", [("direct", 8), ("modulo", -1)])
def test_lookup_ids_are_checked_in_compiled_fit(jit_compile, mapping, bad):
    _compile_case(jit_compile)
    model = _lookup_model(mapping)
    model.compile("sgd", "mse", jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(8, 5, 4)).astype("float32")
    good = rng.integers(0, 8, (8, 5)).astype("int32")
    y = np.zeros((8, 1))
    model.fit([features, good], y, batch_size=4, epochs=1, verbose=0)
    bad_ids = good.copy()
    bad_ids[2, 1] = bad
    with pytest.raises(Exception, match=r"`token_ids` must be"):
        model.fit([features, bad_ids], y, batch_size=8, epochs=1, verbose=0)


# ---------------------------------------------------------------- labels


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([1, 2, 3, 3]), r"`y` must be class ids in \[0, 3\).*1-based"),
        (np.array([0, -1, 2]), r"`y` must be class ids.*min -1"),
        (np.array([0, 5, 2]), r"`y` must be class ids.*max 5"),
        (np.array([0.0, 1.5]), r"`y` must be integer class ids.*non-integer"),
        (np.array(["a", "b"]), r"`y` must be class ids or one-hot.*dtype"),
    ],
)
def test_labels_outside_the_classes_raise(labels, match):
    error = TypeError if labels.dtype.kind == "U" else ValueError
    with pytest.raises(error, match=match):
        _data_checks.check_labels_in_range(labels, 3, "y")


@pytest.mark.parametrize(
    "labels", [np.array([0, 1, 2]), np.eye(3), np.array([0.0, 2.0]), []]
)
def test_labels_in_range_and_one_hot_rows_pass(labels):
    _data_checks.check_labels_in_range(labels, 3, "y")


def _classifier():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


@pytest.mark.parametrize(
    "y_val, match",
    [
        (
            np.arange(32) % 3 + 1,
            r"`y_val` must be class ids in \[0, 3\).*1-based",
        ),
        (np.full(32, -1), r"`y_val` must be class ids.*min -1"),
        (np.full(32, 7), r"`y_val` must be class ids.*max 7"),
    ],
)
def test_sensitivity_analysis_refuses_labels_outside_the_classes(y_val, match):
    x_val = np.random.default_rng(0).random((32, 8)).astype("float32")
    with pytest.raises(ValueError, match=match):
        sensitivity_analysis(_classifier(), x_val, y_val, verbose=0)


@pytest.mark.parametrize(
    "rows_x, rows_y, match",
    [
        (32, 20, r"`x_val` and `y_val` must have the same number of rows.*32"),
        (10, 32, r"`x_val` and `y_val` must have the same number.*10 rows"),
        (0, 0, r"`x_val` must have at least one row.*0 rows"),
    ],
)
def test_sensitivity_analysis_checks_rows(rows_x, rows_y, match):
    x_val = np.random.default_rng(0).random((rows_x, 8)).astype("float32")
    y_val = np.zeros(rows_y, "int32")
    with pytest.raises(ValueError, match=match):
        sensitivity_analysis(_classifier(), x_val, y_val, verbose=0)


def test_sensitivity_analysis_base_accuracy_with_0_based_labels():
    model = _classifier()
    x_val = np.random.default_rng(0).random((32, 8)).astype("float32")
    y_val = model.predict(x_val, verbose=0).argmax(-1)
    table = sensitivity_analysis(model, x_val, y_val, [0.5], verbose=0)
    assert table.base_metric == 1.0
