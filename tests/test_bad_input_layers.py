"""Bad inputs to `keras_efficient.layers.*`: loud and clear, never silent."""

import keras
import numpy as np
import pytest

from keras_efficient import layers as kel
from tests.bad_input_helpers import BAD_BOOL
from tests.bad_input_helpers import BAD_CHOICE
from tests.bad_input_helpers import BAD_NUMBER
from tests.bad_input_helpers import BAD_POSITIVE_INT
from tests.bad_input_helpers import GOOD_INTS
from tests.bad_input_helpers import GOOD_NUMBERS
from tests.bad_input_helpers import case
from tests.bad_input_helpers import check_case
from tests.bad_input_helpers import set_in_layer
from tests.bad_input_helpers import sweep
from tests.bad_input_helpers import tamper_keras_file


def f32(*shape):
    return np.random.normal(size=shape).astype("float32")


def dense(units=4):
    return keras.layers.Dense(units)


def laurel(**kw):
    return kel.LaurelResidual(**kw)


def altup(**kw):
    kw.setdefault("layer", dense())
    return kel.AltUp(**kw)


def altup_stack(**kw):
    kw.setdefault("layers", [dense(), dense()])
    return kel.AltUpStack(**kw)


def altup_embedding(**kw):
    kw.setdefault("input_dim", 10)
    kw.setdefault("output_dim", 4)
    return kel.AltUpEmbedding(**kw)


def lookup(**kw):
    kw.setdefault("num_entries", 16)
    return kel.SparseLookupTable(**kw)


def moe(**kw):
    kw.setdefault("num_experts", 4)
    kw.setdefault("hidden_dim", 8)
    return kel.MixtureOfExperts(**kw)


def seq_altup(**kw):
    kw.setdefault("layer", dense())
    return kel.SequenceAltUp(**kw)


def laurel_stack(**kw):
    kw.setdefault("blocks", [dense(), dense()])
    return kel.LaurelStack(**kw)


NO_NONE = [v for v in BAD_POSITIVE_INT if v[0] != "none"]

CONSTRUCTOR = (
    # LaurelResidual
    sweep("LaurelResidual", laurel, "variant", BAD_CHOICE + [("bad", "rw+xx")])
    + sweep("LaurelResidual", laurel, "rank", BAD_POSITIVE_INT)
    + sweep("LaurelResidual", laurel, "num_activations", BAD_POSITIVE_INT)
    + sweep(
        "LaurelResidual",
        laurel,
        "normalization",
        [("typo", "nope"), ("int", 1), ("bool", True)],
    )
    + sweep("LaurelResidual", laurel, "per_dimension", BAD_BOOL)
    + sweep("LaurelResidual", laurel, "low_rank_history", BAD_BOOL)
    + sweep(
        "LaurelResidual",
        laurel,
        "data_format",
        [("channels_first", "channels_first"), ("int", 1)],
    )
    # LaurelStack / LaurelBlock
    + sweep(
        "LaurelStack",
        laurel_stack,
        "blocks",
        [("empty", []), ("none", None), ("layer", dense()), ("str", ["x"])],
    )
    + sweep("LaurelStack", laurel_stack, "rank", [("zero", 0), ("str", "4")])
    + sweep(
        "LaurelBlock",
        kel.LaurelBlock,
        "block",
        [("none", None), ("str", "dense"), ("list", [dense()])],
    )
    # AltUp
    + sweep("AltUp", altup, "layer", [("none", None), ("str", "dense")])
    + sweep("AltUp", altup, "num_blocks", BAD_POSITIVE_INT)
    + sweep(
        "AltUp",
        altup,
        "active_block",
        [("negative", -1), ("str", "0"), ("bool", True), ("float", 0.5)],
    )
    + [
        case(
            "AltUp-active_block-past-num_blocks",
            lambda: altup(num_blocks=2, active_block=2),
            "active_block",
        )
    ]
    + sweep("AltUp", altup, "coefficients", BAD_CHOICE)
    + sweep("AltUp", altup, "coefficient_clip", BAD_NUMBER + [("neg", -1.0)])
    + sweep("AltUp", altup, "epsilon", BAD_NUMBER + [("neg", -1e-6)])
    # AltUpStack
    + sweep(
        "AltUpStack",
        altup_stack,
        "layers",
        [("none", None), ("empty", []), ("str", "dense"), ("strs", ["d"])],
    )
    + sweep("AltUpStack", altup_stack, "num_blocks", BAD_POSITIVE_INT[:4])
    + sweep("AltUpStack", altup_stack, "schedule", BAD_CHOICE)
    + sweep("AltUpStack", altup_stack, "coefficients", BAD_CHOICE[:1])
    # AltUpEmbedding / AltUpInput / AltUpReadout
    + sweep("AltUpEmbedding", altup_embedding, "input_dim", BAD_POSITIVE_INT)
    + sweep("AltUpEmbedding", altup_embedding, "output_dim", BAD_POSITIVE_INT)
    + sweep("AltUpEmbedding", altup_embedding, "num_blocks", NO_NONE[:4])
    + sweep("AltUpEmbedding", altup_embedding, "recycled", BAD_BOOL)
    + sweep("AltUpInput", kel.AltUpInput, "num_blocks", NO_NONE[:6])
    + sweep("AltUpInput", kel.AltUpInput, "mode", BAD_CHOICE)
    + sweep("AltUpReadout", kel.AltUpReadout, "num_blocks", NO_NONE[:6])
    + sweep("AltUpReadout", kel.AltUpReadout, "mode", BAD_CHOICE)
    # SequenceAltUp
    + sweep("SequenceAltUp", seq_altup, "layer", [("none", None), ("s", "x")])
    + sweep("SequenceAltUp", seq_altup, "stride", BAD_POSITIVE_INT)
    # LSHHash
    + sweep("LSHHash", kel.LSHHash, "num_tables", BAD_POSITIVE_INT)
    + sweep(
        "LSHHash",
        kel.LSHHash,
        "num_bits",
        BAD_POSITIVE_INT + [("too_many", 64)],
    )
    + sweep("LSHHash", kel.LSHHash, "kind", BAD_CHOICE)
    + sweep(
        "LSHHash",
        kel.LSHHash,
        "bucket_width",
        BAD_NUMBER + [("zero", 0.0), ("neg", -1.0), ("none", None)],
    )
    + sweep(
        "LSHHash",
        kel.LSHHash,
        "seed",
        [("str", "0"), ("float", 0.5), ("bool", True)],
    )
    # SparseLookupTable
    + sweep("SparseLookupTable", lookup, "num_entries", BAD_POSITIVE_INT)
    + sweep("SparseLookupTable", lookup, "dim", NO_NONE)
    + sweep("SparseLookupTable", lookup, "lookup", BAD_CHOICE)
    + sweep("SparseLookupTable", lookup, "consume", BAD_CHOICE)
    + sweep("SparseLookupTable", lookup, "token_mapping", BAD_CHOICE)
    + sweep("SparseLookupTable", lookup, "num_tables", NO_NONE[:5])
    + sweep(
        "SparseLookupTable",
        lookup,
        "top_k",
        NO_NONE[:5] + [("zero", 0), ("past_entries", 17)],
    )
    + [
        case(
            "SparseLookupTable-num_tables-not-dividing",
            lambda: lookup(num_entries=16, lookup="lsh", num_tables=3),
            "num_tables",
        ),
        case(
            "SparseLookupTable-num_bits-too-many",
            lambda: lookup(lookup="lsh", num_bits=64),
            "num_bits",
        ),
        case(
            "SparseLookupTable-seed-str",
            lambda: lookup(lookup="lsh", seed="0"),
            "seed",
        ),
    ]
    # MixtureOfExperts
    + sweep("MixtureOfExperts", moe, "num_experts", BAD_POSITIVE_INT)
    + sweep("MixtureOfExperts", moe, "hidden_dim", BAD_POSITIVE_INT)
    + sweep("MixtureOfExperts", moe, "router", BAD_CHOICE)
    + sweep(
        "MixtureOfExperts",
        moe,
        "top_k",
        NO_NONE[:5] + [("zero", 0), ("past_experts", 5)],
    )
    + sweep(
        "MixtureOfExperts",
        moe,
        "capacity_factor",
        BAD_NUMBER + [("zero", 0.0), ("neg", -1.0)],
    )
    + sweep("MixtureOfExperts", moe, "output_dim", NO_NONE)
    + sweep(
        "MixtureOfExperts",
        moe,
        "load_balance_weight",
        BAD_NUMBER + [("neg", -0.1), ("none", None)],
    )
    + sweep("MixtureOfExperts", moe, "num_bits", NO_NONE[:5] + [("big", 64)])
    + sweep("MixtureOfExperts", moe, "implementation", BAD_CHOICE)
    + sweep("MixtureOfExperts", moe, "seed", [("str", "0"), ("float", 0.5)])
)


def call(layer, *args, **kwargs):
    return layer(*args, **kwargs)


def symbolic(layer, *shapes):
    return layer(*[keras.Input(s[1:], batch_size=s[0]) for s in shapes])


CALL = [
    # LaurelResidual
    case(
        "LaurelResidual-call-fx-width",
        lambda: call(laurel(rank=2), f32(2, 8), f32(2, 6)),
        "fx",
    ),
    case(
        "LaurelResidual-call-fx-rank",
        lambda: call(laurel(rank=2), f32(2, 3, 8), f32(2, 8)),
        "fx",
    ),
    case(
        "LaurelResidual-call-rank-1",
        lambda: call(laurel(rank=2), f32(8), f32(8)),
        "x.shape",
    ),
    case(
        "LaurelResidual-call-rank-past-width",
        lambda: call(laurel(rank=16), f32(2, 8), f32(2, 8)),
        "rank",
    ),
    case(
        "LaurelResidual-symbolic-fx-width",
        lambda: symbolic(laurel(rank=2), (2, 8), (2, 6)),
        "fx",
    ),
    case(
        "LaurelResidual-call-previous-too-many",
        lambda: call(
            laurel(variant="pa", num_activations=2),
            f32(2, 8),
            f32(2, 8),
            previous=[f32(2, 8), f32(2, 8)],
        ),
        "previous",
    ),
    case(
        "LaurelResidual-call-previous-shape",
        lambda: call(
            laurel(variant="pa", num_activations=3),
            f32(2, 8),
            f32(2, 8),
            previous=[f32(2, 6)],
        ),
        "previous",
    ),
    case(
        "LaurelResidual-call-previous-without-pa",
        lambda: call(
            laurel(variant="rw"), f32(2, 8), f32(2, 8), previous=[f32(2, 8)]
        ),
        "previous",
    ),
    # LaurelStack / LaurelBlock
    case(
        "LaurelStack-call-block-changes-width",
        lambda: call(laurel_stack(blocks=[dense(6), dense(6)]), f32(2, 8)),
        "block",
    ),
    case(
        "LaurelBlock-call-block-changes-width",
        lambda: call(kel.LaurelBlock(dense(6)), f32(2, 8)),
        "block",
    ),
    # AltUp family
    case(
        "AltUp-call-rank-2",
        lambda: call(altup(), f32(2, 4)),
        "input_shape",
    ),
    case(
        "AltUp-call-wrong-num-blocks",
        lambda: call(altup(num_blocks=2), f32(2, 3, 4)),
        "num_blocks",
    ),
    case(
        "AltUp-call-layer-changes-width",
        lambda: call(altup(layer=dense(6)), f32(2, 2, 4)),
        "layer",
    ),
    case(
        "AltUpStack-call-wrong-num-blocks",
        lambda: call(altup_stack(num_blocks=2), f32(2, 3, 4)),
        "num_blocks",
    ),
    case(
        "AltUpReadout-call-wrong-num-blocks",
        lambda: call(kel.AltUpReadout(num_blocks=2), f32(2, 3, 4)),
        "num_blocks",
    ),
    case(
        "AltUpReadout-call-rank-2",
        lambda: call(kel.AltUpReadout(), f32(2, 4)),
        "input_shape",
    ),
    case(
        "AltUpInput-call-width-not-divisible",
        lambda: call(kel.AltUpInput(num_blocks=3, mode="split"), f32(2, 8)),
        "num_blocks",
    ),
    case(
        "AltUpInput-symbolic-width-not-divisible",
        lambda: symbolic(kel.AltUpInput(num_blocks=3), (2, 8)),
        "num_blocks",
    ),
    case(
        "AltUpEmbedding-call-float-ids",
        lambda: call(altup_embedding(), np.array([[0.5, 1.7]], "float32")),
        "inputs",
    ),
    case(
        "SequenceAltUp-call-rank-2",
        lambda: call(seq_altup(stride=2), f32(2, 4)),
        "rank|inputs",
    ),
    case(
        "SequenceAltUp-call-layer-changes-width",
        lambda: call(seq_altup(layer=dense(6)), f32(2, 4, 4)),
        "layer",
    ),
    # LSHHash
    case(
        "LSHHash-call-rank-1-unknown-width",
        lambda: symbolic(kel.LSHHash(), (2, None)),
        "input",
    ),
    case(
        "LSHHash-call-width-changes",
        lambda: (lambda h: (h(f32(2, 8)), h(f32(2, 6))))(kel.LSHHash(seed=0)),
        "input",
    ),
    # SparseLookupTable
    case(
        "SparseLookupTable-call-missing-token-ids",
        lambda: call(lookup(lookup="token_id"), f32(2, 3, 8)),
        "token_ids",
    ),
    case(
        "SparseLookupTable-call-token-ids-with-lsh",
        lambda: call(
            lookup(lookup="lsh", seed=0),
            f32(2, 3, 8),
            np.zeros((2, 3), "int32"),
        ),
        "token_ids",
    ),
    case(
        "SparseLookupTable-call-token-ids-shape",
        lambda: call(lookup(), f32(2, 3, 8), np.zeros((2, 4), "int32")),
        "token_ids",
    ),
    case(
        "SparseLookupTable-call-float-token-ids",
        lambda: call(lookup(), f32(2, 3, 8), np.zeros((2, 3), "float32")),
        "token_ids",
    ),
    case(
        "SparseLookupTable-call-dim-not-width-add",
        lambda: call(lookup(dim=4), f32(2, 3, 8), np.zeros((2, 3), "int32")),
        "dim",
    ),
    case(
        "SparseLookupTable-symbolic-token-ids-shape",
        lambda: symbolic(lookup(), (2, 3, 8), (2, 4)),
        "token_ids",
    ),
    case(
        "SparseLookupTable-call-direct-id-past-table",
        lambda: call(
            lookup(token_mapping="direct"),
            f32(1, 2, 8),
            np.array([[3, 16]], "int32"),
        ),
        "token_ids",
    ),
    case(
        "SparseLookupTable-call-direct-negative-id",
        lambda: call(
            lookup(token_mapping="direct"),
            f32(1, 2, 8),
            np.array([[-1, 3]], "int32"),
        ),
        "token_ids",
    ),
    # MixtureOfExperts
    case(
        "MixtureOfExperts-call-unknown-width",
        lambda: symbolic(moe(router="softmax"), (2, None)),
        "input",
    ),
    case(
        "MixtureOfExperts-call-width-changes",
        lambda: (lambda m: (m(f32(2, 8)), m(f32(2, 6))))(moe(router="softmax")),
        "input",
    ),
]


def _save_tamper(make_model, class_name, key, value):
    return lambda: tamper_keras_file(
        make_model(), set_in_layer(class_name, key, value)
    )


def _model(layer_fn, shape):
    def make():
        inputs = keras.Input(shape)
        return keras.Model(inputs, layer_fn()(inputs))

    return make


TAMPER = [
    case(
        "LSHHash-load-num_bits-negative",
        _save_tamper(
            _model(lambda: kel.LSHHash(seed=0), (8,)), "LSHHash", "num_bits", -1
        ),
        "`num_bits` must be",
    ),
    case(
        "LSHHash-load-kind-typo",
        _save_tamper(
            _model(lambda: kel.LSHHash(seed=0), (8,)), "LSHHash", "kind", "x"
        ),
        "`kind` must be",
    ),
    case(
        "MixtureOfExperts-load-top_k-string",
        _save_tamper(
            _model(lambda: moe(router="softmax"), (8,)),
            "MixtureOfExperts",
            "top_k",
            "1",
        ),
        "`top_k` must be",
    ),
    case(
        "LaurelResidual-load-variant-typo",
        _save_tamper(
            _model(lambda: kel.LaurelStack([dense(8)], rank=2), (8,)),
            "LaurelStack",
            "variant",
            "rw+xx",
        ),
        "`variant` must be",
    ),
    case(
        "AltUpReadout-load-mode-typo",
        _save_tamper(
            _model(lambda: kel.AltUpReadout(), (2, 4)),
            "AltUpReadout",
            "mode",
            "median",
        ),
        "`mode` must be",
    ),
    case(
        "SparseLookupTable-load-num_entries-zero",
        _save_tamper(
            _model(lambda: lookup(lookup="lsh", seed=0), (3, 8)),
            "SparseLookupTable",
            "num_entries",
            0,
        ),
        "`num_entries` must be",
    ),
]


@pytest.mark.parametrize("fn, error, match", CONSTRUCTOR + CALL + TAMPER)
def test_bad_input(fn, error, match):
    check_case(fn, error, match)


@pytest.mark.parametrize("label, value", GOOD_NUMBERS)
def test_any_real_number_is_a_number(label, value):
    kel.LSHHash(bucket_width=value)
    kel.AltUp(dense(), coefficient_clip=value, epsilon=value)
    moe(capacity_factor=value, load_balance_weight=value)


@pytest.mark.parametrize("label, value", GOOD_INTS)
def test_any_integer_is_an_integer(label, value):
    kel.LSHHash(num_tables=value, num_bits=value, seed=value)
    kel.LaurelResidual(rank=value, num_activations=value)
    kel.AltUp(dense(), num_blocks=value)
    altup_embedding(input_dim=value, output_dim=value, num_blocks=value)
    moe(num_experts=value, hidden_dim=value, top_k=value, output_dim=value)
    lookup(num_entries=value * 4, dim=value, top_k=value)
    seq_altup(stride=value)
