"""`raise_if`: a data check that raises from eager calls and compiled steps."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_efficient import _data_checks

BACKEND = keras.backend.backend()


class _IdsLayer(keras.layers.Layer):
    """Embeds ids after checking them, as the package's embeddings do."""

    def __init__(self, size=8, **kwargs):
        super().__init__(**kwargs)
        self.size = size
        self.embedding = keras.layers.Embedding(size, 4)

    def call(self, ids):
        # The checked ids: on TensorFlow read after the assertion, so the
        # gather cannot fail first with TensorFlow's own message.
        ids = _data_checks.check_ids_in_range(ids, self.size, "token_ids")
        return self.embedding(ids)


def _model(size=8):
    inputs = keras.Input((5,), dtype="int32")
    x = _IdsLayer(size)(inputs)
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


def test_eager_call_raises_with_the_range_and_the_culprit():
    layer = _IdsLayer(8)
    layer(np.zeros((2, 5), "int32"))
    with pytest.raises(ValueError, match=r"\[0, 8\).*max 8"):
        layer(np.array([[0, 1, 2, 3, 8]], "int32"))
    with pytest.raises(ValueError, match=r"min -1"):
        layer(np.array([[-1, 1, 2, 3, 4]], "int32"))


def test_clean_ids_pass_and_padding_id_is_allowed():
    ids = np.array([[0, 7, -1]], "int32")
    with pytest.raises(ValueError, match="min -1 and max 7"):
        _data_checks.check_ids_in_range(ids, 8)
    _data_checks.check_ids_in_range(ids, 8, padding_id=-1)
    with pytest.raises(ValueError, match="or the padding id 0.*max 9"):
        _data_checks.check_ids_in_range(np.array([0, 9]), 8, padding_id=0)


def test_numpy_bool_condition():
    with pytest.raises(TypeError, match="bad 3"):
        _data_checks.raise_if(np.bool_(True), "bad {0}", (3,), TypeError)
    _data_checks.raise_if(False, "never {0}", (3,))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_raises_on_the_first_bad_batch(jit_compile):
    if BACKEND == "torch" and jit_compile:
        pytest.skip("torch has no jit_compile=True fit")
    model = _model()
    model.compile("sgd", "mse", jit_compile=jit_compile)
    good = np.random.randint(0, 8, size=(8, 5)).astype("int32")
    model.fit(good, np.zeros((8, 1)), batch_size=4, epochs=1, verbose=0)
    bad = good.copy()
    bad[5, 2] = 11
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(Exception, match=r"`token_ids` must be in \[0, 8\)"):
        model.fit(bad, np.zeros((8, 1)), batch_size=8, epochs=1, verbose=0)
    if BACKEND == "torch" or (BACKEND == "tensorflow" and not jit_compile):
        # The step stopped before the update (under XLA, on JAX and on
        # TensorFlow, the step that saw the batch is applied first: the
        # error is raised from the host after it; JAX's eager fit leaves
        # its variables unset after an error, so there is nothing to read).
        for before, after in zip(weights, model.get_weights()):
            np.testing.assert_array_equal(before, after)


def test_compiled_clean_step_makes_no_host_call():
    if BACKEND != "jax":
        pytest.skip("JAX-specific: the clean branch has no callback")
    import jax

    def step(ids):
        return ops.sum(_data_checks.check_ids_in_range(ids, 8))

    lowered = jax.jit(step).lower(np.zeros((2, 3), "int32"))
    text = lowered.compile().as_text()
    # The callback sits in one branch of a conditional, not on the path,
    # and survives compilation (it is tied to the ids the step uses).
    assert "conditional" in text or "case" in text
    assert "callback" in text
    # A pure callback, not an effect: the jitted call keeps JAX's fast
    # dispatch path.
    assert not lowered._lowering.compile_args.get("ordered_effects")
    assert not lowered._lowering.compile_args.get("unordered_effects")


def test_raise_if_refuses_a_traced_jax_value():
    if BACKEND != "jax":
        pytest.skip("JAX-specific: traced checks are tied with raise_with")
    import jax

    def step(x):
        _data_checks.raise_if(x > 0, "x must be <= 0. Received: {0}", (x,))
        return x

    with pytest.raises(RuntimeError, match="raise_with"):
        jax.jit(step)(1.0)


def test_narrow_integer_ids_compare_against_a_size_they_cannot_hold():
    # uint8 bytes against a vocabulary of 256: 256 does not fit in uint8.
    _data_checks.check_ids_in_range(np.array([0, 32, 255], "uint8"), 256)
    with pytest.raises(ValueError, match=r"\[0, 200\).*max 255"):
        _data_checks.check_ids_in_range(np.array([0, 255], "uint8"), 200)
    with pytest.raises(ValueError, match=r"min -3"):
        _data_checks.check_ids_in_range(np.array([-3, 5], "int8"), 300)


def _tensorflow_only():
    if BACKEND != "tensorflow":
        pytest.skip("TensorFlow-specific: the XLA status check")


def test_xla_check_raises_with_several_steps_per_execution():
    _tensorflow_only()
    model = _model()
    model.compile("sgd", "mse", jit_compile=True, steps_per_execution=3)
    good = np.random.default_rng(0).integers(0, 8, (12, 5)).astype("int32")
    model.fit(good, np.zeros((12, 1)), batch_size=2, epochs=1, verbose=0)
    bad = good.copy()
    bad[9, 0] = -4
    message = (
        r"`token_ids` must be in \[0, 8\)\. Received: token_ids with min -4"
    )
    with pytest.raises(Exception, match=message):
        model.fit(bad, np.zeros((12, 1)), batch_size=2, epochs=1, verbose=0)


def test_xla_check_adds_no_weight_and_saves_as_before(tmp_path):
    _tensorflow_only()
    model = _model()
    paths = [w.path for w in model.weights]
    model.compile("sgd", "mse", jit_compile=True)
    good = np.random.default_rng(0).integers(0, 8, (8, 5)).astype("int32")
    model.fit(good, np.zeros((8, 1)), batch_size=4, epochs=1, verbose=0)
    assert [w.path for w in model.weights] == paths
    path = str(tmp_path / "checked.keras")
    model.save(path)
    loaded = keras.models.load_model(
        path, custom_objects={"_IdsLayer": _IdsLayer}
    )
    assert len(loaded.weights) == len(paths)
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded(good)), ops.convert_to_numpy(model(good))
    )


def test_xla_function_called_eagerly_warns_what_it_cannot_check():
    _tensorflow_only()
    import tensorflow as tf

    layer = _IdsLayer(8, name="ids")
    layer(np.zeros((1, 5), "int32"))
    step = tf.function(lambda ids: layer(ids), jit_compile=True)
    with pytest.warns(UserWarning, match=r"not checked: `token_ids` must be "
                      r"in \[0, 8\).*jit_compile=False"):  # fmt: skip
        step(np.zeros((2, 5), "int32"))


def test_xla_checks_of_one_output_share_one_status_and_name_the_failed():
    """The checks of one output write one status; the first that failed
    raises with its own values (an int64, an int32 and a float32, values
    computed only on failure included)."""
    _tensorflow_only()
    import tensorflow as tf

    from keras_efficient import _tensorflow_checks

    def step(x):
        row_max = ops.max(x, axis=-1)
        problems = [
            _data_checks.Problem(
                ops.any(x < -100.0), "x must be >= -100. Received: {0}", (x,)
            ),
            _data_checks.Problem(
                ops.any(x > 1.0),
                "x must be <= 1. Received: row {0} ({1} rows), max {2}",
                lambda: (
                    ops.argmax(row_max),
                    ops.sum(ops.cast(row_max > 1.0, "int32")),
                    ops.max(x),
                ),
            ),
            _data_checks.Problem(
                ops.any(ops.isnan(x)), "x is NaN. Received: {0}", (x[0, 0],)
            ),
        ]
        return _data_checks.raise_with(x * 2.0, problems)

    # The graphs traced before (held here, so none is collected meanwhile).
    earlier = list(_tensorflow_checks._STATUS.keys())
    inner = tf.function(step, jit_compile=True)
    outer = tf.function(lambda x: inner(x))
    good = np.full((3, 2), 0.5, "float32")
    np.testing.assert_allclose(outer(good), 1.0)
    statuses = [
        status
        for graph, status in list(_tensorflow_checks._STATUS.items())
        if not any(graph is g for g in earlier)
    ]
    assert sum(len(s) for s in statuses) == 1
    bad = good.copy()
    bad[2, 1], bad[1, 0] = 2.5, 1.5
    message = r"x must be <= 1\. Received: row 2 \(2 rows\), max 2\.5"
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        outer(bad)
    bad[0, 0] = np.nan  # the NaN check comes after: the range one raises
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        outer(bad)
    nan = good.copy()
    nan[0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"NaN\. Rec"):
        outer(nan)
