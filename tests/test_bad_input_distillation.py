"""Bad inputs to `keras_efficient.distillation.*` (losses, callbacks,
selection strategies, rounding): loud and clear, never silent."""

import keras
import numpy as np
import pytest

from keras_efficient import distillation as kd
from keras_efficient import losses as kl
from tests.bad_input_helpers import BAD_BOOL
from tests.bad_input_helpers import BAD_CHOICE
from tests.bad_input_helpers import BAD_NUMBER
from tests.bad_input_helpers import BAD_POSITIVE_INT
from tests.bad_input_helpers import GOOD_FRACTIONS
from tests.bad_input_helpers import GOOD_INTS
from tests.bad_input_helpers import GOOD_NUMBERS
from tests.bad_input_helpers import case
from tests.bad_input_helpers import check_case
from tests.bad_input_helpers import sweep

RNG = np.random.default_rng(0)
C = 4
TEACHER = RNG.dirichlet(np.ones(C), size=6).astype("float32")
LOGITS = RNG.normal(size=(6, C)).astype("float32")
LABELS = np.array([0, 1, 2, 3, 0, 1])


def fitted_accuracy():
    probs = RNG.dirichlet(np.ones(C), size=40)
    labels = np.where(RNG.random(40) < 0.6, probs.argmax(-1), 0)
    labels[:2] = (probs[:2].argmax(-1) + 1) % C  # some wrong
    labels[2:4] = probs[2:4].argmax(-1)  # some right
    return kd.TeacherAccuracy().fit(probs, labels)


def kd_loss(**kw):
    return kl.KnowledgeDistillationLoss(**kw)


def slam(**kw):
    return kl.SLaMLoss(**kw)


def debiased(**kw):
    return kl.DebiasedDistillationLoss(**kw)


def active(**kw):
    kw.setdefault("pool", np.zeros((20, 3), "float32"))
    kw.setdefault("teacher", lambda x: np.zeros((len(x), C), "float32"))
    kw.setdefault("budget", 8)
    kw.setdefault("queries_per_round", 4)
    kw.setdefault("strategy", "margin")
    # A NumPy teacher does not trace on a symbolic TensorFlow tensor.
    kw.setdefault("teacher_output_shape", (C,))
    return kd.ActiveDistillation(**kw)


def ctx(**kw):
    kw.setdefault("probabilities", TEACHER)
    kw.setdefault("rng", 0)
    return kd.SelectionContext(**kw)


def tiny_fit(loss, y, x=None, softmax=False):
    x = np.zeros((len(y), 3), "float32") if x is None else x
    inputs = keras.Input((3,))
    act = "softmax" if softmax else None
    model = keras.Model(inputs, keras.layers.Dense(C, activation=act)(inputs))
    model.compile("sgd", loss)
    return model.fit(x, y, epochs=1, batch_size=len(y), verbose=0)


NUMERIC_STR = [("numeric_str", "3")]

CONSTRUCTOR = (
    # KnowledgeDistillationLoss
    sweep(
        "KnowledgeDistillationLoss",
        kd_loss,
        "temperature",
        BAD_NUMBER + [("zero", 0.0), ("neg", -1.0), ("none", None)],
    )
    + sweep(
        "KnowledgeDistillationLoss", kd_loss, "teacher_from_logits", BAD_BOOL
    )
    + sweep(
        "KnowledgeDistillationLoss",
        kd_loss,
        "from_logits",
        BAD_BOOL + [("false", False)],
    )
    + sweep(
        "KnowledgeDistillationLoss", kd_loss, "reduction", [("typo", "avg")]
    )
    # SLaMLoss
    + sweep(
        "SLaMLoss",
        slam,
        "k",
        [("str", "3"), ("one", 1), ("float", 2.5), ("bool", True), ("neg", -2)],
    )
    + sweep(
        "SLaMLoss",
        slam,
        "coverage",
        BAD_NUMBER + [("zero", 0.0), ("big", 1.5), ("neg", -0.1)],
    )
    + sweep("SLaMLoss", slam, "target", BAD_CHOICE)
    + sweep("SLaMLoss", slam, "normalize", BAD_BOOL)
    + sweep(
        "SLaMLoss",
        slam,
        "min_alpha",
        BAD_NUMBER + [("zero", 0.0), ("big", 1.5)],
    )
    + sweep("SLaMLoss", slam, "teacher_from_logits", BAD_BOOL)
    + sweep("SLaMLoss", slam, "from_logits", BAD_BOOL)
    + sweep(
        "SLaMLoss",
        slam,
        "teacher_accuracy",
        [("str", "isotonic"), ("number", 0.7), ("list", [0.7])],
    )
    # DebiasedDistillationLoss
    + sweep(
        "DebiasedDistillationLoss",
        debiased,
        "power",
        BAD_NUMBER + [("zero", 0.0), ("neg", -1.0)],
    )
    + sweep(
        "DebiasedDistillationLoss",
        debiased,
        "floor",
        BAD_NUMBER + [("one", 1.0), ("neg", -0.1)],
    )
    + sweep(
        "DebiasedDistillationLoss",
        debiased,
        "normalizer",
        BAD_NUMBER + [("zero", 0.0), ("neg", -1.0)],
    )
    + sweep("DebiasedDistillationLoss", debiased, "per_batch", BAD_BOOL)
    + sweep("DebiasedDistillationLoss", debiased, "from_logits", BAD_BOOL)
    + sweep(
        "DebiasedDistillationLoss", debiased, "teacher_from_logits", BAD_BOOL
    )
    + sweep(
        "DebiasedDistillationLoss",
        debiased,
        "teacher_accuracy",
        [("str", "isotonic"), ("number", 0.7)],
    )
    + [
        case(
            "DebiasedDistillationLoss-pool_teacher_outputs-rank-1",
            lambda: debiased(
                teacher_accuracy=fitted_accuracy(),
                pool_teacher_outputs=np.ones(5, "float32"),
            ),
            "pool_teacher_outputs",
        ),
        case(
            "DebiasedDistillationLoss-per_batch-with-normalizer",
            lambda: debiased(per_batch=True, normalizer=2.0),
            "per_batch",
        ),
    ]
    # TeacherAccuracy
    + [
        case(
            "TeacherAccuracy-knots_x-without-knots_y",
            lambda: kd.TeacherAccuracy(knots_x=[0.0, 1.0]),
            "knots_y",
        ),
        case(
            "TeacherAccuracy-knots-different-lengths",
            lambda: kd.TeacherAccuracy(knots_x=[0.0, 1.0], knots_y=[0.5]),
            "knots_x",
        ),
        case(
            "TeacherAccuracy-knots_x-strings",
            lambda: kd.TeacherAccuracy(knots_x=["a", "b"], knots_y=[0.1, 0.2]),
            "knots_x",
        ),
        case(
            "TeacherAccuracy-knots_y-out-of-range",
            lambda: kd.TeacherAccuracy(knots_x=[0.0, 1.0], knots_y=[0.5, 1.5]),
            "knots_y",
        ),
        case(
            "TeacherAccuracy-knots_x-unsorted",
            lambda: kd.TeacherAccuracy(knots_x=[1.0, 0.0], knots_y=[0.5, 0.6]),
            "knots_x",
        ),
        case(
            "TeacherAccuracy-knots_x-nan",
            lambda: kd.TeacherAccuracy(
                knots_x=[0.0, float("nan")], knots_y=[0.5, 0.6]
            ),
            "knots_x",
        ),
        case(
            "TeacherAccuracy-knots_x-scalar",
            lambda: kd.TeacherAccuracy(knots_x=0.5, knots_y=0.5),
            "knots_x",
        ),
    ]
    # Selection strategies and rounding
    + sweep(
        "CoresetSelection", kd.CoresetSelection, "batch_size", BAD_POSITIVE_INT
    )
    + sweep(
        "RobustSelection",
        kd.RobustSelection,
        "teacher_accuracy",
        BAD_NUMBER + [("big", 1.5), ("neg", -0.1)],
    )
    + [
        case(
            "DistillationLossAdapter-loss-str",
            lambda: kd.DistillationLossAdapter("kl_divergence"),
            "loss",
        ),
        case(
            "DistillationLossAdapter-loss-none",
            lambda: kd.DistillationLossAdapter(None),
            "loss",
        ),
        case(
            "DistillationLossAdapter-loss-function",
            lambda: kd.DistillationLossAdapter(keras.losses.kl_divergence),
            "loss",
        ),
    ]
    # ActiveDistillation
    + sweep(
        "ActiveDistillation",
        active,
        "budget",
        BAD_POSITIVE_INT + [("past_pool", 21)],
    )
    + sweep("ActiveDistillation", active, "queries_per_round", BAD_POSITIVE_INT)
    + sweep(
        "ActiveDistillation", active, "epochs_per_round", BAD_POSITIVE_INT[:6]
    )
    + sweep("ActiveDistillation", active, "batch_size", BAD_POSITIVE_INT[:6])
    + sweep(
        "ActiveDistillation",
        active,
        "steps_per_epoch",
        [("str", "3"), ("neg", -1), ("float", 2.5), ("bool", True)],
    )
    + sweep("ActiveDistillation", active, "from_logits", BAD_BOOL)
    + sweep(
        "ActiveDistillation",
        active,
        "seed",
        [("str", "0"), ("neg", -1), ("float", 0.5)],
    )
    + sweep(
        "ActiveDistillation",
        active,
        "strategy",
        [("typo", "marginal"), ("int", 3), ("none", None)],
    )
    + [
        case(
            "ActiveDistillation-robust-without-validation",
            lambda: active(strategy="robust"),
            "validation",
        ),
        case(
            "ActiveDistillation-teacher-not-callable",
            lambda: active(teacher="teacher.keras"),
            "teacher",
        ),
        case(
            "ActiveDistillation-validation-not-pair",
            lambda: active(validation=np.zeros((4, 3), "float32")),
            "validation",
        ),
        case(
            "ActiveDistillation-validation-length-mismatch",
            lambda: active(
                validation=(np.zeros((4, 3), "float32"), np.zeros(5, "int32"))
            ),
            "validation",
        ),
        case(
            "ActiveDistillation-validation-wrong-width",
            lambda: active(
                validation=(np.zeros((4, 5), "float32"), np.zeros(4, "int32"))
            ),
            "validation",
        ),
        case(
            "ActiveDistillation-embedding_layer-int",
            lambda: active(embedding_layer=3),
            "embedding_layer",
        ),
        case(
            "ActiveDistillation-state_dir-int",
            lambda: active(state_dir=7),
            "state_dir",
        ),
        case(
            "ActiveDistillation-teacher_output_shape-int",
            lambda: active(teacher_output_shape=10),
            "teacher_output_shape",
        ),
        case(
            "ActiveDistillation-teacher_output_shape-zero",
            lambda: active(teacher_output_shape=(0,)),
            "teacher_output_shape",
        ),
        case(
            "ActiveDistillation-teacher_output_shape-str",
            lambda: active(teacher_output_shape=("10",)),
            "teacher_output_shape",
        ),
        case(
            "ActiveDistillation-pool-empty",
            lambda: active(pool=np.zeros((0, 3), "float32"), budget=1),
            "budget|pool",
        ),
    ]
)


def call_loss(loss, y_true, y_pred):
    return loss(y_true, y_pred)


CALL = []
for _name, _make in [
    ("KnowledgeDistillationLoss", kd_loss),
    ("SLaMLoss", lambda: slam(teacher_accuracy=fitted_accuracy())),
    ("DebiasedDistillationLoss", lambda: debiased(per_batch=True)),
]:
    CALL += [
        case(
            f"{_name}-call-int-labels-N1",
            lambda m=_make: call_loss(m(), LABELS[:, None], LOGITS),
            "y_true",
        ),
        case(
            f"{_name}-call-int-labels-N",
            lambda m=_make: call_loss(m(), LABELS, LOGITS),
            "y_true",
        ),
        case(
            f"{_name}-call-class-mismatch",
            lambda m=_make: call_loss(m(), TEACHER[:, :3], LOGITS),
            "y_true",
        ),
        case(
            f"{_name}-call-probabilities-as-logits",
            lambda m=_make: call_loss(m(), TEACHER, keras.ops.softmax(LOGITS)),
            "from_logits",
        ),
        case(
            f"{_name}-call-nan-teacher",
            lambda m=_make: call_loss(
                m(), np.where(TEACHER > 0.3, np.nan, TEACHER), LOGITS
            ),
            "y_true",
        ),
        case(
            f"{_name}-fit-int-labels-N1",
            lambda m=_make: tiny_fit(m(), LABELS[:, None]),
            "y_true",
        ),
    ]

CALL += [
    # TeacherAccuracy.fit
    case(
        "TeacherAccuracy-fit-outputs-rank-1",
        lambda: kd.TeacherAccuracy().fit(TEACHER[:, 0], LABELS),
        "teacher_outputs",
    ),
    case(
        "TeacherAccuracy-fit-labels-length",
        lambda: kd.TeacherAccuracy().fit(TEACHER, LABELS[:4]),
        "labels",
    ),
    case(
        "TeacherAccuracy-fit-labels-past-classes",
        lambda: kd.TeacherAccuracy().fit(TEACHER, LABELS + C),
        "labels",
    ),
    case(
        "TeacherAccuracy-fit-labels-negative",
        lambda: kd.TeacherAccuracy().fit(TEACHER, LABELS - 1),
        "labels",
    ),
    case(
        "TeacherAccuracy-fit-labels-float",
        lambda: kd.TeacherAccuracy().fit(TEACHER, LABELS + 0.5),
        "labels",
    ),
    case(
        "TeacherAccuracy-fit-labels-one-hot",
        lambda: kd.TeacherAccuracy().fit(TEACHER, np.eye(C)[LABELS]),
        "labels",
    ),
    case(
        "TeacherAccuracy-fit-logits-as-probabilities",
        lambda: kd.TeacherAccuracy().fit(LOGITS, LABELS),
        "from_logits",
    ),
    case(
        "TeacherAccuracy-fit-from_logits-str",
        lambda: kd.TeacherAccuracy().fit(LOGITS, LABELS, from_logits="yes"),
        "from_logits",
    ),
    case(
        "TeacherAccuracy-fit-nan-outputs",
        lambda: kd.TeacherAccuracy().fit(
            np.where(LOGITS > 1, np.nan, LOGITS), LABELS, from_logits=True
        ),
        "teacher_outputs",
    ),
    case(
        "TeacherAccuracy-smallest_k-coverage",
        lambda: fitted_accuracy().smallest_k(1.5),
        "coverage",
    ),
    # rounding
    case(
        "dependent_rounding-marginals-out-of-range",
        lambda: kd.dependent_rounding([1.5, -0.5]),
        "marginals",
    ),
    case(
        "dependent_rounding-marginals-not-integer-sum",
        lambda: kd.dependent_rounding([0.5, 0.2]),
        "marginals",
    ),
    case(
        "dependent_rounding-marginals-nan",
        lambda: kd.dependent_rounding([0.5, float("nan"), 0.5]),
        "marginals",
    ),
    case(
        "dependent_rounding-marginals-str",
        lambda: kd.dependent_rounding("0.5"),
        "marginals",
    ),
    case(
        "dependent_rounding-rng-str",
        lambda: kd.dependent_rounding([0.5, 0.5], rng="seed"),
        "rng",
    ),
    case(
        "robust_marginals-b-past-n",
        lambda: kd.robust_marginals(np.ones(4), 5, 0),
        "`b`",
    ),
    case(
        "robust_marginals-b-str",
        lambda: kd.robust_marginals(np.ones(4), "2", 0),
        "`b`",
    ),
    case(
        "robust_marginals-num_spoiled-negative",
        lambda: kd.robust_marginals(np.ones(4), 2, -1),
        "num_spoiled",
    ),
    case(
        "robust_marginals-gains-nan",
        lambda: kd.robust_marginals(np.array([1.0, np.nan, 1.0]), 1, 0),
        "gains",
    ),
    case(
        "robust_marginals-gains-2d",
        lambda: kd.robust_marginals(np.ones((2, 3)), 1, 0),
        "gains",
    ),
    # strategies
    case(
        "UniformSelection-num_points-past-pool",
        lambda: kd.UniformSelection().select(ctx(), 7),
        "num_points",
    ),
    case(
        "MarginSelection-num_points-negative",
        lambda: kd.MarginSelection().select(ctx(), -1),
        "num_points",
    ),
    case(
        "EntropySelection-num_points-str",
        lambda: kd.EntropySelection().select(ctx(), "2"),
        "num_points",
    ),
    case(
        "EntropySelection-probabilities-rank-1",
        lambda: kd.EntropySelection().select(ctx(probabilities=np.ones(6)), 2),
        "probabilities",
    ),
    case(
        "MarginSelection-probabilities-missing",
        lambda: kd.MarginSelection().select(ctx(probabilities=None), 2),
        "probabilities",
    ),
    case(
        "CoresetSelection-num_points-past-pool",
        lambda: kd.CoresetSelection().select(ctx(), 7),
        "num_points",
    ),
    case(
        "RobustSelection-num_points-float",
        lambda: kd.RobustSelection(0.7).select(ctx(), 2.5),
        "num_points",
    ),
    case(
        "SleepingExpertsSelection-num_points-past-pool",
        lambda: kd.SleepingExpertsSelection().select(ctx(), 7),
        "num_points",
    ),
    case(
        "SelectionContext-rng-str",
        lambda: ctx(rng="seed"),
        "rng",
    ),
    # adapter
    case(
        "DistillationLossAdapter-multi-output",
        lambda: kd.DistillationLossAdapter(kd_loss()).validate_outputs(
            [TEACHER, TEACHER], LOGITS
        ),
        "DistillationLossAdapter|outputs",
    ),
]


@pytest.mark.parametrize("fn, error, match", CONSTRUCTOR + CALL)
def test_bad_input(fn, error, match):
    check_case(fn, error, match)


@pytest.mark.parametrize("label, value", GOOD_NUMBERS)
def test_any_real_number_is_a_number(label, value):
    assert kd_loss(temperature=value).temperature == 2.0
    assert debiased(power=value).power == 2.0
    debiased(normalizer=value)


@pytest.mark.parametrize("label, value", GOOD_FRACTIONS)
def test_any_real_fraction_is_a_fraction(label, value):
    debiased(floor=value)
    kd.RobustSelection(teacher_accuracy=value)
    if float(value) > 0:
        slam(coverage=value, min_alpha=value)


@pytest.mark.parametrize("label, value", GOOD_INTS)
def test_any_integer_is_an_integer(label, value):
    slam(k=value)
    kd.CoresetSelection(batch_size=value)
    active(budget=value, queries_per_round=value, batch_size=value, seed=value)
    kd.robust_marginals(np.ones(4), value, 0)
