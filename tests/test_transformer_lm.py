import os
import tempfile

import keras
import numpy as np
import pytest

from keras_efficient.applications import TransformerLM
from keras_efficient.applications.blocks import CausalSelfAttention
from keras_efficient.applications.blocks import TransformerBlock
from keras_efficient.applications.blocks import apply_rotary
from keras_efficient.layers import AltUp
from keras_efficient.layers import SequenceAltUp
from tests.harness import JIT
from tests.harness import assert_allclose
from tests.harness import run_layer_test
from tests.harness import to_numpy

RNG = np.random.default_rng(0)
SMALL = dict(
    vocabulary_size=32,
    sequence_length=12,
    hidden_dim=16,
    num_layers=2,
    num_heads=2,
)


def lm(**kwargs):
    return TransformerLM(**{**SMALL, **kwargs})


def batch(n=4, length=12):
    ids = RNG.integers(0, 32, size=(n, length + 1)).astype("int32")
    return ids[:, :-1], ids[:, 1:]


def train_step(model):
    x, y = batch()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=JIT,
    )
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [to_numpy(w) for w in model.trainable_weights]
    # Routed AltUp's router and its norm scale (and LAuReL-LR's A) get their
    # first gradient once the zero-initialised kernels after them have
    # moved: one step may not change them.
    unchanged = [
        w.path
        for w, a, b in zip(model.trainable_weights, before, after)
        if np.array_equal(a, b)
    ]
    assert all(
        any(n in path for n in ("router_kernel", "router_norm", "lr_kernel_a"))
        for path in unchanged
    ), unchanged
    return x


def save_and_load(model, x):
    expected = model.predict(x, verbose=0)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "lm.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is TransformerLM
    assert loaded.get_config() == model.get_config()
    assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)
    return loaded


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(
            altup=3,
            altup_coefficients="routed",
            altup_readout="projection",
            sequence_altup=3,
            positions="learned",
        ),
        pytest.param(
            dict(altup=2, recycled=True, altup_readout="sum"),
            marks=pytest.mark.slow,
        ),
    ],
    ids=["plain", "routed3_seq3_learned", "recycled2"],
)
def test_builds_trains_saves_generates(options):
    model = lm(**options)
    x = train_step(model)
    assert model(x).shape == (4, 12, 32)
    loaded = save_and_load(model, x)
    greedy = loaded.generate(x[0, :3], max_new_tokens=4)
    assert greedy.shape == (7,) and greedy.dtype == np.int32
    np.testing.assert_array_equal(greedy[:3], x[0, :3])


def test_laurel_option():
    laurel = pytest.importorskip("keras_efficient.layers.laurel")
    model = lm(altup=2, laurel="rw+lr", laurel_rank=4)
    blocks = [layer.layer for layer in model.layers if isinstance(layer, AltUp)]
    assert all(
        isinstance(b.attention_residual, laurel.LaurelResidual) for b in blocks
    )
    x = train_step(model)
    save_and_load(model, x)


def test_structure():
    model = lm(altup=2, sequence_altup=2, num_layers=4)
    altups = [layer for layer in model.layers if isinstance(layer, AltUp)]
    assert [a.active_block for a in altups] == [0, 1, 0, 1]
    assert [isinstance(a.layer, SequenceAltUp) for a in altups] == [
        False,
        True,
        False,
        True,
    ]
    # Recycled-AltUp adds no embedding parameters; the wide table K times.
    plain = lm().get_layer("token_embedding").count_params()
    wide = lm(altup=2).get_layer("token_embedding").count_params()
    recycled = lm(altup=2, recycled=True)
    assert recycled.get_layer("token_embedding").count_params() == plain
    assert wide == 2 * plain
    # AltUp adds K^2 + K scalars per layer and nothing else besides the table.
    extra = recycled.count_params() - lm().count_params()
    assert extra == SMALL["num_layers"] * (4 + 2)


def test_altup_one_block_equals_plain():
    keras.utils.set_random_seed(3)
    plain = lm()
    x, _ = batch()
    assert_allclose(plain(x), plain(x))  # deterministic
    keras.utils.set_random_seed(3)
    again = lm()
    assert_allclose(again(x), plain(x), atol=1e-6)


def test_causal():
    model = lm(altup=2, sequence_altup=2)
    x, _ = batch(2)
    base = to_numpy(model(x))
    perturbed = x.copy()
    perturbed[:, 7:] = (perturbed[:, 7:] + 5) % 32
    out = to_numpy(model(perturbed))
    np.testing.assert_allclose(out[:, :7], base[:, :7], atol=1e-5)
    assert np.abs(out[:, 7:] - base[:, 7:]).max() > 1e-4


def test_generation_sampling():
    model = lm()
    prompt = np.array([[1, 2, 3], [4, 5, 6]], "int32")
    a = model.generate(prompt, max_new_tokens=15, temperature=1.0, seed=7)
    b = model.generate(prompt, max_new_tokens=15, temperature=1.0, seed=7)
    assert a.shape == (2, 18)  # longer than sequence_length: window slides
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() < 32
    # Greedy decoding follows the argmax of the model's own logits.
    greedy = model.generate(prompt, max_new_tokens=1)
    logits = to_numpy(model(prompt))
    np.testing.assert_array_equal(greedy[:, -1], logits[:, -1].argmax(-1))


def test_block_harness():
    x = RNG.normal(size=(2, 6, 16)).astype("float32")
    run_layer_test(lambda: TransformerBlock(16, num_heads=2), x)
    run_layer_test(
        lambda: CausalSelfAttention(16, num_heads=4, rotary=False),
        x,
        run_mixed_precision=False,
    )


def test_rotary_is_a_rotation():
    x = RNG.normal(size=(2, 5, 3, 8)).astype("float32")
    y = to_numpy(apply_rotary(x))
    np.testing.assert_allclose(
        np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5
    )
    np.testing.assert_allclose(y[:, 0], x[:, 0], atol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="altup"):
        lm(altup=0)
    with pytest.raises(ValueError, match="recycled"):
        lm(recycled=True)
    with pytest.raises(ValueError, match="sequence_altup"):
        lm(sequence_altup=0)
    with pytest.raises(ValueError, match="positions"):
        lm(positions="sinusoidal")
    with pytest.raises(ValueError, match="num_heads"):
        lm(num_heads=3)
    with pytest.raises(ValueError, match="prompt_ids"):
        lm().generate(np.zeros((1, 1, 1), "int32"))
    with pytest.raises(ValueError, match="temperature"):
        lm().generate(np.zeros((3,), "int32"), temperature=-1.0)
