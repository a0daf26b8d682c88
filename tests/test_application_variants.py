"""Every option string a layer accepts goes through every application that
takes it: each builds and runs one forward pass.

The applications read the LAuReL variant with the layer's own
`normalize_variant`, so every spelling `LaurelResidual` accepts (parts in
any order, any case, spaces around `+`) must work in the ResNet builders
and in `TransformerLM`; likewise AltUp (static / routed coefficients,
Recycled-AltUp, Sequence-AltUp), the lookup kinds and the MoE routers in
`TransformerLM`.
"""

import keras
import numpy as np
import pytest

from keras_efficient.applications import ResNet
from keras_efficient.applications import ResNet18
from keras_efficient.applications import ResNet20
from keras_efficient.applications import ResNet50
from keras_efficient.applications import ResNet56
from keras_efficient.applications import TransformerLM
from keras_efficient.layers.altup import COEFFICIENT_MODES
from keras_efficient.layers.laurel import LaurelResidual
from keras_efficient.layers.laurel_options import VARIANTS
from keras_efficient.layers.laurel_options import variant_spellings
from keras_efficient.layers.lookup import LOOKUPS
from keras_efficient.layers.moe import ROUTERS

SPELLINGS = [s for v in VARIANTS for s in variant_spellings(v)] + [
    "RW + LR",
    " Pa+rW ",
]

SMALL = {"input_shape": (8, 8, 1), "classes": 3, "laurel_rank": 2}
LARGE = {"input_shape": (32, 32, 1), "classes": 3, "laurel_rank": 2}
RESNETS = {
    "ResNet": lambda **kw: ResNet([1, 1], [4, 8], block="bottleneck", **kw),
    "ResNet20": lambda **kw: ResNet20(width_multiplier=0.25, **kw),
    "ResNet56": lambda **kw: ResNet56(width_multiplier=0.25, **kw),
    "ResNet18": lambda **kw: ResNet18(width_multiplier=1 / 16, **kw),
    "ResNet50": lambda **kw: ResNet50(width_multiplier=1 / 16, **kw),
}
# The per-builder cost is the number of blocks. ResNet56 builds ResNet20's
# blocks and ResNet50 the generic bottleneck `ResNet`'s, which take every
# spelling on every run: the deep twins take one variant by default, every
# spelling under the slow mark. ResNet18 (basic blocks, ImageNet stem) takes
# every variant, and its other spellings in the slow run.
DEEP = ("ResNet56", "ResNet50")
DEEP_DEFAULT = "rw+lr+pa"


def _resnet_cases():
    canonical = set(VARIANTS)
    for builder in RESNETS:
        for spelling in SPELLINGS:
            marks = ()
            if builder in DEEP and spelling != DEEP_DEFAULT:
                marks = pytest.mark.slow
            elif builder == "ResNet18" and spelling not in canonical:
                marks = pytest.mark.slow
            yield pytest.param(builder, spelling, marks=marks)


def _lm(**kwargs):
    model = TransformerLM(
        vocabulary_size=32,
        sequence_length=8,
        hidden_dim=16,
        num_layers=2,
        num_heads=2,
        **kwargs,
    )
    ids = np.random.default_rng(0).integers(0, 32, size=(2, 8))
    logits = keras.ops.convert_to_numpy(model(ids.astype("int32")))
    assert logits.shape == (2, 8, 32)
    assert np.all(np.isfinite(logits))
    return model


@pytest.mark.parametrize("builder,spelling", list(_resnet_cases()))
def test_resnet_takes_every_laurel_spelling(builder, spelling):
    small = builder in ("ResNet", "ResNet20", "ResNet56")
    model = RESNETS[builder](laurel=spelling, **(SMALL if small else LARGE))
    shape = (2,) + (SMALL if small else LARGE)["input_shape"]
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    assert keras.ops.convert_to_numpy(model(x)).shape == (2, 3)
    expected = LaurelResidual(spelling).variant
    residuals = [
        layer for layer in model.layers if isinstance(layer, LaurelResidual)
    ]
    assert residuals and all(r.variant == expected for r in residuals)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_transformer_lm_takes_every_laurel_spelling(spelling):
    model = _lm(laurel=spelling, laurel_rank=4)
    assert model.laurel == LaurelResidual(spelling).variant


@pytest.mark.parametrize("coefficients", COEFFICIENT_MODES)
@pytest.mark.parametrize("recycled", [False, True])
def test_transformer_lm_takes_every_altup_option(coefficients, recycled):
    _lm(altup=2, altup_coefficients=coefficients, recycled=recycled)


def test_transformer_lm_takes_sequence_altup():
    _lm(sequence_altup=2, altup=2)


@pytest.mark.parametrize("lookup", LOOKUPS)
def test_transformer_lm_takes_every_lookup(lookup):
    _lm(lookup={"num_entries": 64, "lookup": lookup, "seed": 0})


@pytest.mark.parametrize("router", ROUTERS)
def test_transformer_lm_takes_every_moe_router(router):
    _lm(moe={"num_experts": 4, "router": router, "seed": 0})
