"""ActiveDistillation's budget survives interruptions anywhere."""

import keras
import numpy as np
import pytest
from keras.src.callbacks.callback_list import CallbackList

from keras_efficient.callbacks import ActiveDistillation
from keras_efficient.distillation import TeacherQueryError
from keras_efficient.distillation.active import SelectionState
from tests import callback_harness as harness

N, D, C = 200, 5, 3
BUDGET, PER_ROUND, BATCH = 100, 30, 16


class Crash(Exception):
    pass


class CountingTeacher:
    """Records every point it is sent; may crash once on a given call."""

    def __init__(self, crash_call=None, record_then_crash=False):
        self.sent = []
        self.calls = 0
        self.crash_call = crash_call
        self.record_then_crash = record_then_crash

    def __call__(self, x):
        self.calls += 1
        crash = self.calls == self.crash_call
        if crash and not self.record_then_crash:
            raise Crash("teacher down")
        self.sent.append(np.asarray(x).copy())
        if crash:
            raise Crash("teacher died mid-call")
        logits = np.asarray(x)[:, :C] * 3.0
        e = np.exp(logits - logits.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype("float32")


def _pool():
    return np.random.default_rng(0).normal(size=(N, D)).astype("float32")


def _student():
    model = harness.dense_classifier((D,), (8,), C)
    return harness.compile_model(
        model, "sgd", keras.losses.CategoricalCrossentropy(from_logits=True)
    )


def _make(pool, teacher, state_dir, strategy="uniform"):
    return ActiveDistillation(
        pool,
        teacher,
        BUDGET,
        PER_ROUND,
        strategy=strategy,
        batch_size=BATCH,
        state_dir=state_dir,
        seed=5,
        teacher_output_shape=(C,),
    )


def _sent_rows(teachers, pool):
    rows = np.concatenate([np.concatenate(t.sent) for t in teachers if t.sent])
    lookup = {r.tobytes(): i for i, r in enumerate(pool)}
    return np.array([lookup[r.tobytes()] for r in rows])


class CrashAt(keras.callbacks.Callback):
    """Raises at the end of an epoch or inside a training batch."""

    def __init__(self, epoch, batch=None):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.batch is None and epoch == self.epoch:
            raise Crash("crash between the round and the checkpoint")

    def on_train_batch_end(self, batch, logs=None):
        if self.batch == batch and self.current == self.epoch:
            raise Crash("crash mid-epoch")


def _run(tmp_path, crash, monkeypatch, epochs=5):
    """One run, crashed as asked, then resumed in a 'new process'."""
    pool = _pool()
    backup = str(tmp_path / "backup")
    teachers = []
    extra = []
    t0 = CountingTeacher()
    if crash == "teacher_before":
        t0 = CountingTeacher(crash_call=3)
    elif crash == "teacher_inside":
        t0 = CountingTeacher(crash_call=3, record_then_crash=True)
    elif crash == "between_round_and_save":
        extra = [CrashAt(epoch=1)]
    elif crash == "mid_epoch":
        extra = [CrashAt(epoch=2, batch=3)]
    elif crash in ("before_call", "after_call"):
        method = "mark_sent" if crash == "before_call" else "save_answers"
        calls = {"n": 0}
        original = getattr(SelectionState, method)

        def patched(self, rec, k, *args):
            calls["n"] += 1
            if crash == "after_call":
                original(self, rec, k, *args)
            if calls["n"] == 4:
                raise Crash(f"crash in {method}")
            if crash == "before_call":
                original(self, rec, k, *args)

        monkeypatch.setattr(SelectionState, method, patched)
    teachers.append(t0)
    act = _make(pool, t0, backup)
    cbs = [act] + extra + [keras.callbacks.BackupAndRestore(backup)]
    if crash is not None:
        with pytest.raises((Crash, TeacherQueryError)):
            _student().fit(act.dataset, epochs=epochs, callbacks=cbs, verbose=0)
        monkeypatch.undo()
        t1 = CountingTeacher()
        teachers.append(t1)
        act = _make(pool, t1, backup)
        cbs = [act, keras.callbacks.BackupAndRestore(backup)]
    _student().fit(act.dataset, epochs=epochs, callbacks=cbs, verbose=0)
    return act, _sent_rows(teachers, pool)


CRASHES = [
    "before_call",
    "teacher_before",
    "teacher_inside",
    "after_call",
    "between_round_and_save",
    "mid_epoch",
]


@pytest.mark.parametrize("crash", CRASHES)
def test_crash_matrix_budget_and_no_repeat(tmp_path, monkeypatch, crash):
    ref, ref_sent = _run(tmp_path / "ref", None, monkeypatch)
    act, sent = _run(tmp_path / "run", crash, monkeypatch)
    assert len(sent) <= BUDGET
    assert len(np.unique(sent)) == len(sent)  # no point sent twice
    assert len(ref_sent) == BUDGET
    if crash in ("teacher_before", "teacher_inside"):
        # The failed batch counts as sent (the teacher may have seen it).
        assert act.state.queries_spent == BUDGET
        assert len(act.state.lost_indices()) > 0
        assert set(act.queried) <= set(ref.queried)
    else:
        # Uniform choices from the saved RNG: the same points, in order.
        np.testing.assert_array_equal(np.sort(sent), np.sort(ref_sent))
        np.testing.assert_array_equal(act.queried, ref.queried)


def test_teacher_error_names_round_and_indices(tmp_path):
    pool = _pool()
    teacher = CountingTeacher(crash_call=2)
    act = _make(pool, teacher, None)
    with pytest.raises(TeacherQueryError, match=r"round 0, batch 2 of 2") as e:
        _student().fit(act.dataset, epochs=2, callbacks=[act], verbose=0)
    # Keras's traceback filter drops `__cause__`; the origin stays.
    assert isinstance(e.value.original, Crash)
    assert "Crash: teacher down (raised at" in str(e.value)
    assert "test_active_budget.py" in str(e.value)
    assert "pool indices [" in str(e.value)
    # The first batch's answers are kept though the round failed.
    assert len(act.state.rounds[0].answers[0]) == BATCH


def test_restart_without_state_dir_refuses_before_any_query(tmp_path):
    pool = _pool()
    backup = str(tmp_path / "backup")
    t0 = CountingTeacher()
    act = _make(pool, t0, None)
    cbs = [act, CrashAt(epoch=2), keras.callbacks.BackupAndRestore(backup)]
    with pytest.raises(Crash):
        _student().fit(act.dataset, epochs=5, callbacks=cbs, verbose=0)
    t1 = CountingTeacher()
    act = _make(pool, t1, None)  # a new process: no state
    cbs = [act, keras.callbacks.BackupAndRestore(backup)]
    with pytest.raises(ValueError, match="state_dir"):
        _student().fit(act.dataset, epochs=5, callbacks=cbs, verbose=0)
    assert t1.calls == 0


def test_keeps_async_dispatch():
    pool = _pool()
    act = _make(pool, CountingTeacher(), None)
    model = _student()
    # Keras dispatches batch ends asynchronously on thread-safe backends
    # (JAX, torch); the callback must not switch that off.
    baseline = CallbackList([], model=model)._async_train
    assert CallbackList([act], model=model)._async_train == baseline
    if keras.backend.backend() == "jax":
        assert baseline
    assert not hasattr(type(act), "async_safe")


def test_state_dir_of_another_run_is_refused(tmp_path):
    pool = _pool()
    _make(pool, CountingTeacher(), tmp_path)
    with pytest.raises(ValueError, match="another run"):
        ActiveDistillation(
            pool,
            CountingTeacher(),
            BUDGET + 1,
            PER_ROUND,
            strategy="uniform",
            state_dir=tmp_path,
            teacher_output_shape=(C,),
        )


def test_ledger_update_config_is_written_and_restored(tmp_path):
    """`update_config` (the callback records its drawn seed through it) is
    on disk at once: a ledger reopened on the same folder has it, and the
    added key does not make the run look like another one."""
    state = SelectionState({"budget": 4}, tmp_path)
    state.update_config({"seed": 1234})
    reopened = SelectionState({"budget": 4}, tmp_path)
    assert reopened.config == {"budget": 4, "seed": 1234}
    with pytest.raises(ValueError, match="another run"):
        SelectionState({"budget": 5}, tmp_path)


def test_drawn_seed_survives_a_restart(tmp_path):
    pool = _pool()
    first = ActiveDistillation(
        pool,
        CountingTeacher(),
        BUDGET,
        PER_ROUND,
        strategy="margin",
        state_dir=tmp_path,
        teacher_output_shape=(C,),
        seed=None,
    )
    again = ActiveDistillation(
        pool,
        CountingTeacher(),
        BUDGET,
        PER_ROUND,
        strategy="margin",
        state_dir=tmp_path,
        teacher_output_shape=(C,),
        seed=None,
    )
    assert again.seed == first.seed
