"""Bad inputs to `keras_efficient.pruning.*`, `keras_efficient.applications.*`
and `keras_efficient.datasets.*`: loud and clear, never silent."""

import keras
import numpy as np
import pytest

from keras_efficient import applications as ka
from keras_efficient import datasets as kds
from keras_efficient import pruning as kp
from keras_efficient.pruning.shrink import shrink
from keras_efficient.pruning.shrink import zero_units
from tests.bad_input_helpers import BAD_CHOICE
from tests.bad_input_helpers import BAD_NUMBER
from tests.bad_input_helpers import BAD_POSITIVE_INT
from tests.bad_input_helpers import ERRORS
from tests.bad_input_helpers import GOOD_FRACTIONS
from tests.bad_input_helpers import GOOD_INTS
from tests.bad_input_helpers import case
from tests.bad_input_helpers import check_case
from tests.bad_input_helpers import sweep

BAD_FRACTION = BAD_NUMBER + [("one", 1.0), ("neg", -0.1), ("none", None)]
NAN = float("nan")
# Keras's loss, not the pruning callback, raises on labels of the wrong
# shape; on torch as torch's own RuntimeError ("The size of tensor a (5)
# must match the size of tensor b (3)").
LOSS_ERRORS = ERRORS + (
    (RuntimeError,) if keras.backend.backend() == "torch" else ()
)
BAD_STEP = [("str", "0"), ("neg", -1), ("float", 1.5), ("bool", True)]


def const(**kw):
    kw.setdefault("target_sparsity", 0.5)
    return kp.ConstantSparsity(**kw)


def poly(**kw):
    kw.setdefault("initial_sparsity", 0.0)
    kw.setdefault("final_sparsity", 0.5)
    kw.setdefault("begin_step", 0)
    kw.setdefault("end_step", 10)
    return kp.PolynomialDecay(**kw)


def iterative(**kw):
    kw.setdefault("sparsities", [0.2, 0.5])
    kw.setdefault("steps_per_cycle", 5)
    return kp.IterativePruning(**kw)


def pruning(**kw):
    kw.setdefault("schedule", const())
    return kp.MagnitudePruning(**kw)


def masks(**kw):
    kw.setdefault("kernels", [np.ones((4, 4), "float32")])
    kw.setdefault("sparsity", 0.5)
    kw.setdefault("structure", "unstructured")
    return kp.compute_masks(**kw)


def tiny_model(softmax=False):
    inputs = keras.Input((4,))
    h = keras.layers.Dense(8, name="hidden")(inputs)
    act = "softmax" if softmax else None
    return keras.Model(inputs, keras.layers.Dense(3, activation=act)(h))


X = np.zeros((6, 4), "float32")
Y = np.array([0, 1, 2, 0, 1, 2])


def noisy(**kw):
    kw.setdefault("model", tiny_model())
    kw.setdefault("x", X)
    kw.setdefault("y", Y)
    kw.setdefault("eps", 0.1)
    kw.setdefault("draws", 1)
    return kp.noisy_accuracy(**kw)


def compare(**kw):
    m = tiny_model()
    kw.setdefault("dense", m)
    kw.setdefault("pruned", m)
    kw.setdefault("x", X)
    kw.setdefault("y", Y)
    kw.setdefault("eps", (0.0,))
    kw.setdefault("draws", 1)
    return kp.compare_to_dense(**kw)


def potential(**kw):
    kw.setdefault("dense_accuracy", 0.9)
    kw.setdefault("results", [(0.5, 0.9)])
    return kp.prune_potential(**kw)


def resnet(**kw):
    kw.setdefault("input_shape", (8, 8, 3))
    return ka.ResNet20(**kw)


def lm(**kw):
    kw.setdefault("vocabulary_size", 16)
    kw.setdefault("sequence_length", 8)
    kw.setdefault("hidden_dim", 8)
    kw.setdefault("num_layers", 1)
    kw.setdefault("num_heads", 2)
    return ka.TransformerLM(**kw)


def fit_pruned(y, schedule=None):
    model = tiny_model()
    model.compile("sgd", "mse")
    cb = kp.MagnitudePruning(schedule or const(frequency=1))
    return model.fit(X, y, epochs=1, batch_size=6, verbose=0, callbacks=[cb])


CASES = (
    # schedules
    sweep("ConstantSparsity", const, "target_sparsity", BAD_FRACTION)
    + sweep("ConstantSparsity", const, "begin_step", BAD_STEP)
    + sweep("ConstantSparsity", const, "frequency", BAD_POSITIVE_INT)
    + sweep("ConstantSparsity", const, "end_step", [("str", "10")])
    + [
        case(
            "ConstantSparsity-end_step-before-begin",
            lambda: const(begin_step=10, end_step=5),
            "end_step",
        )
    ]
    + sweep("PolynomialDecay", poly, "initial_sparsity", BAD_FRACTION)
    + sweep("PolynomialDecay", poly, "final_sparsity", BAD_FRACTION)
    + sweep("PolynomialDecay", poly, "begin_step", BAD_STEP)
    + sweep(
        "PolynomialDecay",
        poly,
        "end_step",
        [("str", "10"), ("none", None), ("equal_begin", 0), ("neg", -1)],
    )
    + sweep("PolynomialDecay", poly, "power", BAD_NUMBER + [("neg", -1.0)])
    + sweep("PolynomialDecay", poly, "frequency", BAD_POSITIVE_INT[:6])
    + sweep(
        "IterativePruning",
        iterative,
        "sparsities",
        [
            ("empty", []),
            ("none", None),
            ("str", "0.5"),
            ("one", [1.0]),
            ("nan", [float("nan")]),
            ("neg", [-0.1]),
        ],
    )
    + sweep("IterativePruning", iterative, "steps_per_cycle", BAD_POSITIVE_INT)
    + sweep("IterativePruning", iterative, "begin_step", BAD_STEP)
    + [
        case(
            "PruningSchedule-call-step-str",
            lambda: const()("3"),
            "step",
        ),
    ]
    # MagnitudePruning
    + sweep(
        "MagnitudePruning",
        pruning,
        "schedule",
        [("number", 0.5), ("none", None), ("str", "constant")],
    )
    + sweep(
        "MagnitudePruning", pruning, "targets", [("str", "hidden"), ("n", 3)]
    )
    + sweep("MagnitudePruning", pruning, "scope", BAD_CHOICE)
    + sweep("MagnitudePruning", pruning, "structure", BAD_CHOICE[:1])
    + sweep(
        "MagnitudePruning",
        pruning,
        "block",
        [("int", 4), ("str", "4x4"), ("triple", (1, 2, 3)), ("zero", (0, 4))],
    )
    + sweep(
        "MagnitudePruning",
        pruning,
        "n_m",
        [("n_ge_m", (4, 2)), ("int", 2), ("float", (1.5, 4)), ("zero", (0, 4))],
    )
    + sweep("MagnitudePruning", pruning, "block_pooling", BAD_CHOICE)
    + [
        case(
            "MagnitudePruning-fit-wrong-label-shape",
            lambda: fit_pruned(np.zeros((6, 5), "float32")),
            # The loss raises in words of its backend's own; the error
            # type (LOSS_ERRORS) is what is checked, not the message.
            None,
            error=LOSS_ERRORS,
        ),
        case(
            "MagnitudePruning-fit-uncompiled",
            lambda: tiny_model().fit(X, Y, verbose=0, callbacks=[pruning()]),
            "compile",
        ),
        case(
            "MagnitudePruning-fit-unknown-target",
            lambda: (
                lambda m: (
                    m.compile("sgd", "mse"),
                    m.fit(
                        X,
                        np.zeros((6, 3)),
                        verbose=0,
                        callbacks=[pruning(targets=["nope"])],
                    ),
                )
            )(tiny_model()),
            "targets|nope",
        ),
    ]
    # compute_masks
    + sweep("compute_masks", masks, "sparsity", BAD_FRACTION)
    + sweep("compute_masks", masks, "structure", BAD_CHOICE)
    + sweep("compute_masks", masks, "scope", BAD_CHOICE)
    + sweep("compute_masks", masks, "kernels", [("str", "w"), ("none", None)])
    + [
        case(
            "compute_masks-n_m-missing",
            lambda: masks(structure="n_m"),
            "n_m",
        ),
        case(
            "compute_masks-block-missing",
            lambda: masks(structure="block"),
            "block",
        ),
    ]
    # evaluation
    + sweep("noisy_accuracy", noisy, "draws", BAD_POSITIVE_INT)
    + sweep("noisy_accuracy", noisy, "eps", BAD_NUMBER + [("neg", -0.1)])
    + sweep("noisy_accuracy", noisy, "batch_size", BAD_POSITIVE_INT[:4])
    + sweep("noisy_accuracy", noisy, "from_logits", [("str", "yes")])
    + sweep("noisy_accuracy", noisy, "seed", [("str", "0")])
    + sweep(
        "noisy_accuracy",
        noisy,
        "y",
        [("one_hot", np.eye(3)[Y]), ("short", Y[:4])],
    )
    + sweep("compare_to_dense", compare, "draws", [("zero", 0), ("s", "2")])
    + sweep(
        "compare_to_dense", compare, "eps", [("scalar", 0.1), ("nan", [NAN])]
    )
    + sweep("compare_to_dense", compare, "y", [("one_hot", np.eye(3)[Y])])
    + sweep("prune_potential", potential, "dense_accuracy", BAD_FRACTION[:5])
    + sweep("prune_potential", potential, "delta", BAD_NUMBER + [("neg", -1)])
    + sweep(
        "prune_potential",
        potential,
        "results",
        [("str", "0.5"), ("flat", [0.5, 0.9]), ("triple", [(0.5, 0.9, 1)])],
    )
    # strip / report / shrink
    + [
        case(
            "strip_pruning-model-none", lambda: kp.strip_pruning(None), "model"
        ),
        case(
            "strip_pruning-model-layer",
            lambda: kp.strip_pruning(keras.layers.Dense(2)),
            "model",
        ),
        case(
            "sparsity_report-model-str",
            lambda: kp.sparsity_report("model.keras"),
            "model",
        ),
        case(
            "sparsity_report-targets-unknown",
            lambda: kp.sparsity_report(tiny_model(), targets=["nope"]),
            "targets|nope",
        ),
        case("shrink-model-none", lambda: shrink(None), "model"),
        case(
            "shrink-importance-typo",
            lambda: shrink(tiny_model(), importance="l3"),
            "importance",
        ),
        case(
            "shrink-ratio-one",
            lambda: shrink(tiny_model(), ratio=1.0),
            "ratio",
        ),
        case(
            "shrink-ratio-str",
            lambda: shrink(tiny_model(), ratio="0.5"),
            "ratio",
        ),
        case(
            "zero_units-ratio-nan",
            lambda: zero_units(tiny_model(), NAN),
            "ratio",
        ),
        case(
            "zero_units-ratio-unknown-group",
            lambda: zero_units(tiny_model(), {"nope": 0.5}),
            "ratio",
        ),
    ]
)


APPS = (
    sweep("ResNet20", resnet, "classes", BAD_POSITIVE_INT)
    + sweep("ResNet20", resnet, "laurel", [("typo", "rw+xx"), ("int", 1)])
    + sweep("ResNet20", resnet, "laurel_rank", BAD_POSITIVE_INT[:6])
    + sweep(
        "ResNet20",
        resnet,
        "width_multiplier",
        BAD_NUMBER + [("zero", 0.0), ("neg", -1.0)],
    )
    + sweep("ResNet20", resnet, "pooling", [("typo", "median"), ("int", 1)])
    + sweep("ResNet20", resnet, "weights", [("str", "imagenet")])
    + sweep("ResNet20", resnet, "include_top", [("str", "yes"), ("int", 1)])
    + sweep(
        "ResNet20",
        resnet,
        "input_shape",
        [("rank2", (8, 8)), ("str", "8x8"), ("neg", (-8, 8, 3))],
    )
    + sweep("ResNet18", ka.ResNet18, "classes", [("zero", 0), ("str", "10")])
    + sweep("ResNet50", ka.ResNet50, "classes", [("zero", 0), ("str", "10")])
    + sweep("ResNet56", ka.ResNet56, "classes", [("zero", 0), ("str", "10")])
    + sweep(
        "ResNet",
        lambda **kw: ka.ResNet(
            **{
                "stack_sizes": [1],
                "filters": [4],
                "input_shape": (8, 8, 3),
                **kw,
            }
        ),
        "stack_sizes",
        [("str", "1"), ("neg", [-1]), ("empty", []), ("float", [1.5])],
    )
    + sweep(
        "ResNet",
        lambda **kw: ka.ResNet(
            **{
                "stack_sizes": [1],
                "filters": [4],
                "input_shape": (8, 8, 3),
                **kw,
            }
        ),
        "filters",
        [("mismatch", [4, 8]), ("zero", [0]), ("str", ["4"])],
    )
    + sweep(
        "ResNet",
        lambda **kw: ka.ResNet(
            **{
                "stack_sizes": [1],
                "filters": [4],
                "input_shape": (8, 8, 3),
                **kw,
            }
        ),
        "block",
        BAD_CHOICE,
    )
    + sweep(
        "ResNet",
        lambda **kw: ka.ResNet(
            **{
                "stack_sizes": [1],
                "filters": [4],
                "input_shape": (8, 8, 3),
                **kw,
            }
        ),
        "stem",
        BAD_CHOICE[:2],
    )
    # TransformerLM
    + sweep("TransformerLM", lm, "vocabulary_size", BAD_POSITIVE_INT)
    + sweep("TransformerLM", lm, "sequence_length", BAD_POSITIVE_INT[:6])
    + sweep("TransformerLM", lm, "hidden_dim", BAD_POSITIVE_INT[:6])
    + sweep("TransformerLM", lm, "num_layers", BAD_POSITIVE_INT[:6])
    # A list is one count per block: [2] is valid with one block.
    + sweep(
        "TransformerLM",
        lm,
        "num_heads",
        [v for v in BAD_POSITIVE_INT[:6] if v[0] != "list"]
        + [("3", 3), ("list_length", [2, 2]), ("list_zero", [0])],
    )
    + sweep(
        "TransformerLM",
        lm,
        "intermediate_dim",
        [("zero", 0), ("str", "8"), ("list_length", [8, 8])],
    )
    + sweep("TransformerLM", lm, "head_dim", [("zero", 0), ("float", 2.5)])
    + sweep("TransformerLM", lm, "positions", BAD_CHOICE)
    + sweep("TransformerLM", lm, "altup", [("zero", 0), ("str", "2")])
    + sweep("TransformerLM", lm, "sequence_altup", [("zero", 0), ("s", "2")])
    + sweep("TransformerLM", lm, "laurel", [("typo", "rw+xx")])
    + sweep("TransformerLM", lm, "epsilon", BAD_NUMBER + [("neg", -1.0)])
    + [
        case(
            "TransformerLM-call-token-id-float",
            lambda: lm()(np.zeros((1, 8), "float32")),
            "int|token",
        ),
        case(
            "TransformerLM-call-too-long",
            lambda: lm(positions="learned")(np.zeros((1, 9), "int32")),
            "sequence_length|length",
        ),
    ]
    # datasets
    + sweep("load_mnist1d", kds.load_mnist1d, "num_train", BAD_POSITIVE_INT[:6])
    + sweep("load_mnist1d", kds.load_mnist1d, "seed", [("str", "42")])
    + sweep("load_mnist1d", kds.load_mnist1d, "channels_last", [("s", "yes")])
    + sweep("load_digits", kds.load_digits, "num_test", BAD_POSITIVE_INT[:6])
    + sweep(
        "load_stdlib_text",
        kds.load_stdlib_text,
        "validation_fraction",
        BAD_FRACTION[:5],
    )
    + sweep("load_stdlib_text", kds.load_stdlib_text, "max_bytes", [("z", 0)])
    + sweep(
        "lm_windows",
        lambda **kw: kds.lm_windows(
            **{
                "data": np.arange(100),
                "sequence_length": 8,
                "num_windows": 2,
                **kw,
            }
        ),
        "sequence_length",
        BAD_POSITIVE_INT[:6] + [("too_long", 200)],
    )
    + sweep(
        "lm_windows",
        lambda **kw: kds.lm_windows(
            **{
                "data": np.arange(100),
                "sequence_length": 8,
                "num_windows": 2,
                **kw,
            }
        ),
        "num_windows",
        BAD_POSITIVE_INT[:6],
    )
)


# Left for a follow-up (silent or obscure today; see the session report).
_LEFT = {}


def _mark_left(params):
    out = []
    for p in params:
        reason = next((r for k, r in _LEFT.items() if p.id.startswith(k)), None)
        if reason:
            p = pytest.param(
                *p.values,
                id=p.id,
                marks=[pytest.mark.xfail(strict=True, reason=reason)],
            )
        out.append(p)
    return out


@pytest.mark.parametrize("fn, error, match", _mark_left(CASES + APPS))
def test_bad_input(fn, error, match):
    check_case(fn, error, match)


@pytest.mark.parametrize("label, value", GOOD_FRACTIONS)
def test_any_real_fraction_is_a_fraction(label, value):
    const(target_sparsity=value)
    poly(final_sparsity=value)
    masks(sparsity=value)
    potential(dense_accuracy=value, delta=value)


@pytest.mark.parametrize("label, value", GOOD_INTS)
def test_any_integer_is_an_integer(label, value):
    const(begin_step=value, frequency=value)
    iterative(steps_per_cycle=value)
    lm(num_layers=value)
