"""Run-time mistakes in the data ActiveDistillation receives, organised by
what the user passes: the pool, the validation set, the teacher's outputs
and a saved state. Each error names the culprit (the argument), what was
received and what is allowed."""

import numpy as np
import pytest
import tensorflow as tf

from keras_efficient.callbacks import ActiveDistillation

N, D, C = 40, 5, 3


def _pool(seed=0):
    return np.random.default_rng(seed).normal(size=(N, D)).astype("float32")


def _teacher(x):
    logits = np.asarray(x)[:, :C] * 3.0
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype("float32")


_DEFAULT = object()


def _make(pool=_DEFAULT, teacher=_teacher, **kwargs):
    settings = dict(
        budget=8,
        queries_per_round=4,
        strategy="margin",
        batch_size=4,
        teacher_output_shape=(C,),
    )
    settings.update(kwargs)
    return ActiveDistillation(
        _pool() if pool is _DEFAULT else pool, teacher, **settings
    )


def _round_zero(active):
    """Round 0 (uniform, no student needed): the first teacher query."""
    active.on_train_begin()
    active.on_epoch_begin(0)


# ---- the pool ---------------------------------------------------------------
POOLS = {
    "empty_array": (np.zeros((0, D), "float32"), "at least one input"),
    "empty_dict": (
        {
            "token_ids": np.zeros((0, 4), "int32"),
            "padding_mask": np.zeros((0, 4), bool),
        },
        "at least one input",
    ),
    "empty_list": ([], "at least one array"),
    "empty_dataset": (
        tf.data.Dataset.from_tensor_slices(np.zeros((0, D), "float32")).batch(
            4
        ),
        "empty dataset",
    ),
    "infinite_dataset": (
        tf.data.Dataset.from_tensor_slices(_pool()).batch(4).repeat(),
        "a finite dataset",
    ),
    "dict_of_unequal_lengths": (
        {
            "token_ids": np.zeros((N, 4), "int32"),
            "padding_mask": np.ones((N - 1, 4), bool),
        },
        "arrays with one number of rows",
    ),
    "scalar": (np.float32(1.0), "leading row axis"),
    "a_string": ("some text", "an array, a dict of arrays or a dataset"),
    "none": (None, "an array, a dict of arrays or a dataset"),
}


@pytest.mark.parametrize("case", sorted(POOLS))
def test_pool(case):
    pool, allowed = POOLS[case]
    with pytest.raises(ValueError, match=f"`pool` must be .*{allowed}"):
        _make(pool)


def test_pool_smaller_than_budget_names_budget():
    with pytest.raises(ValueError, match=r"`budget` must be .*<= 5"):
        _make(_pool()[:5], budget=8)


def test_dataset_batches_of_another_shape():
    data = tf.data.Dataset.from_generator(
        lambda: iter(
            [np.zeros((4, D), "float32"), np.zeros((4, D + 1), "float32")]
        ),
        output_signature=tf.TensorSpec((None, None), tf.float32),
    )
    with pytest.raises(ValueError, match="`pool` must be batches of one kind"):
        _make(data)


def test_preprocessor_not_callable():
    with pytest.raises(
        TypeError, match="`preprocessor` must be None or a callable"
    ):
        _make(preprocessor="bert")


def test_untraceable_teacher_on_text_asks_for_teacher_output_shape():
    def teacher(x):
        raise RuntimeError("needs a server")

    text = np.array([f"w{i}" for i in range(N)])
    with pytest.raises(ValueError, match="Pass `teacher_output_shape`"):
        _make(text, teacher, teacher_output_shape=None)


# ---- the validation set -----------------------------------------------------
def _labels():
    return _teacher(_pool()[:10]).argmax(1)


VALIDATION = {
    "empty": (
        (np.zeros((0, D), "float32"), np.zeros(0, int)),
        "at least one input",
    ),
    "lengths_differ": (
        (_pool()[:10], _labels()[:7]),
        "the same length.*10 inputs and 7 labels",
    ),
    "one_based_ids": (
        (_pool()[:10], _labels() + 1),
        r"class ids in \[0, 3\).*max 3",
    ),
    "negative_ids": (
        (_pool()[:10], np.where(_labels() == 0, -1, _labels())),
        r"class ids in \[0, 3\).*min -1",
    ),
    "fractional_labels": ((_pool()[:10], _labels() + 0.5), "integer class ids"),
    "label_rows_of_another_width": (
        (_pool()[:10], np.eye(C + 1)[_labels()]),
        "probabilities.*width 4",
    ),
    "labels_3d": (
        (_pool()[:10], np.zeros((10, C, 2))),
        r"labels of shape \(n,\)",
    ),
    "inputs_of_another_width": (
        (_pool()[:10, :-1], _labels()),
        "the pool's kind and row shape",
    ),
    "dict_for_an_array_pool": (
        ({"x": _pool()[:10]}, _labels()),
        "the pool's kind and row shape",
    ),
    "scalar_labels": ((_pool()[:10], np.int64(1)), "a pair"),
    "not_a_pair": ((_pool()[:10],), "a pair"),
}


@pytest.mark.parametrize("case", sorted(VALIDATION))
def test_validation(case):
    validation, allowed = VALIDATION[case]
    with pytest.raises(ValueError, match=f"`validation` must be .*{allowed}"):
        _make(validation=validation)


def test_validation_checked_with_robust_strategy_too():
    with pytest.raises(
        ValueError, match=r"`validation` must be class ids in \[0, 3\)"
    ):
        _make(strategy="robust", validation=(_pool()[:10], _labels() + 1))


# ---- the teacher's outputs --------------------------------------------------
TEACHERS = {
    "class_ids": (lambda x: _teacher(x).argmax(1), "class ids"),
    "wider_than_declared": (
        lambda x: np.tile(_teacher(x), 2),
        r"outputs of shape \(6,\)",
    ),
    "narrower_than_declared": (
        lambda x: _teacher(x)[:, :2],
        r"outputs of shape \(2,\)",
    ),
    "fewer_rows": (lambda x: _teacher(x)[:-1], "3 outputs for 4 inputs"),
    "one_sigmoid_column": (
        lambda x: _teacher(x)[:, :1],
        r"outputs of shape \(1,\)",
    ),
}


@pytest.mark.parametrize("case", sorted(TEACHERS))
def test_teacher_outputs(case):
    teacher, received = TEACHERS[case]
    active = _make(teacher=teacher)
    with pytest.raises(
        ValueError, match=f"`teacher` must return .*{received}.*round 0"
    ):
        _round_zero(active)
    # The batch counts as sent; nothing of it was kept.
    assert active.state.queries_spent == 4 and active.queries_used == 0


def test_teacher_outputs_on_the_validation_set():
    active = _make(
        teacher=lambda x: _teacher(x)[:, :2],
        strategy="robust",
        validation=(_pool()[:10], _labels()),
    )
    with pytest.raises(
        ValueError, match="`teacher` must return .*validation set"
    ):
        active._teacher_accuracy()


# ---- a saved state ----------------------------------------------------------
SAVED = {
    "another_pool_of_the_same_size": (dict(pool=_pool(1)), "pool_fingerprint"),
    "one_changed_row": (
        dict(pool=np.concatenate([_pool()[:-1], _pool(2)[:1]])),
        "pool_fingerprint",
    ),
    "another_teacher_output_shape": (
        dict(teacher_output_shape=(C + 1,)),
        "teacher_output_shape",
    ),
    "another_budget": (dict(budget=12), "budget=8 there, 12 here"),
    "another_round_size": (dict(queries_per_round=2), "queries_per_round"),
    "another_seed": (dict(seed=9), "`seed` must match"),
}


@pytest.mark.parametrize("case", sorted(SAVED))
def test_saved_state(tmp_path, case):
    _round_zero(_make(state_dir=tmp_path, seed=0))
    changes, culprit = SAVED[case]
    calls = []

    def teacher(x):
        calls.append(len(x))
        return _teacher(x)

    with pytest.raises(ValueError, match=culprit) as error:
        _make(teacher=teacher, state_dir=tmp_path, **{"seed": 0, **changes})
    assert calls == []
    if "fingerprint" in culprit:
        assert "start afresh" in str(error.value)
