"""Pruning state in the compiled step: tfmot steps, no retrace, no batch
hooks, BackupAndRestore, loss scaling, strip and report."""

import logging

import keras
import numpy as np
import pytest

from keras_efficient.callbacks import MagnitudePruning
from keras_efficient.pruning import ConstantSparsity
from keras_efficient.pruning import PolynomialDecay
from keras_efficient.pruning import masks as masks_lib
from keras_efficient.pruning import sparsity_report
from keras_efficient.pruning import strip_pruning
from keras_efficient.pruning.plan import PruningOptions
from keras_efficient.pruning.plan import build_plan
from keras_efficient.pruning.state import attach_state
from tests.callback_harness import classification_data
from tests.callback_harness import crash_and_resume
from tests.callback_harness import dense_classifier
from tests.callback_harness import fit

BACKEND = keras.backend.backend()
JIT = BACKEND != "torch"


def _model(seed=0):
    return dense_classifier(input_shape=(12,), hidden=(16,), seed=seed)


def _np(x):
    return keras.ops.convert_to_numpy(x)


class _Record(keras.callbacks.Callback):
    """Test-only: the kernels each batch's forward pass runs with."""

    def __init__(self):
        super().__init__()
        self.kernels = []

    def on_train_batch_begin(self, batch, logs=None):
        layers = self.model.layers
        self.kernels.append([_np(lay.kernel) for lay in layers])


def _tfmot_masks(schedule, kernels0, batches):
    """Pure-Python tfmot rule with a frozen model: batch i runs at step
    s = i + 1 and, when `schedule(s)` prunes, with masks recomputed from
    the current (masked) kernels."""
    ws, out = [w.copy() for w in kernels0], []
    for i in range(batches):
        should, sparsity = schedule(i + 1)
        if should:
            ms = masks_lib.compute_masks(ws, sparsity, "unstructured")
            ws = [w * m for w, m in zip(ws, ms)]
        out.append([w != 0 for w in ws])
    return out


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantSparsity(0.5, begin_step=0, frequency=4),
        PolynomialDecay(0.1, 0.9, begin_step=2, end_step=11, frequency=3),
    ],
)
def test_tfmot_step_semantics_batch_by_batch(schedule):
    # Learning rate 0: the kernels change only by pruning, so every batch's
    # masks can be predicted exactly.
    model = _model()
    model.build((None, 12))
    kernels0 = [_np(lay.kernel) for lay in model.layers]
    rec = _Record()
    cb = MagnitudePruning(schedule)
    fit(model, [cb, rec], epochs=4, optimizer=keras.optimizers.SGD(0.0))
    expected = _tfmot_masks(schedule, kernels0, 16)
    for i, (got, exp) in enumerate(zip(rec.kernels, expected)):
        for g, e in zip(got, exp):
            np.testing.assert_array_equal(g != 0, e, err_msg=f"batch {i}")
    # ConstantSparsity(0.5, 0, frequency=4): the masks change at batch 3.
    if isinstance(schedule, ConstantSparsity):
        assert np.all(rec.kernels[2][0] != 0)
        assert (rec.kernels[3][0] == 0).mean() == 0.5


def test_no_batch_hooks_keeps_async_dispatch():
    if not keras.callbacks.CallbackList([])._async_train:
        pytest.skip(f"{BACKEND}: Keras dispatches no callback asynchronously")
    cb = MagnitudePruning(ConstantSparsity(0.5, 0))
    for hook in ("on_batch_end", "on_train_batch_end", "on_train_batch_begin"):
        assert getattr(MagnitudePruning, hook) is getattr(
            keras.callbacks.Callback, hook
        )
    assert keras.callbacks.CallbackList([cb], add_history=True)._async_train


@pytest.mark.skipif(BACKEND != "jax", reason="counts XLA compiles on JAX")
@pytest.mark.parametrize(
    "schedule",
    [
        ConstantSparsity(0.5, begin_step=0, frequency=1),
        PolynomialDecay(0.0, 0.8, begin_step=0, end_step=10, frequency=1),
    ],
)
def test_train_step_compiles_once_on_jax(schedule):
    import jax

    compiles = []

    class Count(logging.Handler):
        def emit(self, record):
            if "Compiling jit(train_step)" in record.getMessage():
                compiles.append(record.getMessage())

    handler, logger = Count(), logging.getLogger("jax")
    logger.addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    try:
        model = _model()
        cb = MagnitudePruning(schedule)
        hist = fit(model, [cb], epochs=4)
        fit(model, [cb], epochs=1, compile=False)  # same variables
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)
    assert len(compiles) == 1, compiles
    assert hist.history["pruning_sparsity"][-1] > 0.45


def test_backup_and_restore_continues_exactly(tmp_path):
    sched = PolynomialDecay(0.0, 0.7, begin_step=0, end_step=12, frequency=3)
    # The resumed run has BackupAndRestore first, the crashed run after the
    # pruning callback: the order is free.
    ref, ref_cb, model, cb = crash_and_resume(
        lambda: _model(seed=1), lambda: MagnitudePruning(sched), tmp_path
    )
    assert cb.step == ref_cb.step == 16
    assert int(_np(cb.pruning_step)) == int(_np(ref_cb.pruning_step)) == 17
    for a, b in zip(ref_cb.mask_variables, cb.mask_variables):
        np.testing.assert_array_equal(_np(a), _np(b))
    for a, b in zip(ref.weights, model.weights):
        np.testing.assert_allclose(_np(a), _np(b), atol=1e-5)


def test_masks_are_saved_with_the_optimizer(tmp_path):
    model = _model()
    cb = MagnitudePruning(ConstantSparsity(0.5, 1, 1))
    fit(model, [cb], epochs=1)
    paths = {v.path for v in model.optimizer.variables}
    assert {m.path for m in cb.mask_variables} <= paths
    assert cb.pruning_step.path in paths


def test_loss_scale_optimizer_mixed_float16():
    keras.config.set_dtype_policy("mixed_float16")
    model = _model()
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=JIT,
    )
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    cb = MagnitudePruning(ConstantSparsity(0.75, 1, 1))
    fit(model, [cb], epochs=2, compile=False)
    inner = model.optimizer.inner_optimizer
    assert all(any(m is v for v in inner.variables) for m in cb.mask_variables)
    for variable in cb.target_weights.values():
        w = _np(variable)
        assert np.count_nonzero(w) == max(round(w.size * 0.25), 1)


def test_end_step_reached_mid_training():
    model = _model()
    cb = MagnitudePruning(ConstantSparsity(0.6, 0, end_step=5, frequency=1))
    hist = fit(model, [cb], epochs=3)
    assert hist.history["pruning_target_sparsity"][-1] == pytest.approx(0.6)
    cb2 = MagnitudePruning(PolynomialDecay(0.2, 0.6, 1, 3, frequency=1))
    hist = fit(_model(), [cb2], epochs=2)
    assert hist.history["pruning_sparsity"][-1] == pytest.approx(0.6, 0.01)


def test_strip_returns_new_model_and_leaves_the_original():
    model = _model()
    cb = MagnitudePruning(ConstantSparsity(0.8, 0, frequency=2))
    fit(model, [cb], epochs=1)
    x, _ = classification_data(n=8)
    stripped = strip_pruning(model)
    assert stripped is not model
    np.testing.assert_allclose(_np(stripped(x)), _np(model(x)), atol=1e-5)
    assert all(w.constraint is None for w in stripped.weights), (
        "no mask constraints in the copy"
    )
    assert all(w.constraint is not None for w in cb.target_weights.values())
    hist = fit(model, [cb], epochs=1, compile=False)  # trains on, pruned
    assert hist.history["pruning_sparsity"][-1] == pytest.approx(0.8, 0.02)


def test_report_keys_by_path_and_rejects_nothing_to_prune():
    model = _model()
    rep = sparsity_report(model)
    assert set(rep["layers"]) == {lay.kernel.path for lay in model.layers}
    assert rep["sparsity"] == 0.0
    empty = keras.Sequential([keras.Input((4,)), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="nothing to prune"):
        sparsity_report(empty)


def test_bad_arguments():
    sched = ConstantSparsity(np.float32(0.5), np.int64(1))
    assert sched.target_sparsity == 0.5 and sched.begin_step == 1
    with pytest.raises(ValueError, match="block_pooling"):
        MagnitudePruning(sched, block=(2, 2), block_pooling="min")
    with pytest.raises(ValueError, match="targets"):
        MagnitudePruning(sched, targets="dense")
    with pytest.raises(ValueError, match="block"):
        MagnitudePruning(sched, block=(0, 2))
    with pytest.raises(ValueError, match="power"):
        PolynomialDecay(0.0, 0.5, 0, 10, power="3")


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit with a traced k")
def test_traced_keep_top_equals_reference_with_ties():
    import jax

    from keras_efficient.pruning import mask_ops

    rng = np.random.default_rng(3)
    kernels = [
        rng.integers(0, 3, size=(6, 5)).astype("float32"),
        rng.integers(-2, 2, size=(3, 3, 2, 4)).astype("float32"),
    ]
    for structure in ("unstructured", "filter"):
        for scope in ("layer", "global"):
            # One compilation per structure and scope: the sparsity is a
            # traced argument, as inside a compiled train step.
            fn = jax.jit(
                lambda ks, s, structure=structure, scope=scope: (
                    mask_ops.compute_masks(ks, s, structure, scope=scope)
                )
            )
            for sparsity in (0.0, 0.3, 0.5, 0.999):
                got = fn(kernels, np.float32(sparsity))
                want = masks_lib.compute_masks(
                    kernels, sparsity, structure, scope=scope
                )
                for g, w in zip(got, want):
                    np.testing.assert_array_equal(_np(g), w)


@pytest.mark.parametrize("first", [True, False])
def test_kernel_keeps_its_own_constraint(first):
    """A kernel's own constraint still runs under the mask constraint, on
    the first target kernel (whose constraint also runs the update) and on
    the others."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(
                16,
                "relu",
                kernel_constraint=keras.constraints.NonNeg() if first else None,
            ),
            keras.layers.Dense(
                3,
                kernel_constraint=None if first else keras.constraints.NonNeg(),
            ),
        ]
    )
    constrained = model.layers[0 if first else 1].kernel
    cb = MagnitudePruning(ConstantSparsity(0.5, 0, frequency=1))
    fit(model, [cb], epochs=1)
    kernel = _np(constrained)
    assert kernel.min() >= 0.0, "the NonNeg constraint was dropped"
    assert np.mean(kernel == 0) >= 0.5


_SCHEDULE = ConstantSparsity(0.5, 0)


def _plan(model, **options):
    # One schedule object: plans compare their options (and schedules) by
    # equality, and a schedule compares by identity.
    return build_plan(model, PruningOptions(_SCHEDULE, **options))


def _one_kernel_model(units=1, kernel_initializer="glorot_uniform"):
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(units, kernel_initializer=kernel_initializer),
        ]
    )
    model.build((None, 1))
    return model


def test_attach_state_reuses_or_rebuilds():
    """The flag says whether the train function must be rebuilt: a new
    state (new variables) or other masks; the same optimizer and plan
    reuse the state. One target kernel: the state is found from it."""
    model = _one_kernel_model(units=3)
    optimizer = keras.optimizers.SGD()
    state, rebuild = attach_state(optimizer, _plan(model))
    assert rebuild is True
    again, rebuild = attach_state(optimizer, _plan(model))
    assert again is state and rebuild is False
    again, rebuild = attach_state(optimizer, _plan(model, scope="global"))
    assert again is state and rebuild is True  # other masks
    other, rebuild = attach_state(keras.optimizers.SGD(), _plan(model))
    assert other is not state and rebuild is True  # new variables


def test_attach_state_adds_the_epoch_end_variable_when_asked():
    """A state built without `remask_at_epoch_end` has no epoch-end
    variable: asking for it builds a new state that has one (-1: no
    epoch yet); the state that has one serves a plan without it."""
    model = _one_kernel_model(units=3)
    optimizer = keras.optimizers.SGD()
    state, _ = attach_state(optimizer, _plan(model))
    assert state.epoch_end is None
    remask, rebuild = attach_state(
        optimizer, _plan(model, remask_at_epoch_end=True)
    )
    assert remask is not state and rebuild is True
    assert int(_np(remask.epoch_end)) == -1
    assert remask.epoch_end.dtype == "int32"
    again, rebuild = attach_state(optimizer, _plan(model))
    assert again is remask and rebuild is True


def test_state_variables_names_and_dtypes():
    """The state's variables keep their names (their paths are what a
    `keras.distribution.LayoutMap` keys on) and dtypes: the target
    sparsity stays float32 when floatx is lower."""
    model = _one_kernel_model(units=3)
    keras.config.set_floatx("float16")
    try:
        optimizer = keras.optimizers.SGD()
        state, _ = attach_state(
            optimizer, _plan(model, remask_at_epoch_end=True)
        )
    finally:
        keras.config.set_floatx("float32")
    # A mask is named after its kernel (`add_variable_from_reference`).
    assert state.masks[0].name.endswith("_pruning_mask")
    names = {
        "pruning_step": state.step,
        "pruning_target_sparsity": state.sparsity,
        "pruning_epoch_end": state.epoch_end,
    }
    for name, variable in names.items():
        assert variable.name == name
        assert variable.path == f"{optimizer.name}/{name}"
    assert state.step.dtype == "int32"
    assert state.sparsity.dtype == "float32"
    state.sparsity.assign(0.3)
    # float16 would hold 0.2998, bfloat16 0.3008.
    assert state.target_sparsity() == float(np.float32(0.3))


def test_target_sparsity_of_n_m_masks():
    """N:M masks are `1 - n/m` sparse whatever the schedule's value, once
    pruning has started (sparsity > 0)."""
    model = _one_kernel_model(units=8)
    plan = _plan(model, structure="n_m", n_m=(1, 4))
    state, _ = attach_state(keras.optimizers.SGD(), plan)
    assert state.target_sparsity() == 0.0
    state.sparsity.assign(0.5)
    assert state.target_sparsity() == 0.75
    plain, _ = attach_state(keras.optimizers.SGD(), _plan(_one_kernel_model()))
    plain.sparsity.assign(0.5)
    assert plain.target_sparsity() == 0.5


def test_kernel_sparsity_of_a_single_weight():
    """Overall sparsity is zeros over all weights, also for one weight."""
    model = _one_kernel_model(units=1, kernel_initializer="zeros")
    state, _ = attach_state(keras.optimizers.SGD(), _plan(model))
    kernel = model.layers[0].kernel
    assert state.kernel_sparsity() == ({kernel.path: 1.0}, 1.0)
    kernel.assign(np.ones((1, 1), "float32"))
    assert state.kernel_sparsity() == ({kernel.path: 0.0}, 0.0)
