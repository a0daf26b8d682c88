import keras
import numpy as np
import pytest

from keras_efficient.callbacks import ActiveDistillation
from tests import callback_harness as harness

N, D, C = 300, 6, 3
_SHAPE = {"teacher_output_shape": (C,)}
LOSS = keras.losses.CategoricalCrossentropy(from_logits=True)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    pool = rng.normal(size=(N, D)).astype("float32")
    return pool


def _teacher(x):
    x = np.asarray(x)
    logits = x[:, :C] * 3.0
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype("float32")


class CountingTeacher:
    def __init__(self, fail_on_call=None):
        self.seen = []
        self.calls = 0
        self.fail_on_call = fail_on_call

    def __call__(self, x):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise OSError("teacher service down")
        self.seen.append(np.asarray(x).copy())
        return _teacher(x)


def _student(seed=0):
    model = harness.dense_classifier((D,), (8,), C, seed=seed)
    return harness.compile_model(model, "adam", LOSS)


@pytest.mark.parametrize(
    "strategy", ["robust", "margin", "sleeping_experts", "coreset"]
)
def test_budget_never_exceeded_never_twice(strategy):
    pool = _data()
    teacher = CountingTeacher()
    act = ActiveDistillation(
        pool,
        teacher,
        budget=110,
        queries_per_round=40,
        strategy=strategy,
        batch_size=32,
        validation=(pool[:50], _teacher(pool[:50])),
        teacher_output_shape=(C,),
    )
    hist = _student().fit(act.dataset, epochs=5, callbacks=[act], verbose=0)
    assert act.queries_used == 110
    assert act.history == [40, 40, 30]
    assert len(np.unique(act.queried)) == 110
    seen = np.concatenate(teacher.seen)
    # Pool queries once each (+ one pass over validation for robust).
    assert len(seen) == 110 + (50 if strategy == "robust" else 0)
    np.testing.assert_allclose(
        act.train_y, _teacher(pool[act.queried]), rtol=1e-6
    )
    assert hist.history["queries_used"] == [80, 110, 110, 110, 110]
    assert hist.history["queries_left"] == [30, 0, 0, 0, 0]


def test_robust_gets_teacher_accuracy_from_validation():
    pool = _data()
    y = _teacher(pool[:100]).argmax(1)
    y[:25] = (y[:25] + 1) % C  # teacher wrong on 25%
    act = ActiveDistillation(
        pool,
        _teacher,
        60,
        30,
        validation=(pool[:100], y),
        batch_size=32,
        teacher_output_shape=(C,),
    )
    _student().fit(act.dataset, epochs=1, callbacks=[act], verbose=0)
    assert act.state.teacher_accuracy == pytest.approx(0.75)


def test_keras_model_teacher_and_fit():
    pool = _data()
    teacher = keras.Sequential(
        [keras.Input((D,)), keras.layers.Dense(C), keras.layers.Softmax()]
    )
    act = ActiveDistillation(
        pool, teacher, 64, 32, strategy="entropy", batch_size=16
    )
    _student().fit(act.dataset, epochs=2, callbacks=[act], verbose=0)
    np.testing.assert_allclose(
        act.train_y,
        teacher.predict(pool[act.queried], verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


def test_teacher_failure_keeps_state_consistent():
    pool = _data()
    # Call 1: round 0 (one batch of 40), call 2: round 1 fails.
    teacher = CountingTeacher(fail_on_call=2)
    act = ActiveDistillation(
        pool,
        teacher,
        120,
        40,
        strategy="margin",
        batch_size=64,
        teacher_output_shape=(C,),
    )
    with pytest.raises(RuntimeError, match="teacher raised.*round 1"):
        _student().fit(act.dataset, epochs=3, callbacks=[act], verbose=0)
    assert act.queries_used == 40 and act.round == 1
    assert len(act.train_y) == 40 and len(act.train_x) == 40
    assert act.history == [40]


def _run(tmp_path, strategy, interrupt_at=None, epochs=6):
    keras.utils.set_random_seed(3)
    pool = _data()
    state = str(tmp_path / "backup")

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == interrupt_at:
                raise RuntimeError("interrupted")

    def make():
        return ActiveDistillation(
            pool,
            _teacher,
            200,
            30,
            strategy=strategy,
            batch_size=32,
            validation=(pool[:50], _teacher(pool[:50]).argmax(1) % 2),
            state_dir=state,
            seed=7,
            teacher_output_shape=(C,),
        )

    student = _student()
    act = make()
    cbs = [act, keras.callbacks.BackupAndRestore(state), Interrupt()]
    if interrupt_at is not None:
        with pytest.raises(RuntimeError, match="interrupted"):
            student.fit(act.dataset, epochs=epochs, callbacks=cbs, verbose=0)
        # A new process: every global RNG (Python's `random`, which `fit`
        # uses to shuffle batch indices, NumPy's, the backend's) is in
        # another state, and the student starts from other weights.
        keras.utils.set_random_seed(1234)
        student = _student(seed=1234)
        act = make()
        cbs = [act, keras.callbacks.BackupAndRestore(state)]
    student.fit(act.dataset, epochs=epochs, callbacks=cbs, verbose=0)
    return act, student


@pytest.mark.parametrize("strategy", ["sleeping_experts", "robust"])
def test_backup_and_restore_resume_same_queried_set(tmp_path, strategy):
    ref, ref_student = _run(tmp_path / "a", strategy)
    res, res_student = _run(tmp_path / "b", strategy, interrupt_at=2)
    assert res.queries_used == ref.queries_used == 200
    # Same points, queried in the same rounds and the same order.
    np.testing.assert_array_equal(res.queried, ref.queried)
    assert res.round == ref.round and res.history == ref.history
    # The student trained on the same batches: the same weights, bit for
    # bit (same process, same kernels).
    for a, b in zip(res_student.get_weights(), ref_student.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_errors():
    pool = _data()
    with pytest.raises(ValueError, match="budget"):
        ActiveDistillation(pool, _teacher, N + 1, 10, **_SHAPE)
    with pytest.raises(ValueError, match="queries_per_round"):
        ActiveDistillation(pool, _teacher, 10, 0, **_SHAPE)
    with pytest.raises(ValueError, match="Unknown selection strategy"):
        ActiveDistillation(pool, _teacher, 10, 5, strategy="best", **_SHAPE)


@pytest.mark.parametrize("strategy", ["robust", "bald"])
def test_progress_follows_verbose(capsys, strategy):
    pool = _data()[:40]

    def run(verbose):
        act = ActiveDistillation(
            pool,
            _teacher,
            budget=20,
            queries_per_round=10,
            strategy=strategy,
            batch_size=4,
            validation=(pool[:8], _teacher(pool[:8])),
            verbose=verbose,
            **_SHAPE,
        )
        _student().fit(act.dataset, epochs=2, callbacks=[act], verbose=0)
        assert act.verbose == verbose and act.queries_used == 20
        return capsys.readouterr().out

    assert run(0) == ""
    out = run(1)
    # Round 0 (uniform) and round 1 each send 10 points in 3 batches.
    assert out.count("querying the teacher on 10 points") == 2
    assert "3/3" in out
    measured = "measuring the teacher's accuracy on 8 validation points"
    # Only a strategy that reads the teacher's accuracy measures it.
    assert (measured in out) == (strategy == "robust")
    if strategy == "bald":
        # 30 pool points left, 8 batches per pass, 10 passes.
        assert "scoring 30 pool points with 10 stochastic passes" in out
        assert "80/80" in out
    else:
        assert "scoring 30 pool points" in out
        assert "8/8" in out  # predict: 32 padded points in batches of 4


@pytest.mark.parametrize("verbose", ["1", True, 3, -1, None, 1.0])
def test_verbose_checked(verbose):
    with pytest.raises(ValueError, match="verbose"):
        ActiveDistillation(_data(), _teacher, 10, 5, verbose=verbose, **_SHAPE)
