"""`MagnitudePruning(structure="transformer")`: whole Transformer units
zeroed during `fit`, then removed by `shrink`.

Tiny random-init keras-hub tasks (nothing downloaded) and the package's
`TransformerLM`. After `fit` every zero of a pruned weight lies in a whole
removed unit and every removed unit is zero in all its weights; `shrink`
removes exactly those units, and (without hidden channels, whose removal
changes the norms' statistics) the shrunk model computes what the masked
one does.
"""

import logging
import os
import tempfile

import keras
import numpy as np
import pytest

from keras_efficient.applications import TransformerLM
from keras_efficient.callbacks import MagnitudePruning
from keras_efficient.pruning import ConstantSparsity
from keras_efficient.pruning import shrink
from keras_efficient.pruning import transformer_widths
from keras_efficient.pruning.masks import keep_count
from keras_efficient.pruning.plan import PruningOptions
from keras_efficient.pruning.plan import build_plan
from keras_efficient.pruning.plan_masks import plan_masks
from keras_efficient.pruning.transformer_families import Layout
from keras_efficient.pruning.transformer_units import zero_plan
from keras_efficient.pruning.transformer_width import _zero
from tests.callback_harness import assert_config_round_trip
from tests.callback_harness import run_callback_test

VOCAB, LENGTH = 64, 8
GQA = dict(num_query_heads=4, num_key_value_heads=2)
SPARSITY = 0.5


def _hub():
    return pytest.importorskip("keras_hub").models


def _gemma():
    backbone = _hub().GemmaBackbone(
        vocabulary_size=VOCAB, num_layers=2, hidden_dim=16,
        intermediate_dim=32, head_dim=8, **GQA,
    )  # fmt: skip
    return _hub().GemmaCausalLM(backbone, preprocessor=None)


def _llama():
    backbone = _hub().LlamaBackbone(
        vocabulary_size=VOCAB, num_layers=2, hidden_dim=16,
        intermediate_dim=32, **GQA,
    )  # fmt: skip
    return _hub().LlamaCausalLM(backbone, preprocessor=None)


def _gpt2():
    backbone = _hub().GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=16,
    )  # fmt: skip
    return _hub().GPT2CausalLM(backbone, preprocessor=None)


def _lm():
    keras.utils.set_random_seed(0)
    return TransformerLM(
        vocabulary_size=VOCAB, sequence_length=LENGTH, hidden_dim=16,
        num_layers=2, num_heads=4, intermediate_dim=32, positions="learned",
    )  # fmt: skip


BUILDERS = {"gemma": _gemma, "llama": _llama, "gpt2": _gpt2, "lm": _lm}
# (family, axes pruned, whether the shrunk model equals the masked one)
CASES = [
    ("gemma", ("ffn", "heads"), True),
    ("lm", ("ffn", "heads"), True),  # its own head_dim: heads go alone
    ("lm", ("ffn", "heads", "hidden"), False),
    # GPT-2 as a new user prunes it: the default axes (feed-forward
    # neurons; its heads go only with hidden channels).
    ("gpt2", None, True),
    pytest.param("llama", None, True, marks=pytest.mark.slow),
    pytest.param("gpt2", ("ffn", "heads", "hidden"), False,
                 marks=pytest.mark.slow),
]  # fmt: skip


def _data(name, n=32):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, (n, LENGTH)).astype("int32")
    y = rng.integers(0, VOCAB, (n, LENGTH)).astype("int32")
    if name == "lm":
        return ids, y
    return {"token_ids": ids, "padding_mask": np.ones_like(ids)}, y


def _compile(model):
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=keras.backend.backend() != "torch",
    )
    return model


def _callback(axes, frequency=2):
    schedule = ConstantSparsity(SPARSITY, begin_step=0, frequency=frequency)
    return MagnitudePruning(
        schedule, structure="transformer", transformer_axes=axes
    )


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _assert_whole_units_zeroed(model, axes, expected_axes):
    """Every zero of every weight lies in a removed unit, every removed
    unit is zero in all its weights, and each layer removed as many units
    as the schedule says."""
    layout = Layout(model)
    plan = zero_plan(layout)
    widths = layout.widths
    for axis in ("ffn", "heads"):
        kept = [len(k) for k in plan[axis]]
        n = widths[axis][0]
        want = keep_count(n, SPARSITY) if axis in expected_axes else n
        assert kept == [want] * layout.num_layers, (axis, kept)
    if "hidden" in expected_axes:
        assert len(plan["hidden"]) < layout.hidden_dim
    for variable, dims in layout.entries:
        removed = _zero(layout, plan, np.ones(variable.shape), dims) == 0
        zeros = _np(variable) == 0
        np.testing.assert_array_equal(zeros, removed, err_msg=variable.path)


@pytest.mark.parametrize("name, axes, equal", CASES)
def test_fit_zeroes_whole_units_and_shrink_removes_them(name, axes, equal):
    model = _compile(BUILDERS[name]())
    x, y = _data(name)
    callback = _callback(axes)
    history = model.fit(
        x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback]
    )
    assert "pruning_sparsity" in history.history
    layout = Layout(model)
    expected = axes or (
        ("ffn",) if layout.derived_head_dim else ("ffn", "heads")
    )
    _assert_whole_units_zeroed(model, axes, expected)
    small = shrink(model)
    assert type(small) is type(model)
    widths = transformer_widths(small)
    for axis in ("ffn", "heads"):
        n = layout.widths[axis][0]
        want = keep_count(n, SPARSITY) if axis in expected else n
        assert widths[axis] == [want] * layout.num_layers
    assert small.count_params() < model.count_params()
    if equal:
        xs = keras.tree.map_structure(lambda a: a[:4], x)
        masked = _np(model(xs, training=False))
        np.testing.assert_allclose(
            _np(small(xs, training=False)),
            masked,
            atol=1e-4 * float(np.abs(masked).max()),
        )


def test_heads_alone_on_a_derived_head_size_is_refused():
    with pytest.raises(ValueError, match="transformer_axes.*hidden_dim"):
        _compile(_gpt2()).fit(
            *_data("gpt2", 8), verbose=0, callbacks=[_callback(["heads"])]
        )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(structure="transformer", scope="global"), "scope"),
        (dict(structure="filter", transformer_axes=["ffn"]),
         "transformer_axes"),
        (dict(structure="transformer", transformer_axes=["mlp"]),
         "transformer_axes"),
        (dict(structure="transformer", transformer_axes="ffn"),
         "transformer_axes"),
        (dict(structure="transformer", transformer_axes=[]),
         "transformer_axes"),
        (dict(n_m_update="once"), "n_m_update"),
        (dict(n_m_update="first_step"), "n_m_update"),
        (dict(remask_at_epoch_end=1), "remask_at_epoch_end"),
        (dict(n_m=(2, 4), n_m_update="first_step", remask_at_epoch_end=True),
         "remask_at_epoch_end"),
        (dict(structure="transformer", layer_sparsity={"a": 0.5}),
         "layer_sparsity"),
    ],
)  # fmt: skip
def test_bad_options_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MagnitudePruning(ConstantSparsity(0.5), **kwargs)


def test_config_round_trip_keeps_the_new_options():
    for callback in (
        _callback(["ffn", "heads"]),
        MagnitudePruning(
            ConstantSparsity(0.5), n_m=(2, 4), n_m_update="first_step"
        ),
        MagnitudePruning(ConstantSparsity(0.5), remask_at_epoch_end=True),
    ):
        restored = assert_config_round_trip(callback)
        assert restored.transformer_axes == callback.transformer_axes
        assert restored.n_m_update == callback.n_m_update
        assert restored.remask_at_epoch_end == callback.remask_at_epoch_end


def test_numpy_and_ops_unit_masks_agree():
    model = _lm()
    options = PruningOptions(
        schedule=ConstantSparsity(0.5),
        structure="transformer",
        transformer_axes=("ffn", "heads", "hidden"),
    )
    plan = build_plan(model, options)
    values = [_np(k) for k in plan.kernels]
    rng = np.random.default_rng(0)
    values = [v + rng.normal(0, 1, v.shape).astype(v.dtype) for v in values]
    for sparsity in (0.25, 0.5, 0.75):
        ref = plan_masks(values, sparsity, plan, backend="numpy")
        ops = plan_masks(values, sparsity, plan, backend="ops")
        for r, o in zip(ref, ops):
            np.testing.assert_array_equal(r, _np(o))


def test_backup_and_restore_resumes_the_same_masks(tmp_path):
    def make_callback():
        return _callback(["ffn", "heads", "hidden"], frequency=3)

    reference, _, resumed, callback = run_callback_test(
        _lm, make_callback, tmp_path, data=_data("lm", 32), epochs=4
    )
    for a, b in zip(reference.weights, resumed.weights):
        np.testing.assert_array_equal(_np(a) == 0, _np(b) == 0, a.path)
    _assert_whole_units_zeroed(resumed, None, ("ffn", "heads", "hidden"))


def test_keras_round_trip_of_the_pruned_and_the_shrunk_model():
    model = _compile(_lm())
    x, y = _data("lm")
    axes = ["ffn", "heads", "hidden"]
    model.fit(x, y, batch_size=8, epochs=2, verbose=0,
              callbacks=[_callback(axes)])  # fmt: skip
    small = shrink(model)
    with tempfile.TemporaryDirectory() as d:
        for m in (model, small):
            path = os.path.join(d, f"{m.name}_{id(m)}.keras")
            m.save(path)
            loaded = keras.saving.load_model(path, safe_mode=True)
            np.testing.assert_allclose(
                _np(loaded(x[:4], training=False)),
                _np(m(x[:4], training=False)),
                atol=1e-5,
            )
    assert transformer_widths(small) == {
        "ffn": [16, 16], "heads": [2, 2], "hidden": 8
    }  # fmt: skip


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="counts XLA compiles on JAX"
)
def test_unit_masks_update_inside_one_compiled_step():
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
        model = _compile(_gemma())
        x, y = _data("gemma", 16)
        callback = _callback(["ffn", "heads"], frequency=1)
        model.fit(x, y, batch_size=8, epochs=3, verbose=0,
                  callbacks=[callback])  # fmt: skip
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)
    assert len(compiles) == 1, compiles
    _assert_whole_units_zeroed(model, None, ("ffn", "heads"))


def test_n_m_first_step_masks_once_at_step_1():
    """tfmot's N:M: the 2:4 mask of the initial kernel, at every batch,
    even with a schedule that prunes every third step from step 3."""
    from keras_efficient.pruning import masks as masks_lib

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    initial = masks_lib.n_m_mask(_np(model.layers[0].kernel), 2, 4)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.model  # noqa: B018 (on JAX, syncs the jitted state back)
            seen.append(_np(pruning.mask_variables[0]))

    pruning = MagnitudePruning(
        ConstantSparsity(0.5, begin_step=0, frequency=3),
        n_m=(2, 4),
        n_m_update="first_step",
    )
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    model.fit(x, x[:, :4], batch_size=4, epochs=2, verbose=0, shuffle=False,
              callbacks=[pruning, Record()])  # fmt: skip
    assert len(seen) == 16
    for mask in seen:
        np.testing.assert_array_equal(mask, initial)


def test_remask_at_epoch_end_needs_known_steps():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    model.compile("sgd", "mse")

    def batches():
        for _ in range(2):
            yield np.ones((4, 8), "float32"), np.ones((4, 4), "float32")

    pruning = MagnitudePruning(ConstantSparsity(0.5), remask_at_epoch_end=True)
    with pytest.raises(ValueError, match="remask_at_epoch_end"):
        model.fit(batches(), epochs=1, verbose=0, callbacks=[pruning])
