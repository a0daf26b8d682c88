"""Our AltUp and LAuReL against Gemma 3n's (keras-hub; Hugging Face's clamp
written in NumPy): same outputs from the same weights, random init, no
download. keras-hub keeps AltUp's K blocks on a leading axis, we keep them
before the features: `ours = moveaxis(theirs, 0, -2)`.
"""

import keras
import numpy as np
import pytest

from keras_efficient.layers import AltUp
from keras_efficient.layers import LaurelResidual
from tests.harness import assert_allclose
from tests.harness import to_numpy

gemma = pytest.importorskip("keras_hub.src.models.gemma3n.gemma3n_text_layers")

RNG = np.random.default_rng(0)
K, B, T, D = 3, 2, 5, 16


def keras_hub_altup(clip=0.05, correct_scale=True, active=1):
    altup = gemma.Gemma3nTextAltUp(
        hidden_size=D,
        altup_num_inputs=K,
        altup_coef_clip=clip,
        altup_active_idx=active,
        rms_norm_eps=1e-6,
        altup_correct_scale=correct_scale,
    )
    altup.build((K, B, T, D))
    # Random weights everywhere, large enough for the clip to bind.
    for weight in altup.weights:
        weight.assign(RNG.normal(size=weight.shape).astype("float32"))
    return altup


def keras_hub_step(altup, inner, hidden):
    """keras-hub's decoder order: predict, run the layer, correct."""
    # `predict` / `correct` are plain methods: they get tensors, not arrays.
    predictions = altup.predict(keras.ops.convert_to_tensor(hidden))
    activated = inner(predictions[altup.altup_active_idx])
    return altup.correct(predictions, activated)


def numpy_hf_altup(altup, inner, hidden, training):
    """Hugging Face's `Gemma3nTextAltUp` (predict + correct) in NumPy.

    HF clamps `prediction_coefs.weight` in training and
    `correction_coefs.weight` always, in place, before using them.
    """
    w = {
        v.path.split("/")[-2] + "/" + v.name: to_numpy(v) for v in altup.weights
    }
    clip = altup.altup_coef_clip
    w_p = w["prediction_coefs/kernel"]
    if training:
        w_p = np.clip(w_p, -clip, clip)
    w_c = np.clip(w["correction_coefs/kernel"], -clip, clip)

    def route(z):
        normed = z / np.sqrt(np.mean(z**2, -1, keepdims=True) + 1e-6)
        normed = normed * w["router_norm/scale"]
        return np.tanh((normed * (1.0 / D)) @ w["modality_router/kernel"])

    a = altup.altup_active_idx
    r = route(hidden[a])
    coefs = (r @ w_p).reshape(r.shape[:-1] + (K, K))
    predictions = hidden + np.einsum("btij,jbtd->ibtd", coefs, hidden)
    activated = to_numpy(inner(predictions[a]))
    g = route(activated) @ w_c + 1.0
    innovation = activated - predictions[a]
    return predictions + np.moveaxis(g, -1, 0)[..., None] * innovation


def ours_on(layer, hidden, training=False):
    out = layer(np.moveaxis(hidden, 0, -2), training=training)
    return np.moveaxis(to_numpy(out), -2, 0)


@pytest.mark.parametrize("active", [0, 2])
def test_altup_matches_keras_hub(active):
    altup = keras_hub_altup(active=active)
    inner = keras.layers.Dense(D, activation="tanh")
    hidden = RNG.normal(size=(K, B, T, D)).astype("float32")
    expected = to_numpy(keras_hub_step(altup, inner, hidden))
    ours = AltUp.from_gemma3n(altup, inner, clip_mode=None)
    assert ours.coefficients == "routed" and ours.routing == "gemma3n"
    got = ours_on(ours, hidden)
    assert_allclose(got, expected, atol=2e-5, rtol=2e-5)
    # The output scale is Gemma 3n's too.
    block = expected[active]
    assert_allclose(
        ours.scale_corrected_output(block),
        altup.scale_corrected_output(block),
        atol=1e-6,
    )


@pytest.mark.parametrize("training", [False, True])
def test_altup_weight_clip_matches_hugging_face(training):
    altup = keras_hub_altup(clip=0.05)
    inner = keras.layers.Dense(D, activation="tanh")
    hidden = RNG.normal(size=(K, B, T, D)).astype("float32")
    expected = numpy_hf_altup(altup, inner, hidden, training)
    unclipped = to_numpy(keras_hub_step(altup, inner, hidden))
    assert np.abs(expected - unclipped).max() > 1e-2  # the clip binds
    ours = AltUp.from_gemma3n(altup, inner, clip_mode="weights")
    got = ours_on(ours, hidden, training=training)
    assert_allclose(got, expected, atol=2e-5, rtol=2e-5)


def test_altup_weight_clip_is_kept_by_the_optimizer():
    altup = keras_hub_altup(clip=0.05, correct_scale=False)
    inner = keras.layers.Dense(D)
    layer = AltUp.from_gemma3n(altup, inner, clip_mode="weights")
    model = keras.Sequential([keras.Input((T, K, D)), layer])
    model.compile("sgd", "mse")
    x = RNG.normal(size=(B, T, K, D)).astype("float32")
    model.fit(x, x, epochs=1, verbose=0)
    for kernel in (layer.prediction_kernel, layer.correction_kernel):
        assert np.abs(to_numpy(kernel)).max() <= 0.05 + 1e-7


def test_old_routed_form_differs_from_gemma():
    altup = keras_hub_altup(clip=10.0)
    inner = keras.layers.Dense(D, activation="tanh")
    hidden = RNG.normal(size=(K, B, T, D)).astype("float32")
    ours = AltUp.from_gemma3n(altup, inner, clip_mode=None)
    config = ours.get_config()
    config["routing"] = "active_input"
    old = AltUp.from_config(config)
    old.build((None, None, K, D))
    for name in ("router_kernel", "prediction_kernel", "correction_kernel"):
        getattr(old, name).assign(getattr(ours, name))
    assert np.abs(ours_on(old, hidden) - ours_on(ours, hidden)).max() > 1e-2


def keras_hub_laurel(rank=4):
    block = gemma.Gemma3nTextLaurelBlock(
        hidden_size=D, laurel_rank=rank, rms_norm_eps=1e-6
    )
    block.build((B, T, D))
    for weight in block.weights:
        weight.assign(RNG.normal(size=weight.shape).astype("float32"))
    return block


def test_laurel_matches_keras_hub():
    block = keras_hub_laurel()
    ours = LaurelResidual.from_gemma3n(block)
    assert ours.variant == "gemma3n" and ours.rank == 4
    x, fx, z = (RNG.normal(size=(B, T, D)).astype("float32") for _ in "xyz")
    assert_allclose(ours.branch(z), block(z), atol=1e-5, rtol=1e-5)
    # Gemma 3n's decoder merges attention and LAuReL by 1 / sqrt(2).
    expected = (x + fx + to_numpy(block(z))) / np.sqrt(2)
    got = ours(x, fx, branch_input=z)
    assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert_allclose(
        ours(x, fx), (x + fx + to_numpy(block(x))) / np.sqrt(2), atol=1e-5
    )
