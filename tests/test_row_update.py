"""Tests of `SparseLookupTable(table_optimizer=...)`: the lazy row update.

`apply_row_update` and the fitted table are checked against a NumPy
reference of lazy Adam / SGD (the Keras formulas applied to the rows read
in a step only, gradients of repeated reads summed).
"""

import os
import tempfile

import keras
import numpy as np
import pytest
from keras import ops

from keras_efficient.layers import SparseLookupTable
from keras_efficient.optimizers.row_update import RowUpdate
from keras_efficient.optimizers.row_update import apply_row_update
from keras_efficient.optimizers.row_update import row_update_from
from tests.harness import BACKEND
from tests.harness import JIT
from tests.harness import _gradients
from tests.harness import to_numpy

N, D, VOCAB = 64, 3, 100
IDS = [
    np.array([[1, 5, 5, 9]]),
    np.array([[5, 2, 40, 2]]),
    np.array([[7, 7, 7, 7]]),
]
C = np.arange(1, 4 * D + 1, dtype="float32").reshape(1, 4, D) / 10


def _numpy_row_step(update, table, slots, step, index, grad):
    """One lazy step in float64: the rows in `index` move, others do not."""
    table = table.astype("float64").copy()
    slots = [s.astype("float64").copy() for s in slots]
    summed = np.zeros_like(table)
    np.add.at(summed, index, grad.astype("float64"))
    rows = np.unique(index)
    g = summed[rows]
    lr = update.learning_rate
    if not isinstance(lr, float):
        lr = float(to_numpy(lr(step)))
    if update.kind == "adam":
        m, v = slots
        t = step + 1
        b1, b2 = update.beta_1, update.beta_2
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        m[rows] += (g - m[rows]) * (1 - b1)
        v[rows] += (g**2 - v[rows]) * (1 - b2)
        table[rows] -= alpha * m[rows] / (np.sqrt(v[rows]) + update.epsilon)
    elif not update.momentum:
        table[rows] -= lr * g
    else:
        (u,) = slots
        u[rows] = update.momentum * u[rows] - lr * g
        if update.nesterov:
            table[rows] += update.momentum * u[rows] - lr * g
        else:
            table[rows] += u[rows]
    return table, slots, step + 1


UNIT_UPDATES = {
    "adam": RowUpdate("adam", 0.01),
    "adam_betas": RowUpdate("adam", 0.05, beta_1=0.5, beta_2=0.9, epsilon=1e-3),
    "sgd": RowUpdate("sgd", 0.1),
    "momentum": RowUpdate("sgd", 0.1, momentum=0.9),
    "nesterov": RowUpdate("sgd", 0.1, momentum=0.9, nesterov=True),
}


@pytest.mark.parametrize("name", list(UNIT_UPDATES))
@pytest.mark.parametrize("step", [0.0, 3.0])
def test_apply_row_update_matches_numpy(name, step):
    update = UNIT_UPDATES[name]
    rng = np.random.default_rng(1)
    table = rng.normal(size=(10, 4)).astype("float32")
    slots = []
    for slot in update.slots:
        values = rng.normal(size=(10, 4))
        if slot == "velocity":
            values = np.abs(values)
        slots.append(values.astype("float32"))
    index = np.array([3, 7, 3, 0, 7, 7], "int32")
    grad = rng.normal(size=(6, 4)).astype("float32")
    got_table, got_slots, got_step = apply_row_update(
        update,
        ops.convert_to_tensor(table),
        tuple(ops.convert_to_tensor(s) for s in slots),
        ops.convert_to_tensor(np.float32(step)),
        ops.convert_to_tensor(index),
        ops.convert_to_tensor(grad),
    )
    want_table, want_slots, _ = _numpy_row_step(
        update, table, slots, step, index, grad
    )
    got_table = to_numpy(got_table)
    np.testing.assert_allclose(got_table, want_table, rtol=1e-5, atol=1e-6)
    assert len(got_slots) == len(slots)
    for got, want in zip(got_slots, want_slots):
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-6)
    assert float(to_numpy(got_step)) == step + 1
    untouched = np.setdiff1d(np.arange(10), index)
    np.testing.assert_array_equal(got_table[untouched], table[untouched])
    for got, before in zip(got_slots, slots):
        np.testing.assert_array_equal(
            to_numpy(got)[untouched], before[untouched]
        )
    # Every read row moved (summed gradient: not three separate steps).
    assert np.all(np.any(got_table[[0, 3, 7]] != table[[0, 3, 7]], axis=1))


def test_row_update_from_reads_hyperparameters():
    adam = row_update_from("adam")
    assert (adam.kind, adam.beta_1, adam.beta_2, adam.epsilon) == (
        "adam",
        0.9,
        0.999,
        pytest.approx(1e-7),
    )
    assert adam.learning_rate == pytest.approx(0.001)
    sgd = row_update_from("sgd")
    assert (sgd.kind, sgd.momentum, sgd.nesterov) == ("sgd", 0.0, False)
    assert sgd.learning_rate == pytest.approx(0.01)
    adam = row_update_from(
        keras.optimizers.Adam(0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-5)
    )
    assert adam.kind == "adam" and adam.slots == ("momentum", "velocity")
    assert adam.learning_rate == pytest.approx(0.02)
    assert (adam.beta_1, adam.beta_2) == pytest.approx((0.8, 0.99))
    assert adam.epsilon == pytest.approx(1e-5)
    sgd = row_update_from(keras.optimizers.SGD(0.3, 0.5, nesterov=True))
    assert sgd.slots == ("momentum",) and sgd.nesterov
    assert (sgd.learning_rate, sgd.momentum) == pytest.approx((0.3, 0.5))
    assert row_update_from("sgd").slots == ()


def test_schedule_is_evaluated_at_the_given_step():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 1, 0.5)
    update = row_update_from(keras.optimizers.Adam(schedule))
    assert update.learning_rate is schedule
    assert float(to_numpy(update.learning_rate_at(3.0))) == pytest.approx(
        0.0125
    )
    # SGD with a schedule: the row moves by exactly lr(step) * gradient.
    update = row_update_from(keras.optimizers.SGD(schedule))
    table = np.zeros((4, 2), "float32")
    new, _, _ = apply_row_update(
        update,
        ops.convert_to_tensor(table),
        (),
        ops.convert_to_tensor(np.float32(2.0)),
        ops.convert_to_tensor(np.array([1], "int32")),
        ops.convert_to_tensor(np.ones((1, 2), "float32")),
    )
    np.testing.assert_allclose(to_numpy(new)[1], [-0.025, -0.025], rtol=1e-6)


# End to end: the model's optimizer copies the updated table in.


@keras.saving.register_keras_serializable(package="test_row_update")
def _weighted_sum(y_true, y_pred):
    return ops.sum(y_pred * ops.convert_to_tensor(C))


def _build(table_optimizer, model_optimizer):
    """Embedding -> table(token ids): d loss / d entry of a token is `C`."""
    keras.utils.set_random_seed(0)
    ids = keras.Input((4,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, D)(ids)
    table = SparseLookupTable(
        N,
        lookup="token_id",
        token_mapping="direct",
        table_optimizer=table_optimizer,
        name="table",
    )
    model = keras.Model(ids, table(x, ids))
    model.compile(model_optimizer, _weighted_sum, jit_compile=JIT)
    return model, table


def _fit_and_reference(model, table, steps):
    update = table.row_update
    values = to_numpy(table.embeddings).copy()
    slots = [to_numpy(s).copy() for s in table.row_slots]
    step = float(to_numpy(table.row_step))
    for ids in steps:
        values, slots, step = _numpy_row_step(
            update,
            values,
            slots,
            step,
            ids.reshape(-1),
            np.broadcast_to(C, (1, 4, D)).reshape(-1, D),
        )
        model.train_on_batch(ids, np.zeros((1, 4, D)))
    return values, slots, step


END_TO_END = [
    ("adam", "adam"),
    ("sgd", "sgd"),
    (keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), "adam"),
    (keras.optimizers.Adam(0.02, beta_1=0.5), "sgd"),
]


@pytest.mark.parametrize(
    "table_optimizer, model_optimizer",
    END_TO_END,
    ids=["adam-adam", "sgd-sgd", "nesterov-adam", "adam_instance-sgd"],
)
def test_fit_matches_numpy_lazy_reference(table_optimizer, model_optimizer):
    model, table = _build(table_optimizer, model_optimizer)
    before = to_numpy(table.embeddings).copy()
    want, want_slots, want_step = _fit_and_reference(model, table, IDS)
    got = to_numpy(table.embeddings)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for slot, expected in zip(table.row_slots, want_slots):
        np.testing.assert_allclose(
            to_numpy(slot), expected, rtol=1e-5, atol=1e-6
        )
    never_read = np.setdiff1d(np.arange(N), np.concatenate(IDS, axis=None))
    np.testing.assert_array_equal(got[never_read], before[never_read])
    assert float(to_numpy(table.row_step)) == want_step == len(IDS)
    names = sorted(w.path.split("/")[-1] for w in table.weights)
    expected_names = ["embeddings", "embeddings_step"] + [
        f"embeddings_{s}" for s in table.row_update.slots
    ]
    assert names == sorted(expected_names)
    assert all(w.overwrite_with_gradient for w in table.weights)
    assert table.row_step.dtype == "float32"
    # The model's optimizer keeps no state for the table and its slots:
    # only iterations, learning rate and the Embedding's own moments.
    shapes = [tuple(v.shape) for v in model.optimizer.variables]
    assert set(shapes) <= {(), (VOCAB, D)}, shapes
    moments = 2 if model_optimizer == "adam" else 0
    assert shapes.count((VOCAB, D)) == moments


def test_schedule_uses_the_tables_own_step():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 1, 0.5)
    model, table = _build(keras.optimizers.Adam(schedule), "sgd")
    # A table step ahead of the model's iterations: the schedule (and the
    # bias correction) must follow the table's step, 4, 5, 6.
    table.row_step.assign(4.0)
    want, _, want_step = _fit_and_reference(model, table, IDS)
    np.testing.assert_allclose(
        to_numpy(table.embeddings), want, rtol=1e-5, atol=1e-6
    )
    assert float(to_numpy(table.row_step)) == want_step == 7.0


@pytest.mark.parametrize(
    "table_optimizer, error, match",
    [
        ("rmsprop", ValueError, "table_optimizer"),
        ("adamw", ValueError, "table_optimizer"),
        (keras.optimizers.RMSprop(), TypeError, "table_optimizer"),
        (keras.optimizers.Lion(), TypeError, "table_optimizer"),
        (keras.optimizers.Adam(clipnorm=1.0), ValueError, "clipnorm"),
        (keras.optimizers.SGD(clipvalue=1.0), ValueError, "clipvalue"),
        (
            keras.optimizers.Adam(global_clipnorm=1.0),
            ValueError,
            "global_clipnorm",
        ),
        (keras.optimizers.Adam(weight_decay=0.1), ValueError, "weight_decay"),
        (keras.optimizers.AdamW(), ValueError, "weight_decay"),
        (keras.optimizers.Adam(amsgrad=True), ValueError, "amsgrad"),
        (keras.optimizers.Adam(use_ema=True), ValueError, "use_ema"),
        (
            keras.optimizers.SGD(gradient_accumulation_steps=2),
            ValueError,
            "gradient_accumulation_steps",
        ),
    ],
)
def test_bad_table_optimizer(table_optimizer, error, match):
    with pytest.raises(error, match=match):
        SparseLookupTable(N, table_optimizer=table_optimizer)


@pytest.mark.parametrize(
    "table_optimizer",
    [
        "adam",
        keras.optimizers.Adam(0.01),
        keras.optimizers.SGD(
            keras.optimizers.schedules.ExponentialDecay(0.1, 1, 0.5),
            momentum=0.9,
        ),
    ],
    ids=["string", "instance", "schedule"],
)
def test_save_load_and_continue_training(table_optimizer):
    model, table = _build(table_optimizer, "adam")
    for ids in IDS[:2]:
        model.train_on_batch(ids, np.zeros((1, 4, D)))
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    loaded_table = loaded.get_layer("table")
    assert loaded_table.get_config() == table.get_config()
    for field in (
        "kind",
        "beta_1",
        "beta_2",
        "epsilon",
        "momentum",
        "nesterov",
    ):
        assert getattr(loaded_table.row_update, field) == getattr(
            table.row_update, field
        )
    for step in (0.0, 5.0):
        assert float(
            to_numpy(loaded_table.row_update.learning_rate_at(step))
        ) == (float(to_numpy(table.row_update.learning_rate_at(step))))
    for a, b in zip(loaded_table.weights, table.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    # One more step on each: the table, slots and step agree.
    for m in (model, loaded):
        m.train_on_batch(IDS[2], np.zeros((1, 4, D)))
    for a, b in zip(loaded_table.weights, table.weights):
        np.testing.assert_allclose(
            to_numpy(a), to_numpy(b), rtol=1e-6, atol=1e-7
        )
    assert float(to_numpy(loaded_table.row_step)) == 3.0


def test_product_key_router_trains_with_the_table_optimizer():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    y = rng.normal(size=(2, 5, 8)).astype("float32")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 8))
    table = SparseLookupTable(
        4096,
        lookup="router",
        router_type="product_keys",
        top_k=2,
        seed=0,
        table_optimizer=keras.optimizers.Adam(0.05),
        name="table",
    )
    model = keras.Model(inputs, table(inputs))
    model.compile(keras.optimizers.Adam(0.001), "mse", jit_compile=JIT)
    before = to_numpy(table.embeddings).copy()
    read, losses = set(), []
    for _ in range(20):
        # Rows read this step: the router at the weights before the step.
        read |= set(to_numpy(table.entry_indices(x)[0]).reshape(-1).tolist())
        losses.append(float(model.train_on_batch(x, y)))
    final = float(model.evaluate(x, y, verbose=0))
    assert final < 0.8 * losses[0], (losses, final)
    assert float(to_numpy(table.row_step)) == 20.0
    moved = np.flatnonzero(np.any(to_numpy(table.embeddings) != before, 1))
    assert moved.size > 0
    assert set(moved.tolist()) <= read, sorted(set(moved.tolist()) - read)
    assert len(read) <= 20 * 10 * 2 < 4096


def test_mixed_bfloat16_updates_the_table_in_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model, table = _build(keras.optimizers.Adam(0.01), "sgd")
    before = to_numpy(table.embeddings).copy()
    want, _, _ = _fit_and_reference(model, table, IDS)
    got = to_numpy(table.embeddings)
    read = np.unique(np.concatenate(IDS, axis=None))
    # Each read row moves by about 0.01 a step (0.03 over three steps); the
    # tolerance covers bfloat16 gradients, not a table that stays put.
    assert np.abs(want - before)[read].min() > 0.005
    np.testing.assert_allclose(got, want, atol=2e-3)
    # The step counter counts past bfloat16's exact integers (256).
    table.row_step.assign(300.0)
    model.train_on_batch(IDS[0], np.zeros((1, 4, D)))
    assert float(to_numpy(table.row_step)) == 301.0


def test_float16_loss_scaling_is_refused():
    # mixed_float16 wraps the model's optimizer in a LossScaleOptimizer,
    # whose scale the row update cannot see: refused, loudly.
    keras.config.set_dtype_policy("mixed_float16")
    with pytest.raises(ValueError, match="table_optimizer.*mixed_float16"):
        SparseLookupTable(N, lookup="token_id", table_optimizer="sgd")


def test_fit_run_eagerly_matches_numpy_lazy_reference():
    model, table = _build("adam", "adam")
    model.compile("adam", _weighted_sum, run_eagerly=True)
    want, _, _ = _fit_and_reference(model, table, IDS)
    np.testing.assert_allclose(
        to_numpy(table.embeddings), want, rtol=1e-5, atol=1e-6
    )


def test_gradient_by_hand_returns_the_updated_table():
    # Documented: the "gradient" is the updated table; torch's backward
    # writes the rows in place, the other backends leave the variables.
    _, table = _build("sgd", "sgd")
    x = np.ones((1, 4, D), "float32")
    before = [to_numpy(w).copy() for w in table.weights]
    grads = _gradients(lambda: table(x, IDS[0]), table.trainable_weights)
    # The "gradient" of the table is the updated table (the loss is the sum
    # of squares of x + entry: the gradient of a read is 2 (x + entry)).
    want, _, _ = _numpy_row_step(
        table.row_update,
        before[0],
        [],
        0.0,
        IDS[0].reshape(-1),
        2 * (x[0] + before[0][IDS[0][0]]),
    )
    np.testing.assert_allclose(to_numpy(grads[0]), want, rtol=1e-5, atol=1e-6)
    if BACKEND == "torch":
        np.testing.assert_allclose(
            to_numpy(table.embeddings), want, rtol=1e-5, atol=1e-6
        )
        return
    for weight, value in zip(table.weights, before):
        np.testing.assert_array_equal(to_numpy(weight), value)


@pytest.mark.xfail(
    strict=True,
    reason="Known limitation (documented in SparseLookupTable): with the "
    "model optimizer's gradient_accumulation_steps, "
    "Keras accumulates overwrite_with_gradient values by elementwise "
    "maximum from a zero accumulator, so the table becomes "
    "max(updated tables, 0): negative entries of rows never read move.",
)
def test_gradient_accumulation_leaves_rows_never_read():
    model, table = _build(
        keras.optimizers.SGD(0.1),
        keras.optimizers.SGD(0.01, gradient_accumulation_steps=2),
    )
    before = to_numpy(table.embeddings).copy()
    for ids in IDS[:2]:
        model.train_on_batch(ids, np.zeros((1, 4, D)))
    never_read = np.setdiff1d(np.arange(N), np.concatenate(IDS[:2], axis=None))
    np.testing.assert_array_equal(
        to_numpy(table.embeddings)[never_read], before[never_read]
    )


@pytest.mark.parametrize("lookup", ["lsh", "router"])
def test_other_lookups_move_only_the_rows_read(lookup):
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    options = {"num_tables": 2} if lookup == "lsh" else {"top_k": 2}
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 8))
    table = SparseLookupTable(
        256, lookup=lookup, table_optimizer="adam", seed=0, **options
    )
    model = keras.Model(inputs, table(inputs))
    model.compile("adam", "mse", jit_compile=JIT)
    before = to_numpy(table.embeddings).copy()
    read = np.unique(to_numpy(table.entry_indices(x)[0]))
    model.train_on_batch(x, np.zeros_like(x))
    moved = np.flatnonzero(np.any(to_numpy(table.embeddings) != before, 1))
    np.testing.assert_array_equal(moved, read)
    assert float(to_numpy(table.row_step)) == 1.0


# Rows read, skipped, then read again (3, 5, 9), one read once (11): the
# slots of a row must keep their values while it is not read.
READ_SKIP_READ = [
    np.array([[3, 5, 9, 11]]),
    np.array([[5, 20, 20, 21]]),
    np.array([[20, 21, 22, 22]]),
    np.array([[3, 9, 9, 5]]),
    np.array([[9, 3, 21, 30]]),
]


@pytest.mark.parametrize(
    "table_optimizer",
    ["adam", keras.optimizers.SGD(0.1, momentum=0.9)],
    ids=["adam", "momentum"],
)
def test_fit_rows_read_skipped_and_read_again(table_optimizer):
    model, table = _build(table_optimizer, "sgd")
    want, want_slots, _ = _fit_and_reference(model, table, READ_SKIP_READ)
    got = to_numpy(table.embeddings)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert len(table.row_slots) == len(want_slots) > 0
    for slot, expected in zip(table.row_slots, want_slots):
        np.testing.assert_allclose(
            to_numpy(slot), expected, rtol=1e-5, atol=1e-9
        )
    # Row 11, read at step 1 only, keeps its step-1 slots exactly.
    first_slots = _numpy_row_step(
        table.row_update,
        np.zeros((N, D)),
        [np.zeros((N, D))] * len(want_slots),
        0.0,
        READ_SKIP_READ[0].reshape(-1),
        C.reshape(-1, D),
    )[1]
    for slot, expected in zip(table.row_slots, first_slots):
        np.testing.assert_allclose(to_numpy(slot)[11], expected[11], rtol=1e-5)
