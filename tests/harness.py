"""Shared test harness for keras-efficient layers and losses.

Every layer test calls `run_layer_test` and every loss test calls
`run_loss_test`; method-specific numerical tests live beside them. The
checks follow Keras core's `run_layer_test` and keras-hub's `TestCase`
(which are private, so this is our own):

layers: build; symbolic call on `keras.KerasTensor`; eager call; one `fit`
step (`jit_compile=True` on JAX and TensorFlow, eager on torch);
`get_config` / `from_config` round trip with equal outputs; save to `.keras`
and load with `safe_mode=True` with equal outputs; `mixed_bfloat16` runs
without NaN.

losses: finite scalar; `reduction` honoured ("none", "sum",
"sum_over_batch_size"); `sample_weight` honoured; config round trip; a
compiled model using the loss trains one jitted step and saves / loads with
`safe_mode=True`.
"""

import os
import tempfile

import keras
import numpy as np
from keras import ops

BACKEND = keras.backend.backend()
JIT = BACKEND in ("jax", "tensorflow")


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def _as_tuple(inputs):
    return tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)


def _flatten(outputs):
    return keras.tree.flatten(outputs)


def _symbolic_inputs(arrays):
    return [
        keras.KerasTensor((None,) + a.shape[1:], dtype=str(a.dtype))
        for a in arrays
    ]


def assert_allclose(actual, desired, atol=1e-6, rtol=1e-6, msg=""):
    np.testing.assert_allclose(
        to_numpy(actual).astype("float64"),
        to_numpy(desired).astype("float64"),
        atol=atol,
        rtol=rtol,
        err_msg=msg,
    )


def run_layer_test(
    make_layer,
    inputs,
    call_kwargs=None,
    expected_output_shape=None,
    run_training=True,
    run_mixed_precision=True,
    run_saving=True,
    atol=1e-5,
):
    """Runs the shared checks on a layer.

    Args:
        make_layer: zero-argument callable returning a fresh, unbuilt layer.
            A callable (not an instance) so wrapper layers get fresh inner
            layers for each check.
        inputs: a NumPy array, or a tuple of arrays passed positionally.
        call_kwargs: extra keyword arguments for the call.
        expected_output_shape: optional shape (or nested shapes) of the eager
            output, batch included.
        run_training: whether to run the `fit` step.
        run_mixed_precision: whether to run the `mixed_bfloat16` check.
        run_saving: whether to run the `.keras` save / load check.
        atol: tolerance for the output equality checks.

    Returns:
        The eager output of the layer on `inputs` (for further checks).
    """
    call_kwargs = call_kwargs or {}
    arrays = _as_tuple(inputs)

    # Symbolic call: shapes known without running anything.
    layer = make_layer()
    symbolic = layer(*_symbolic_inputs(arrays), **call_kwargs)

    # Eager call on a fresh layer.
    layer = make_layer()
    outputs = layer(*arrays, **call_kwargs)
    assert layer.built, "the layer must be built after its first call"
    for sym, out in zip(_flatten(symbolic), _flatten(outputs)):
        assert tuple(sym.shape[1:]) == tuple(out.shape[1:]), (
            f"symbolic shape {sym.shape} != eager shape {out.shape}"
        )
        assert np.all(np.isfinite(to_numpy(out))), "non-finite output"
    if expected_output_shape is not None:
        shapes = [tuple(o.shape) for o in _flatten(outputs)]
        expected = expected_output_shape
        if isinstance(expected, tuple) and all(
            isinstance(d, (int, type(None))) for d in expected
        ):
            expected = [expected]
        assert shapes == [tuple(e) for e in expected], (shapes, expected)

    # Config round trip: same config, same outputs with the same weights.
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert _normalise(clone.get_config()) == _normalise(config), (
        "get_config() does not round-trip through from_config()"
    )
    clone(*arrays, **call_kwargs)
    clone.set_weights(layer.get_weights())
    for a, b in zip(_flatten(clone(*arrays, **call_kwargs)), _flatten(outputs)):
        assert_allclose(a, b, atol=atol, msg="from_config clone differs")

    model = None
    if run_training or run_saving:
        model = _functional_model(make_layer, arrays, call_kwargs)
    if run_training:
        _fit_one_step(model, arrays)
    if run_saving:
        _save_and_load(model, arrays, atol)
    if run_mixed_precision:
        _mixed_precision_call(make_layer, arrays, call_kwargs)
    return outputs


def _normalise(config):
    return keras.saving.serialize_keras_object(config)


def _functional_model(make_layer, arrays, call_kwargs):
    model_inputs = [
        keras.Input(shape=a.shape[1:], dtype=str(a.dtype)) for a in arrays
    ]
    outputs = make_layer()(*model_inputs, **call_kwargs)
    outputs = [o for o in _flatten(outputs) if "float" in str(o.dtype)]
    return keras.Model(model_inputs, outputs)


def _fit_one_step(model, arrays):
    predictions = _flatten(model(list(arrays)))
    targets = [np.zeros(p.shape, dtype="float32") for p in predictions]
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=["mse"] * len(targets),
        jit_compile=JIT,
    )
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(
        list(arrays), targets, batch_size=len(arrays[0]), epochs=1, verbose=0
    )
    loss = history.history["loss"][-1]
    assert np.isfinite(loss), f"non-finite training loss {loss}"
    after = [to_numpy(w) for w in model.trainable_weights]
    if before:
        changed = any(not np.array_equal(a, b) for a, b in zip(before, after))
        assert changed, "one fit step changed no trainable weight"


def _save_and_load(model, arrays, atol):
    expected = _flatten(model.predict(list(arrays), verbose=0))
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    actual = _flatten(loaded.predict(list(arrays), verbose=0))
    for a, b in zip(actual, expected):
        assert_allclose(a, b, atol=atol, msg="saved model differs")


def _mixed_precision_call(make_layer, arrays, call_kwargs):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = make_layer()
        outputs = layer(*arrays, **call_kwargs)
    finally:
        keras.config.set_dtype_policy(previous)
    for out in _flatten(outputs):
        values = to_numpy(ops.cast(out, "float32"))
        assert not np.any(np.isnan(values)), "NaN under mixed_bfloat16"


def assert_gradients_reach(layer, inputs, call_kwargs=None):
    """Asserts every trainable weight of `layer` gets a nonzero gradient.

    The loss is the sum of squares of the outputs, which has a nonzero
    gradient for any weight the output depends on (at generic values).
    """
    call_kwargs = call_kwargs or {}
    arrays = _as_tuple(inputs)
    layer(*arrays, **call_kwargs)
    weights = layer.trainable_weights
    assert weights, "layer has no trainable weights"
    grads = _gradients(lambda: layer(*arrays, **call_kwargs), weights)
    for weight, grad in zip(weights, grads):
        assert grad is not None, f"no gradient reaches {weight.path}"
        value = np.abs(to_numpy(grad)).max()
        assert value > 0, f"zero gradient for {weight.path}"


def _gradients(forward, weights):
    def loss_fn():
        outputs = _flatten(forward())
        return sum(ops.sum(ops.square(ops.cast(o, "float32"))) for o in outputs)

    if BACKEND == "jax":
        import jax

        def stateless_loss(values):
            # Rebind the variables to traced values for the gradient.
            with keras.StatelessScope(state_mapping=list(zip(weights, values))):
                return loss_fn()

        return jax.grad(stateless_loss)([w.value for w in weights])
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()
        return tape.gradient(loss, [w.value for w in weights])
    if BACKEND == "torch":
        for w in weights:
            w.value.grad = None
        loss = loss_fn()
        loss.backward()
        return [w.value.grad for w in weights]
    raise ValueError(f"Unsupported backend {BACKEND}")


def run_loss_test(make_loss, y_true, y_pred, atol=1e-5, run_training=True):
    """Runs the shared checks on a loss.

    Args:
        make_loss: callable taking keyword arguments (`reduction=...`) and
            returning a fresh `keras.losses.Loss`.
        y_true: NumPy array of targets, batch first.
        y_pred: NumPy array of predictions (a model's output), batch first.
        atol: tolerance for equality checks.
        run_training: whether to train a small jitted model with the loss
            and save / load it.

    Returns:
        The per-example losses (`reduction="none"`) as a NumPy array.
    """
    n = len(y_true)
    per_example = to_numpy(make_loss(reduction="none")(y_true, y_pred))
    assert per_example.shape == (n,), (
        f"reduction='none' must give one loss per example, got "
        f"{per_example.shape}"
    )
    assert np.all(np.isfinite(per_example)), "non-finite loss"

    mean = to_numpy(make_loss()(y_true, y_pred))
    assert mean.shape == (), "default reduction must give a scalar"
    np.testing.assert_allclose(mean, per_example.mean(), atol=atol, rtol=1e-5)
    total = to_numpy(make_loss(reduction="sum")(y_true, y_pred))
    np.testing.assert_allclose(total, per_example.sum(), atol=atol, rtol=1e-5)

    # sample_weight scales each example's loss.
    weights = np.linspace(0.0, 2.0, n).astype("float32")
    weighted = to_numpy(
        make_loss(reduction="none")(y_true, y_pred, sample_weight=weights)
    )
    np.testing.assert_allclose(
        weighted, per_example * weights, atol=atol, rtol=1e-5
    )
    weighted_mean = to_numpy(make_loss()(y_true, y_pred, sample_weight=weights))
    np.testing.assert_allclose(
        weighted_mean, (per_example * weights).mean(), atol=atol, rtol=1e-5
    )

    # Config round trip.
    loss = make_loss()
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    np.testing.assert_allclose(
        to_numpy(restored(y_true, y_pred)), mean, atol=atol, rtol=1e-5
    )

    if run_training:
        _train_and_save_with_loss(make_loss, y_true, y_pred, atol)
    return per_example


def _train_and_save_with_loss(make_loss, y_true, y_pred, atol):
    features = np.random.default_rng(0).normal(size=(len(y_true), 4))
    features = features.astype("float32")
    inputs = keras.Input(shape=(4,))
    outputs = keras.layers.Dense(int(np.prod(y_pred.shape[1:])))(inputs)
    outputs = keras.layers.Reshape(y_pred.shape[1:])(outputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss=make_loss(), jit_compile=JIT)
    history = model.fit(
        features, y_true, batch_size=len(y_true), epochs=2, verbose=0
    )
    assert np.all(np.isfinite(history.history["loss"]))
    expected = model.evaluate(features, y_true, verbose=0)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.loss) is type(model.loss)
    actual = loaded.evaluate(features, y_true, verbose=0)
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=1e-4)
