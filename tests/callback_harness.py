"""Shared test harness for keras-efficient callbacks (`model.fit` hooks).

A callback test gives three things and the harness does the rest:

- a *model factory* `make_model() -> keras.Model` (uncompiled; build a
  fresh model with fixed seeds on every call, e.g. `dense_classifier`),
- a *callback factory* `make_callback() -> keras.callbacks.Callback` (a
  fresh callback on every call),
- *data*, `(x, y)` NumPy arrays (e.g. `classification_data`), or a
  function of the run's callback returning `(x, y)` (a callback that
  feeds its own data, e.g. `ActiveDistillation`: `(callback.dataset,
  None)`).

Helpers:

- `classification_data`, `dense_classifier`: small data and model.
- `fit(model, callbacks, data)`: compile (sparse categorical cross
  entropy on logits, `jit_compile=True` on JAX and TensorFlow, eager on
  torch) and fit a few unshuffled batches on the current backend.
- `crash_and_resume(...)`: one uninterrupted reference run, then a run
  with `keras.callbacks.BackupAndRestore` that a callback (`CrashAt`)
  interrupts mid-fit, then a resumed run with a fresh model and callback;
  returns both so a test can assert the resumed run continued exactly.
- `assert_config_round_trip(callback)`: `get_config` / `from_config`
  gives an equal config.
- `run_callback_test(...)`: all of the above in one call.

Callbacks under test: `MagnitudePruning` (tests/test_pruning*.py) and
`ActiveDistillation` (tests/test_active*.py).
"""

from collections.abc import Callable
from collections.abc import Sequence

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
JIT = BACKEND in ("jax", "tensorflow")


def to_numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def classification_data(
    input_shape: Sequence[int] = (12,),
    n: int = 64,
    classes: int = 3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """`(x, y)`: float32 normal inputs and integer labels in `[0, classes)`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype("float32")
    return x, rng.integers(0, classes, size=(n,))


def dense_classifier(
    input_shape: Sequence[int] = (12,),
    hidden: Sequence[int] = (16,),
    classes: int = 3,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> keras.Sequential:
    """A Sequential MLP of `hidden` ReLU Dense layers and a logits layer;
    `names` names the Dense layers (hidden then output)."""
    keras.utils.set_random_seed(seed)
    names = list(names) if names else [None] * (len(hidden) + 1)
    layers = [keras.Input(tuple(input_shape))]
    if len(input_shape) > 1:
        layers.append(keras.layers.Flatten())
    for units, name in zip(hidden, names):
        layers.append(keras.layers.Dense(units, "relu", name=name))
    layers.append(keras.layers.Dense(classes, name=names[-1]))
    return keras.Sequential(layers)


def compile_model(
    model: keras.Model,
    optimizer=None,
    loss=None,
    jit_compile=JIT,
) -> keras.Model:
    """Compile with Adam(0.01) and sparse cross entropy on logits unless
    given (`optimizer` may be a name or an instance)."""
    if optimizer is None:
        optimizer = keras.optimizers.Adam(0.01)
    model.compile(
        optimizer=keras.optimizers.get(optimizer),
        loss=loss
        or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def fit(
    model: keras.Model,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    data: tuple | None = None,
    epochs: int = 2,
    batch_size: int = 16,
    optimizer=None,
    loss=None,
    compile: bool = True,
    jit_compile=JIT,
    **fit_kwargs,
) -> keras.callbacks.History:
    """Compile `model` (unless `compile=False`) and fit it on `data`
    (default `classification_data()`) without shuffling."""
    if compile:
        compile_model(model, optimizer, loss, jit_compile)
    x, y = classification_data() if data is None else data
    return model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        shuffle=False,
        callbacks=list(callbacks),
        **fit_kwargs,
    )


class CrashAt(keras.callbacks.Callback):
    """Raises `RuntimeError("interrupted")` at the start of `epoch`."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def crash_and_resume(
    make_model: Callable[[], keras.Model],
    make_callback: Callable[[], keras.callbacks.Callback],
    backup_dir: str,
    data: tuple | None = None,
    epochs: int = 4,
    crash_epoch: int = 2,
    backup_first: bool = True,
    **fit_kwargs,
) -> tuple:
    """`(reference model, reference callback, resumed model, resumed
    callback)`: the reference fits `epochs` epochs uninterrupted; a second
    run with `BackupAndRestore(backup_dir)` crashes at `crash_epoch`; a
    third, fresh model and callback resume it from the backup.
    `backup_first` puts `BackupAndRestore` before the callback in the
    resumed run (the crashed run has it after), so both orders run.
    `data` may be a function of each run's callback."""

    def data_of(callback):
        return data(callback) if callable(data) else data

    reference, reference_cb = make_model(), make_callback()
    fit(reference, [reference_cb], data_of(reference_cb), epochs, **fit_kwargs)
    backup = keras.callbacks.BackupAndRestore(str(backup_dir))
    crashed = make_callback()
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(
            make_model(),
            [crashed, backup, CrashAt(crash_epoch)],
            data_of(crashed),
            epochs,
            **fit_kwargs,
        )
    model, callback = make_model(), make_callback()
    order = [backup, callback] if backup_first else [callback, backup]
    fit(model, order, data_of(callback), epochs, **fit_kwargs)
    return reference, reference_cb, model, callback


def assert_same_weights(a: keras.Model, b: keras.Model, atol=1e-5) -> None:
    assert len(a.weights) == len(b.weights)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_allclose(
            to_numpy(wa), to_numpy(wb), atol=atol, err_msg=wa.path
        )


def assert_config_round_trip(
    callback: keras.callbacks.Callback,
) -> keras.callbacks.Callback:
    """`type(callback).from_config(callback.get_config())`, checked to
    give the same config (and to be a new object); returned."""
    config = callback.get_config()
    restored = type(callback).from_config(config)
    assert restored is not callback
    assert restored.get_config() == config
    return restored


def run_callback_test(
    make_model: Callable[[], keras.Model],
    make_callback: Callable[[], keras.callbacks.Callback],
    backup_dir: str,
    data: tuple | None = None,
    epochs: int = 4,
    crash_epoch: int = 2,
    atol: float = 1e-5,
) -> tuple:
    """Fit, crash and resume (the resumed weights equal the reference's),
    and a config round trip; returns `crash_and_resume`'s tuple."""
    out = crash_and_resume(
        make_model, make_callback, backup_dir, data, epochs, crash_epoch
    )
    reference, _, model, callback = out
    assert_same_weights(reference, model, atol)
    assert_config_round_trip(callback)
    return out
