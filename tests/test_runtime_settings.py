"""Settings that cannot act raise or warn when `fit` starts.

`MagnitudePruning` checks its schedule against the steps of the coming
`fit`, `IterativePruning`'s sparsities, and its `block` against the target
kernels (`pruning/checks.py`); `check_table_optimizer` refuses the table
optimizer's documented limits (a table read twice per step, gradient
accumulation). Each message names the setting and what would make it act.
"""

import re
import warnings

import keras
import numpy as np
import pytest

from keras_efficient.applications import TransformerLM
from keras_efficient.callbacks import MagnitudePruning
from keras_efficient.layers import SparseLookupTable
from keras_efficient.optimizers import check_table_optimizer
from keras_efficient.pruning import ConstantSparsity
from keras_efficient.pruning import IterativePruning
from keras_efficient.pruning import PolynomialDecay
from tests import callback_harness as harness

# 64 examples, batch 16, 2 epochs: 8 steps, whose updates compute the
# masks of steps 1 to 9 (the last batch's update computes step 9's).
STEPS = 8


def _fit(callback, hidden=(16,), **kwargs):
    model = harness.dense_classifier(hidden=hidden)
    harness.fit(model, [callback], **kwargs)
    return callback


def _check_warnings(record):
    return [w for w in record if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize("begin_step", [STEPS + 2, 20, 1000])
def test_schedule_starting_after_the_fit_warns_and_prunes_nothing(begin_step):
    callback = MagnitudePruning(ConstantSparsity(0.5, begin_step=begin_step))
    with pytest.warns(
        UserWarning,
        match=rf"`schedule` cannot prune in this fit: its first pruning step "
        rf"is {begin_step}.*steps 1 to {STEPS + 1}.*at least "
        rf"{begin_step - 1} steps",
    ):
        _fit(callback)
    assert callback.achieved_sparsity() == 0.0


@pytest.mark.parametrize("frequency", [10, 50])
def test_frequency_past_the_fit_warns(frequency):
    schedule = ConstantSparsity(0.5, begin_step=0, frequency=frequency)
    with pytest.warns(
        UserWarning, match=rf"first pruning step is {frequency} \(begin_step"
    ):
        _fit(MagnitudePruning(schedule))


@pytest.mark.parametrize("end_step", [20, 400])
def test_polynomial_decay_ending_after_the_fit_warns_with_the_reach(end_step):
    schedule = PolynomialDecay(
        0.0, 0.8, begin_step=0, end_step=end_step, frequency=1
    )
    with pytest.warns(
        UserWarning,
        match=rf"`schedule` reaches sparsity .* of its peak 0.8.*last pruning "
        rf"step is {end_step}.*at least {end_step - 1} steps",
    ):
        callback = _fit(MagnitudePruning(schedule))
    assert 0.0 < callback.achieved_sparsity() < 0.8


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantSparsity(0.5, begin_step=1),
        ConstantSparsity(0.5, begin_step=0, frequency=STEPS),
        PolynomialDecay(0.0, 0.5, begin_step=1, end_step=STEPS, frequency=1),
        IterativePruning([0.3, 0.5], steps_per_cycle=4, begin_step=1),
    ],
)
def test_schedules_that_act_in_the_fit_do_not_warn(schedule):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        callback = _fit(MagnitudePruning(schedule))
    assert not [w for w in _check_warnings(record) if "`schedule`" in str(w)]
    assert callback.achieved_sparsity() == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize(
    "sparsities", [[0.5, 0.3], [0.2, 0.6, 0.4], [0.9, 0.1, 0.2]]
)
def test_decreasing_iterative_sparsities_raise(sparsities):
    schedule = IterativePruning(sparsities, steps_per_cycle=2, begin_step=1)
    with pytest.raises(
        ValueError,
        match=r"`sparsities` of `IterativePruning` must not decrease.*"
        + rf"Received: sparsities=\[{sparsities[0]}",
    ):
        _fit(MagnitudePruning(schedule))


@pytest.mark.parametrize("block", [(16, 16), (64, 64), (16, 17)])
def test_block_larger_than_every_kernel_raises(block):
    callback = MagnitudePruning(
        ConstantSparsity(0.5, begin_step=1), block=block
    )
    with pytest.raises(
        ValueError,
        match=re.escape(f"`block={block}`")
        + r" leaves nothing to prune at sparsity 0.5.*"
        r"dense.*kernel \(12, 16\): 1 block",
    ):
        _fit(callback)


def test_block_larger_than_some_kernels_warns_naming_them():
    # Kernels (12, 32) and (32, 16) have 2 blocks of (16, 16) each; the
    # output kernel (16, 3) is one block: only it is named.
    callback = MagnitudePruning(
        ConstantSparsity(0.5, begin_step=1), block=(16, 16)
    )
    with pytest.warns(
        UserWarning, match=r"in 1 kernel\(s\) \(.*kernel \(16, 3\): 1 block"
    ):
        _fit(callback, hidden=(32, 16))
    assert 0.0 < callback.achieved_sparsity() < 0.5


@pytest.mark.parametrize("block", [(4, 4), (6, 8), (12, 8)])
def test_blocks_that_tile_the_kernels_prune(block):
    callback = MagnitudePruning(
        ConstantSparsity(0.5, begin_step=1), block=block
    )
    _fit(callback)
    assert callback.achieved_sparsity() > 0.3


def test_global_scope_prunes_whole_kernels_as_blocks():
    callback = MagnitudePruning(
        ConstantSparsity(0.5, begin_step=1), scope="global", block=(32, 32)
    )
    _fit(callback)  # 2 kernels, one block each: one is pruned
    assert callback.achieved_sparsity() > 0.0


# ---------------------------------------------------------------- tables


def _twice_read_model(table_optimizer):
    table = SparseLookupTable(
        8, lookup="lsh", table_optimizer=table_optimizer, name="shared_table"
    )
    inputs = keras.Input((3, 4))
    return keras.Model(inputs, table(table(inputs)), name="twice")


@pytest.mark.parametrize("table_optimizer", ["adam", "sgd"])
def test_table_read_twice_per_step_raises(table_optimizer):
    with pytest.raises(
        ValueError,
        match=r"`shared_table` has a `table_optimizer` and must be called "
        r"once per training step.*2 calls of `shared_table` in model `twice`",
    ):
        check_table_optimizer(_twice_read_model(table_optimizer))


def test_table_read_twice_without_table_optimizer_is_fine():
    check_table_optimizer(_twice_read_model(None))


def _lm(table_optimizer):
    return TransformerLM(
        vocabulary_size=16,
        sequence_length=8,
        hidden_dim=8,
        num_layers=1,
        num_heads=1,
        lookup={"num_entries": 32, "table_optimizer": table_optimizer},
    )


@pytest.mark.parametrize("table_optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("steps", [2, 4])
def test_gradient_accumulation_with_a_table_optimizer_raises(
    table_optimizer, steps
):
    optimizer = keras.optimizers.SGD(gradient_accumulation_steps=steps)
    with pytest.raises(
        ValueError,
        match=r"`gradient_accumulation_steps` of the model's optimizer cannot "
        rf"be used with a table optimizer \(layer `lookup_table`\).*={steps}",
    ):
        _lm(table_optimizer).compile(optimizer, "mse")


def test_gradient_accumulation_without_a_table_optimizer_trains():
    model = _lm(None)
    model.compile(
        keras.optimizers.SGD(0.1, gradient_accumulation_steps=2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    ids = np.random.default_rng(0).integers(0, 16, (8, 8)).astype("int32")
    history = model.fit(ids, ids, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
