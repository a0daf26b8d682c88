"""ActiveDistillation on every kind of pool: arrays, dicts of arrays (a
keras-hub model's inputs), raw strings with each model's own preprocessor,
and streamed `tf.data.Dataset` / `keras.utils.PyDataset` pools."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_efficient.callbacks import ActiveDistillation
from tests import callback_harness as harness

N, T, V, C = 64, 6, 12, 3
BUDGET, PER_ROUND, BATCH = 24, 8, 8
WORDS = [f"w{i}" for i in range(V - 2)]
LOSS = keras.losses.CategoricalCrossentropy(from_logits=True)


def token_pool(seed=0):
    """keras-hub style inputs: token ids and a padding mask."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, V, size=(N, T)).astype("int32")
    lengths = rng.integers(2, T + 1, size=N)
    mask = np.arange(T)[None] < lengths[:, None]
    return {"token_ids": np.where(mask, ids, 0), "padding_mask": mask}


def text_pool(seed=0):
    """Raw text: the same token ids written as words."""
    pool = token_pool(seed)
    return np.array(
        [
            " ".join(WORDS[i - 2] for i in row[m] if i >= 2) or "w0"
            for row, m in zip(pool["token_ids"], pool["padding_mask"])
        ]
    )


def _softmax(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype("float32")


class CountingTeacher:
    """Class probabilities from token counts; records what it is sent."""

    def __init__(self):
        self.sent = []

    def __call__(self, x):
        if isinstance(x, dict):
            ids = np.where(x["padding_mask"], x["token_ids"], 0)
        else:  # raw text: the teacher brings its own preprocessor
            ids = keras.ops.convert_to_numpy(text_vectorizer()(x))
        self.sent.append(ids.copy())
        counts = np.stack([(ids % C == c).sum(1) for c in range(C)], 1)
        return _softmax(counts.astype("float32"))


def text_vectorizer():
    return keras.layers.TextVectorization(
        vocabulary=WORDS, output_sequence_length=T
    )


def token_student(seed=0):
    """A tiny keras-hub style classifier on token ids and padding mask."""
    keras.utils.set_random_seed(seed)
    ids = keras.Input((T,), dtype="int32", name="token_ids")
    mask = keras.Input((T,), dtype="bool", name="padding_mask")
    x = keras.layers.Embedding(V, 8)(ids)
    weights = keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    x = keras.ops.sum(x * weights, 1) / keras.ops.maximum(
        keras.ops.sum(weights, 1), 1.0
    )
    logits = keras.layers.Dense(C)(keras.layers.Dense(8, "relu")(x))
    return keras.Model({"token_ids": ids, "padding_mask": mask}, logits)


def id_student(seed=0):
    """A student on token ids (what the text preprocessor gives)."""
    keras.utils.set_random_seed(seed)
    ids = keras.Input((T,), dtype="int32")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(V, 8)(ids))
    return keras.Model(ids, keras.layers.Dense(C)(x))


class RowsDataset(keras.utils.PyDataset):
    """A PyDataset of unlabeled batches (rows read on demand)."""

    def __init__(self, data, batch_size):
        super().__init__()
        self.data, self.batch_size = data, batch_size

    def __len__(self):
        n = len(keras.tree.flatten(self.data)[0])
        return -(-n // self.batch_size)

    def __getitem__(self, i):
        rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return keras.tree.map_structure(lambda a: a[rows], self.data)


def make_pool(kind, seed=0):
    """`(pool, student factory, preprocessor)` of a pool kind."""
    if kind == "dict":
        return token_pool(seed), token_student, None
    if kind == "text":
        return text_pool(seed), id_student, text_vectorizer()
    if kind == "tf_data":
        data = tf.data.Dataset.from_tensor_slices(token_pool(seed))
        return data.batch(7), token_student, None  # 7: not BATCH
    if kind == "py_dataset":
        return RowsDataset(token_pool(seed), 5), token_student, None
    raise ValueError(kind)


def make_active(pool, teacher, preprocessor, **kwargs):
    settings = dict(
        budget=BUDGET,
        queries_per_round=PER_ROUND,
        strategy="margin",
        batch_size=BATCH,
        teacher_output_shape=(C,),
        preprocessor=preprocessor,
        seed=3,
    )
    settings.update(kwargs)
    return ActiveDistillation(pool, teacher, **settings)


def fit(student, active, epochs=4, callbacks=()):
    return harness.fit(
        student,
        [active, *callbacks],
        (active.dataset, None),
        epochs,
        batch_size=None,
        loss=LOSS,
    )


KINDS = ["dict", "text", "tf_data", "py_dataset"]


@pytest.mark.parametrize("kind", KINDS)
def test_pool_kind_spends_budget_once_and_trains(kind):
    pool, make_student, preprocessor = make_pool(kind)
    teacher = CountingTeacher()
    active = make_active(pool, teacher, preprocessor)
    student = make_student()
    before = [w.copy() for w in student.get_weights()]
    history = fit(student, active)
    assert active.queries_used == BUDGET
    assert active.history == [PER_ROUND] * 3
    assert history.history["queries_used"] == [16, 24, 24, 24]
    # Each point reached the teacher once, and its answer is the answer
    # to that point.
    assert len(np.unique(active.queried)) == BUDGET
    assert sum(len(s) for s in teacher.sent) == BUDGET
    np.testing.assert_allclose(
        active.train_y, CountingTeacher()(active.train_x), rtol=1e-6
    )
    assert any(
        not np.allclose(a, b) for a, b in zip(before, student.get_weights())
    )


@pytest.mark.parametrize("kind", ["tf_data", "py_dataset"])
def test_streamed_pool_chooses_what_the_array_pool_chooses(kind):
    """Streamed and in-memory pools of the same rows: same scores, same
    rounds, same student."""
    arrays = token_pool()
    ref = make_active(arrays, CountingTeacher(), None)
    ref_student = token_student()
    fit(ref_student, ref)
    pool, _, _ = make_pool(kind)
    streamed = make_active(pool, CountingTeacher(), None)
    student = token_student()
    fit(student, streamed)
    np.testing.assert_array_equal(streamed.queried, ref.queried)
    np.testing.assert_array_equal(streamed.train_y, ref.train_y)
    harness.assert_same_weights(ref_student, student)
    # The streamed pool keeps only the chosen rows in memory.
    assert len(streamed._pool._cache_idx) == BUDGET


def test_text_pool_trains_on_the_chosen_strings():
    pool, _, preprocessor = make_pool("text")
    active = make_active(pool, CountingTeacher(), preprocessor)
    fit(id_student(), active, epochs=2)
    assert active.train_x.dtype.kind == "U"
    np.testing.assert_array_equal(active.train_x, pool[active.queried])
    x, y = active.dataset[0]
    assert x.shape == (BATCH, T) and y.shape == (BATCH, C)


@pytest.mark.parametrize("kind", KINDS)
def test_crash_and_resume_same_queries_same_student(tmp_path, kind):
    pool, make_student, preprocessor = make_pool(kind)
    teachers, dirs = [], iter(["reference", "run", "run"])

    def make_callback():
        teachers.append(CountingTeacher())
        return make_active(
            pool, teachers[-1], preprocessor, state_dir=tmp_path / next(dirs)
        )

    reference, ref_cb, model, callback = harness.crash_and_resume(
        make_student,
        make_callback,
        tmp_path / "run",
        data=lambda cb: (cb.dataset, None),
        epochs=4,
        crash_epoch=1,  # round 2 (end of epoch 1) is still to come
        batch_size=None,
        loss=LOSS,
    )
    np.testing.assert_array_equal(callback.queried, ref_cb.queried)
    harness.assert_same_weights(reference, model)
    # The crashed and resumed runs together sent the budget, once each.
    sent = np.concatenate([s for t in teachers[1:] for s in t.sent])
    assert len(sent) == BUDGET
    assert len(teachers[2].sent) == 1  # only the last round after resume


@pytest.mark.parametrize("kind", ["dict", "text", "tf_data"])
def test_state_dir_refuses_another_pool_of_the_same_size(tmp_path, kind):
    pool, make_student, preprocessor = make_pool(kind)
    active = make_active(
        pool, CountingTeacher(), preprocessor, state_dir=tmp_path
    )
    fit(make_student(), active, epochs=1)
    other, _, _ = make_pool(kind, seed=1)
    teacher = CountingTeacher()
    with pytest.raises(ValueError, match="pool_fingerprint.*start afresh"):
        make_active(other, teacher, preprocessor, state_dir=tmp_path)
    assert teacher.sent == []
    # The same pool resumes.
    again = make_active(
        pool, CountingTeacher(), preprocessor, state_dir=tmp_path
    )
    assert again.state.queries_spent == 2 * PER_ROUND


def test_state_dir_refuses_another_teacher_output_shape(tmp_path):
    pool = token_pool()
    make_active(pool, CountingTeacher(), None, state_dir=tmp_path)
    with pytest.raises(ValueError, match="teacher_output_shape"):
        make_active(
            pool,
            CountingTeacher(),
            None,
            state_dir=tmp_path,
            teacher_output_shape=(C + 1,),
        )


def test_fingerprint_sees_one_changed_row_of_a_stream():
    from keras_efficient.distillation.active.pool import as_pool

    a = token_pool()
    b = {k: v.copy() for k, v in a.items()}
    b["token_ids"][N // 2, 0] += 1
    streams = [tf.data.Dataset.from_tensor_slices(p).batch(9) for p in (a, b)]
    assert (
        as_pool(streams[0]).fingerprint() != as_pool(streams[1]).fingerprint()
    )
    assert as_pool(a).fingerprint() == as_pool(token_pool()).fingerprint()
    assert as_pool(a).fingerprint() != as_pool(token_pool(1)).fingerprint()
