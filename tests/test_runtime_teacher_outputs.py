"""Run-time checks of the outputs the distillation losses receive.

Organised by what the user passes: teacher logits where probabilities are
declared (and back), rows off the simplex, widths, class ids, non-finite
teachers, student outputs, labels and arrays given to `TeacherAccuracy`,
and the same mistakes inside a compiled `fit` and a `Distiller`. Every
case asserts that the message names the culprit (the argument) and the
setting to change.
"""

import keras
import numpy as np
import pytest

from keras_efficient import _distribution_checks
from keras_efficient.losses import DebiasedDistillationLoss
from keras_efficient.losses import DistillationLossAdapter
from keras_efficient.losses import KnowledgeDistillationLoss
from keras_efficient.losses import PseudoLabelLoss
from keras_efficient.losses import SLaMLoss
from keras_efficient.losses import TeacherAccuracy
from tests.harness import BACKEND
from tests.harness import to_numpy

C = 5
RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(8, C)).astype("float32") * 2
PROBS = RNG.dirichlet(np.ones(C), size=8).astype("float32")
STUDENT = RNG.normal(size=(8, C)).astype("float32")


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype("float32")


def _estimator():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(C), size=200)
    y = np.where(rng.random(200) < 0.7, p.argmax(-1), rng.integers(0, C, 200))
    return TeacherAccuracy().fit(p, y)


# Losses reading teacher probabilities by default, and KD with
# `teacher_from_logits=False`; each built with the flag given.
def slam(**kw):
    return SLaMLoss(_estimator(), **kw)


def debiased(**kw):
    return DebiasedDistillationLoss(_estimator(), per_batch=True, **kw)


def pseudo(**kw):
    return PseudoLabelLoss(threshold=0.3, **kw)


def kd(**kw):
    return KnowledgeDistillationLoss(**kw)


LOSSES = {"slam": slam, "debiased": debiased, "pseudo": pseudo, "kd": kd}


# ------------------------------------------------- teacher conventions


@pytest.mark.parametrize("make", LOSSES.values(), ids=LOSSES)
def test_teacher_logits_declared_as_probabilities_raise(make):
    with pytest.raises(
        ValueError,
        match=r"`y_true` must hold probabilities.*"
        r"\(teacher_from_logits=True\)",
    ):
        make(teacher_from_logits=False)(LOGITS, STUDENT)


@pytest.mark.parametrize("make", LOSSES.values(), ids=LOSSES)
def test_teacher_probabilities_declared_as_logits_raise(make):
    with pytest.raises(
        ValueError,
        match=r"`y_true` must hold logits.*\(teacher_from_logits=False\)",
    ):
        make(teacher_from_logits=True)(PROBS, STUDENT)


@pytest.mark.parametrize("make", LOSSES.values(), ids=LOSSES)
def test_right_flag_gives_the_loss_of_the_teacher_probabilities(make):
    # The fix the message names works: logits with the flag equal their
    # softmax without it (so the checks do not reject valid outputs).
    from_logits = to_numpy(make(teacher_from_logits=True)(LOGITS, STUDENT))
    probs = to_numpy(make(teacher_from_logits=False)(_softmax(LOGITS), STUDENT))
    np.testing.assert_allclose(from_logits, probs, rtol=2e-4, atol=1e-5)


# ---------------------------------------------------------------- rows


def _scaled(p):
    return p * 1.5


def _sigmoids(p):
    # Independent sigmoids per class (a multi-label head), not a softmax.
    return 1.0 / (1.0 + np.exp(-LOGITS))


def _negative(p):
    q = p.copy()
    q[2] = [1.2, -0.2, 0.0, 0.0, 0.0]
    return q


def _one_row_off(p):
    q = p.copy()
    q[6] *= 1.01
    return q


ROW_MISTAKES = {
    "scaled": _scaled,
    "sigmoids": _sigmoids,
    "negative": _negative,
    "one-row-1pct": _one_row_off,
}
PROB_LOSSES = {k: v for k, v in LOSSES.items() if k != "kd"}


@pytest.mark.parametrize("mistake", ROW_MISTAKES.values(), ids=ROW_MISTAKES)
@pytest.mark.parametrize("make", PROB_LOSSES.values(), ids=PROB_LOSSES)
def test_rows_off_the_simplex_raise(make, mistake):
    with pytest.raises(
        ValueError,
        match=r"`y_true` must hold probabilities.*summing to 1 "
        r"\(within 0.001\).*teacher_from_logits.*row sums from",
    ):
        make()(mistake(PROBS).astype("float32"), STUDENT)


@pytest.mark.parametrize("make", PROB_LOSSES.values(), ids=PROB_LOSSES)
def test_rounding_within_tolerance_and_zero_padding_rows_pass(make):
    t = PROBS * (1 + 5e-4)
    t[7] = 0.0  # an all-zero row is padding
    value = to_numpy(make(reduction="none")(t, STUDENT))
    assert np.all(np.isfinite(value))


def test_tolerance_is_looser_for_16_bit_outputs():
    t = PROBS * (1 + 5e-3)  # bfloat16 rounding of a softmax
    with pytest.raises(ValueError, match=r"within 0.001"):
        slam()(t, STUDENT)
    value = slam()(keras.ops.cast(t, "bfloat16"), STUDENT)
    assert np.isfinite(float(to_numpy(value)))
    assert _distribution_checks.probability_tolerance("float32") == 1e-3
    assert _distribution_checks.probability_tolerance("bfloat16") == 2e-2
    assert (
        _distribution_checks.probability_tolerance("float16", "float32") == 2e-2
    )


def test_mixed_precision_policy_loosens_the_tolerance():
    t = PROBS * (1 + 5e-3)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        assert _distribution_checks.probability_tolerance() == 2e-2
        assert np.isfinite(float(to_numpy(slam()(t, STUDENT))))
        with pytest.raises(ValueError, match=r"within 0.02"):
            slam()(PROBS * 1.1, STUDENT)
    finally:
        keras.config.set_dtype_policy("float32")


# -------------------------------------------------------------- widths


@pytest.mark.parametrize("make", LOSSES.values(), ids=LOSSES)
def test_teacher_of_another_width_raises(make):
    teacher = PROBS[:, :4] / PROBS[:, :4].sum(-1, keepdims=True)
    with pytest.raises(
        ValueError,
        match=r"`y_true` \(the teacher's outputs\) and `y_pred`.*same "
        r"number of classes.*y_true.shape=\(8, 4\)",
    ):
        make()(teacher, STUDENT)


@pytest.mark.parametrize("make", LOSSES.values(), ids=LOSSES)
def test_single_sigmoid_column_raises_with_the_two_column_fix(make):
    p = PROBS[:, :1]
    with pytest.raises(
        ValueError, match=r"at least 2 classes.*concatenate\(\[1 - p, p\]"
    ):
        make()(p, STUDENT[:, :1])


# ----------------------------------------------------------- class ids


CLASS_IDS = {
    "int-N": np.arange(8) % C,
    "int-N1": (np.arange(8) % C)[:, None],
    "float-N": (np.arange(8) % C).astype("float32"),
}


@pytest.mark.parametrize("ids", CLASS_IDS.values(), ids=CLASS_IDS)
@pytest.mark.parametrize("make", LOSSES.values(), ids=LOSSES)
def test_class_ids_as_teacher_outputs_raise(make, ids):
    with pytest.raises(
        ValueError,
        match=r"`y_true` must hold the teacher's per-class outputs.*"
        r"one_hot",
    ):
        make()(ids, STUDENT)


# ----------------------------------------------------------- non-finite


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("make", [slam, kd], ids=["probabilities", "logits"])
def test_non_finite_teacher_rows_are_named(make, bad_value):
    t = (PROBS if make is slam else LOGITS).copy()
    t[3, 1] = bad_value
    t[5, 0] = bad_value
    with pytest.raises(
        ValueError,
        match=r"`y_true` \(the teacher outputs\) must be finite.*"
        r"rows \[3\].*2 in all",
    ):
        make()(t, STUDENT)


# ------------------------------------------------------ student outputs


@pytest.mark.parametrize("make", LOSSES.values(), ids=LOSSES)
def test_student_probabilities_passed_as_logits_raise(make):
    t = LOGITS if make is kd else PROBS
    with pytest.raises(
        ValueError,
        match=r"`y_pred` must hold logits.*softmaxed twice.*"
        r"\(from_logits=False\)",
    ):
        make()(t, _softmax(STUDENT))


@pytest.mark.parametrize("make", PROB_LOSSES.values(), ids=PROB_LOSSES)
def test_student_logits_passed_as_probabilities_raise(make):
    with pytest.raises(
        ValueError,
        match=r"`y_pred` must hold probabilities.*\(from_logits=True\)",
    ):
        make(from_logits=False)(PROBS, STUDENT)


# ------------------------------------------------------- compiled fit


def _student(width=C):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(width)])


X = RNG.normal(size=(16, 3)).astype("float32")
FIT_PROBS = RNG.dirichlet(np.ones(C), size=16).astype("float32")
FIT_LOGITS = RNG.normal(size=(16, C)).astype("float32") * 2


def _fit(loss, y, jit_compile, batch_size=16):
    model = _student(y.shape[-1] if y.ndim == 2 else C)
    model.compile("sgd", loss, jit_compile=jit_compile)
    return model.fit(X, y, batch_size=batch_size, epochs=1, verbose=0)


def _compiled_modes():
    """`jit_compile` values under which the in-graph checks run."""
    if BACKEND == "jax":
        return [True]
    if BACKEND == "tensorflow":
        return [False, True]
    return [False]  # torch: eager steps


FIT_CASES = {
    "slam-teacher-logits": (
        lambda: slam(),
        FIT_LOGITS,
        r"`y_true` must hold probabilities.*teacher_from_logits=True",
    ),
    "debiased-teacher-logits": (
        lambda: debiased(),
        FIT_LOGITS,
        r"`y_true` must hold probabilities.*teacher_from_logits=True",
    ),
    "pseudo-teacher-logits": (
        lambda: pseudo(),
        FIT_LOGITS,
        r"`y_true` must hold probabilities.*teacher_from_logits=True",
    ),
    "kd-teacher-probabilities": (
        lambda: kd(),
        FIT_PROBS,
        r"`y_true` must hold logits.*teacher_from_logits=False",
    ),
    "slam-rows-scaled": (
        lambda: slam(),
        FIT_PROBS * 2,
        r"`y_true` must hold probabilities",
    ),
    "kd-nan-teacher": (
        lambda: kd(),
        np.where(FIT_LOGITS > 2.5, np.nan, FIT_LOGITS).astype("float32"),
        r"`y_true` \(the teacher outputs\) must be finite",
    ),
}


@pytest.mark.parametrize("jit_compile", _compiled_modes())
@pytest.mark.parametrize(
    "make,y,match", FIT_CASES.values(), ids=list(FIT_CASES)
)
def test_compiled_fit_raises_on_a_wrong_convention(make, y, match, jit_compile):
    with pytest.raises(Exception, match=match):
        _fit(make(), y, jit_compile)


@pytest.mark.parametrize("jit_compile", _compiled_modes()[:1])
def test_compiled_fit_checks_every_step_not_only_the_first(jit_compile):
    # The first batch is clean, the second holds logits: still caught.
    y = FIT_PROBS.copy()
    y[8:] = FIT_LOGITS[8:]
    with pytest.raises(Exception, match=r"`y_true` must hold probabilities"):
        _fit(slam(), y, jit_compile, batch_size=8)


@pytest.mark.parametrize("jit_compile", _compiled_modes()[:1])
@pytest.mark.parametrize(
    "make,y",
    [(slam, FIT_PROBS), (kd, FIT_LOGITS), (debiased, FIT_PROBS)],
    ids=["slam", "kd", "debiased"],
)
def test_compiled_fit_on_valid_outputs_trains(make, y, jit_compile):
    history = _fit(make(), y, jit_compile)
    assert np.isfinite(history.history["loss"][-1])


def test_compiled_fit_teacher_of_another_width_raises_before_training():
    model = _student(4)
    model.compile("sgd", slam(), jit_compile=BACKEND != "torch")
    with pytest.raises(ValueError, match=r"same number of classes"):
        model.fit(X, FIT_PROBS, batch_size=16, epochs=1, verbose=0)


# ----------------------------------------------------------- Distiller


def _distill(loss, teacher_softmax=False, teacher_width=3):
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(
                teacher_width, activation="softmax" if teacher_softmax else None
            ),
        ]
    )
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=DistillationLossAdapter(loss),
        student_loss_weight=0.5,
    )
    distiller.compile(
        optimizer="sgd",
        loss="sparse_categorical_crossentropy",
        jit_compile=BACKEND == "jax",
    )
    x = RNG.normal(size=(16, 6)).astype("float32")
    y = RNG.integers(0, 3, 16)
    return distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)


def test_distiller_probability_loss_on_teacher_logits_raises():
    with pytest.raises(
        Exception,
        match=r"`y_true` must hold probabilities.*teacher_from_logits=True",
    ):
        _distill(SLaMLoss())


def test_distiller_probability_loss_on_a_softmax_teacher_trains():
    history = _distill(SLaMLoss(), teacher_softmax=True)
    assert np.isfinite(history.history["loss"][-1])


def test_distiller_keras_kl_divergence_on_logits_raises():
    with pytest.raises(
        Exception,
        match=r"`teacher_outputs` must hold probabilities.*KLDivergence.*"
        r"KnowledgeDistillationLoss",
    ):
        _distill(keras.losses.KLDivergence())


def test_distiller_teacher_of_another_width_raises():
    # Keras's `Distiller` refuses it when built; the adapter also does when
    # its outputs are validated directly.
    with pytest.raises(ValueError, match=r"Teacher: \(None, 4\)"):
        _distill(KnowledgeDistillationLoss(), teacher_width=4)
    adapter = DistillationLossAdapter(KnowledgeDistillationLoss())
    with pytest.raises(
        ValueError, match=r"same number of classes.*shape \(8, 5\)"
    ):
        adapter.validate_outputs(LOGITS, STUDENT[:, :3])


# ------------------------------------------------ TeacherAccuracy inputs


VAL_PROBS = RNG.dirichlet(np.ones(C), size=60)
VAL_LABELS = np.where(
    RNG.random(60) < 0.6, VAL_PROBS.argmax(-1), RNG.integers(0, C, 60)
)
VAL_LOGITS = np.log(VAL_PROBS) + 0.7


def _fit_estimator(outputs, labels, from_logits=False):
    return TeacherAccuracy().fit(outputs, labels, from_logits=from_logits)


def _report(outputs, labels, from_logits=False):
    est = TeacherAccuracy(knots_x=[0.0, 1.0], knots_y=[0.5, 1.0])
    return est.report(outputs, labels, from_logits=from_logits)


ESTIMATOR_CASES = {
    "probabilities-as-logits": (
        (VAL_PROBS, VAL_LABELS, True),
        r"`teacher_outputs` must hold logits with `from_logits=True`.*"
        r"pass `from_logits=False`",
    ),
    "logits-as-probabilities": (
        (VAL_LOGITS, VAL_LABELS, False),
        r"`teacher_outputs` must hold probabilities.*`from_logits=True`",
    ),
    "rows-not-summing-to-1": (
        (VAL_PROBS * 0.9, VAL_LABELS, False),
        r"`teacher_outputs` must hold probabilities.*row sums from 0.9",
    ),
    "labels-1-based": (
        (VAL_PROBS, VAL_LABELS % C + 1, False),
        r"`labels` must be class ids in \[0, 5\).*1-based.*labels - 1",
    ),
    "labels-length": (
        (VAL_PROBS, VAL_LABELS[:50], False),
        r"`labels` and `teacher_outputs` must have the same length.*"
        r"len\(labels\)=50",
    ),
    "empty": (
        (VAL_PROBS[:0], VAL_LABELS[:0], False),
        r"`teacher_outputs` must have at least one row.*shape=\(0, 5\)",
    ),
    "class-ids-as-outputs": (
        (VAL_LABELS, VAL_LABELS, False),
        r"`teacher_outputs` must have shape \(n, num_classes\).*class ids",
    ),
    "single-sigmoid-column": (
        (VAL_PROBS[:, :1], VAL_LABELS * 0, False),
        r"`teacher_outputs` must have num_classes >= 2.*"
        r"concatenate\(\[1 - p, p\]",
    ),
    "nan-outputs": (
        (np.where(VAL_LOGITS > 0, np.nan, VAL_LOGITS), VAL_LABELS, True),
        r"`teacher_outputs` must be finite",
    ),
}


@pytest.mark.parametrize(
    "method", [_fit_estimator, _report], ids=["fit", "report"]
)
@pytest.mark.parametrize(
    "args,match", ESTIMATOR_CASES.values(), ids=list(ESTIMATOR_CASES)
)
def test_teacher_accuracy_inputs_raise(method, args, match):
    with pytest.raises(ValueError, match=match):
        method(*args)


def test_teacher_accuracy_fits_on_logits_with_the_flag():
    a = _fit_estimator(VAL_LOGITS, VAL_LABELS, from_logits=True)
    b = _fit_estimator(_softmax(VAL_LOGITS), VAL_LABELS)
    np.testing.assert_allclose(a.knots_y, b.knots_y, atol=1e-6)


@pytest.mark.parametrize(
    "pool,flag,match",
    [
        (
            VAL_LOGITS,
            False,
            r"must hold probabilities.*teacher_from_logits=True",
        ),
        (VAL_PROBS, True, r"must hold logits.*teacher_from_logits=False"),
        (VAL_PROBS[:0], False, r"at least one row"),
    ],
    ids=["logits-as-probabilities", "probabilities-as-logits", "empty"],
)
def test_debiased_pool_in_the_wrong_convention_raises(pool, flag, match):
    with pytest.raises(ValueError, match=r"`pool_teacher_outputs`.*" + match):
        DebiasedDistillationLoss(
            _estimator(), pool_teacher_outputs=pool, teacher_from_logits=flag
        )


# -- Settings fitted to another class count. ------------------------------


def test_slam_k_larger_than_the_classes_is_refused():
    from keras_efficient.losses import SLaMLoss

    loss = SLaMLoss(k=5)
    teacher = np.full((2, 3), 1 / 3, "float32")
    with pytest.raises(ValueError, match=r"`k` must be at most the number "
                       r"of classes \(3\).*k=5"):  # fmt: skip
        loss(teacher, np.zeros((2, 3), "float32"))
    SLaMLoss(k=3)(teacher, np.zeros((2, 3), "float32"))


def test_debiased_pool_normaliser_of_another_class_count_is_refused():
    from keras_efficient.distillation import TeacherAccuracy
    from keras_efficient.losses import DebiasedDistillationLoss

    rng = np.random.default_rng(0)
    outputs = rng.dirichlet(np.ones(4), size=64).astype("float32")
    labels = np.where(rng.random(64) < 0.3, rng.integers(0, 4, 64),
                      outputs.argmax(-1))  # fmt: skip
    estimator = TeacherAccuracy().fit(outputs, labels)
    loss = DebiasedDistillationLoss(estimator, pool_teacher_outputs=outputs)
    loss(outputs[:8], np.zeros((8, 4), "float32"))
    other = rng.dirichlet(np.ones(5), size=8).astype("float32")
    pattern = r"`y_true` must have as many classes as the pool.*\(4\)"
    with pytest.raises(ValueError, match=pattern + r".*shape=\(8, 5\)"):
        loss(other, np.zeros((8, 5), "float32"))
