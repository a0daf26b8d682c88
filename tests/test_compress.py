"""keras_efficient.compress: importance, compress, distill.

Importance scores are checked against a NumPy forward pass of a tiny
`TransformerLM` (activation) and against the backend's own gradient
reduced by hand per unit (Taylor); `compress` against `shrink` of the
masked model; one distillation step against a hand-written KD step.
"""

import keras
import numpy as np
import pytest
from scipy.special import erf

from keras_efficient.applications import TransformerLM
from keras_efficient.compress import compress
from keras_efficient.compress import compress_plan
from keras_efficient.compress import distill
from keras_efficient.compress import make_distiller
from keras_efficient.compress import transformer_importance
from keras_efficient.compress.budget import counts_at
from keras_efficient.compress.budget import parameters_at
from keras_efficient.compress.budget import ratio_for_params
from keras_efficient.losses import KnowledgeDistillationLoss
from keras_efficient.pruning import shrink
from keras_efficient.pruning import transformer_widths
from keras_efficient.pruning import zero_transformer_units
from keras_efficient.pruning.targets import walk_layers
from keras_efficient.pruning.transformer_families import Layout

VOCAB, LENGTH, D, HEADS, LAYERS = 32, 8, 16, 4, 2


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    model = TransformerLM(
        vocabulary_size=VOCAB, sequence_length=LENGTH, hidden_dim=D,
        num_layers=LAYERS, num_heads=HEADS,
    )  # fmt: skip
    # Larger weights than the initialiser's, so units differ clearly.
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(v.numpy() + rng.normal(0, 0.2, v.shape).astype("float32"))
    return model


def _data(n=12, seed=1):
    ids = np.random.default_rng(seed).integers(0, VOCAB, (n, LENGTH + 1))
    return ids[:, :-1].astype("int32"), ids[:, 1:].astype("int32")


def _w(model, path):
    (v,) = [v for v in model.weights if v.path == path]
    return keras.ops.convert_to_numpy(v).astype("float64")


def _rms(x, scale, eps=1e-6):
    return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + eps) * scale


def _rotary(x):
    dim = x.shape[-1]
    half = dim // 2
    inverse = 10000.0 ** -(np.arange(half) * (2.0 / dim))
    angles = np.arange(x.shape[1])[:, None] * inverse[None, :]
    cos, sin = np.cos(angles)[None, :, None], np.sin(angles)[None, :, None]
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def _numpy_activation_scores(model, x):
    """Minitron importance from a NumPy forward pass (float64)."""
    h = _w(model, "token_embedding/embeddings")[x]
    b, t = x.shape
    dim = D // HEADS
    ffn, heads, hidden = [], [], np.zeros(D)
    for i in range(LAYERS):
        p, f = f"block_{i}/", f"block_{i}/feedforward_{i}/"
        normed = _rms(h, _w(model, p + "attention_norm/scale"))
        qkv = normed @ _w(model, p + "attention/qkv/kernel")
        qkv = qkv.reshape(b, t, 3, HEADS, dim)
        q, k, v = _rotary(qkv[:, :, 0]), _rotary(qkv[:, :, 1]), qkv[:, :, 2]
        logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dim)
        logits = np.where(np.tril(np.ones((t, t))) > 0, logits, -np.inf)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        out = np.einsum("bhqk,bkhd->bqhd", weights, v)
        heads.append(np.linalg.norm(out, axis=-1).mean(axis=(0, 1)))
        h = h + out.reshape(b, t, D) @ _w(model, p + "attention/output/kernel")
        g = _rms(h, _w(model, p + "feedforward_norm/scale"))
        pre = g @ _w(model, f + "up/kernel")
        pre = pre + _w(model, f + "up/bias")
        neurons = 0.5 * pre * (1 + erf(pre / np.sqrt(2)))
        ffn.append(np.abs(neurons).mean(axis=(0, 1)))
        hidden += np.abs(normed).mean(axis=(0, 1)) + np.abs(g).mean((0, 1))
        down = neurons @ _w(model, f + "down/kernel")
        h = h + down + _w(model, f + "down/bias")
    final = _rms(h, _w(model, "final_norm/scale"))
    hidden += np.abs(final).mean(axis=(0, 1))
    return {"ffn": ffn, "heads": heads, "hidden": hidden}


def test_activation_importance_matches_numpy():
    model = _model()
    x, _ = _data()
    got = transformer_importance(model, x, "activation", batch_size=4)
    want = _numpy_activation_scores(model, x)
    for axis in ("ffn", "heads"):
        for i in range(LAYERS):
            np.testing.assert_allclose(
                got[axis][i], want[axis][i], rtol=2e-4, atol=1e-5
            )
    np.testing.assert_allclose(got["hidden"], want["hidden"], rtol=2e-4)
    # The units really differ: the test can tell a permutation.
    assert np.ptp(want["ffn"][0]) > 0.1 * np.mean(want["ffn"][0])
    # The recording left every layer's own `call` in place.
    assert not any("call" in vars(layer) for layer in walk_layers(model))


def _gradients(model, x, y):
    """Gradient of the mean LM loss of `model` on `(x, y)` (the backend's
    own autodiff), by weight path."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))
        grads = tape.gradient(loss, variables)
    elif backend == "torch":
        import torch

        loss = loss_fn(y, model(x))
        grads = torch.autograd.grad(loss, [v.value for v in variables])
    else:
        import jax

        def f(values):
            out, _ = model.stateless_call(
                values, [v.value for v in model.non_trainable_variables], x
            )
            return loss_fn(y, out)

        grads = jax.grad(f)([v.value for v in variables])
    return {
        v.path: keras.ops.convert_to_numpy(g).astype("float64")
        for v, g in zip(variables, grads)
    }


def _numpy_taylor(model, grads):
    """`sum |w * g|` per unit, by explicit slicing of each weight."""
    t = {p: np.abs(_w(model, p) * g) for p, g in grads.items()}
    dim = D // HEADS
    ffn, heads, hidden = [], [], np.zeros(D)
    hidden += t["token_embedding/embeddings"].sum(0)
    hidden += t["final_norm/scale"] + t["logits/kernel"].sum(1)
    for i in range(LAYERS):
        p, f = f"block_{i}/", f"block_{i}/feedforward_{i}/"
        ffn.append(
            t[f + "up/kernel"].sum(0) + t[f + "up/bias"]
            + t[f + "down/kernel"].sum(1)
        )  # fmt: skip
        qkv = t[p + "attention/qkv/kernel"].reshape(D, 3, HEADS, dim)
        out = t[p + "attention/output/kernel"].reshape(HEADS, dim, D)
        heads.append(qkv.sum(axis=(0, 1, 3)) + out.sum(axis=(1, 2)))
        hidden += (
            t[p + "attention_norm/scale"] + t[p + "feedforward_norm/scale"]
        )
        hidden += t[p + "attention/qkv/kernel"].sum(1)
        hidden += t[p + "attention/output/kernel"].sum(0)
        hidden += t[f + "up/kernel"].sum(1) + t[f + "down/kernel"].sum(0)
        hidden += t[f + "down/bias"]
    return {"ffn": ffn, "heads": heads, "hidden": hidden}


def test_taylor_importance_matches_gradient_reference():
    model = _model()
    x, y = _data()
    got = transformer_importance(model, (x, y), "taylor", batch_size=4)
    want = _numpy_taylor(model, _gradients(model, x, y))
    for axis in ("ffn", "heads"):
        for i in range(LAYERS):
            np.testing.assert_allclose(
                got[axis][i], want[axis][i], rtol=1e-3, atol=1e-7
            )
    np.testing.assert_allclose(got["hidden"], want["hidden"], rtol=1e-3)


def test_taylor_importance_of_a_frozen_model():
    # A `Distiller` freezes its teacher; the scores must not go to zero.
    model = _model()
    data = _data()
    want = transformer_importance(model, data, "taylor", batch_size=4)
    model.trainable = False
    got = transformer_importance(model, data, "taylor", batch_size=4)
    assert not model.trainable
    for i in range(LAYERS):
        np.testing.assert_allclose(got["ffn"][i], want["ffn"][i], rtol=1e-5)
    assert np.all(got["ffn"][0] > 0)


def test_magnitude_importance_is_the_weight_norm():
    model = _model()
    got = transformer_importance(model, importance="magnitude")
    up = _w(model, "block_1/feedforward_1/up/kernel")
    down = _w(model, "block_1/feedforward_1/down/kernel")
    bias = _w(model, "block_1/feedforward_1/up/bias")
    want = np.sqrt((up**2).sum(0) + bias**2 + (down**2).sum(1))
    np.testing.assert_allclose(got["ffn"][1], want, rtol=1e-6)


@pytest.mark.parametrize("importance", ["activation", "taylor"])
def test_compress_equals_shrink_of_the_masked_model(importance):
    model = _model()
    x, y = _data()
    small = compress(model, (x, y), ffn_ratio=0.5, importance=importance)
    assert isinstance(small, TransformerLM)
    assert small.intermediate_dim == 2 * D
    scores, plan = compress_plan(
        model, (x, y), ffn_ratio=0.5, importance=importance
    )
    masked = zero_transformer_units(model, plan)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(small(x)),
        keras.ops.convert_to_numpy(masked(x)),
        rtol=1e-4,
        atol=1e-4,
    )
    by_shrink = shrink(model, ffn_ratio=0.5, scores=scores)
    for a, b in zip(small.weights, by_shrink.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Activation and magnitude keep different neurons here.
    magnitude = compress_plan(model, ffn_ratio=0.5, importance="magnitude")[1]
    assert any(
        not np.array_equal(a, b) for a, b in zip(plan["ffn"], magnitude["ffn"])
    )


def test_compress_heads_and_hidden_together():
    model = _model()
    x, _ = _data()
    small = compress(model, x, ffn_ratio=0.5, head_ratio=0.5, hidden_ratio=0.5)
    assert (small.hidden_dim, small.num_heads) == (D // 2, HEADS // 2)
    assert small.count_params() < 0.4 * model.count_params()


def test_compress_per_layer_widths_from_activation_importance():
    model = _model()
    # Block 1's feed-forward neurons barely activate, so it keeps fewer
    # of them than block 0.
    for v in model.weights:
        if v.path.startswith("block_1/feedforward_1/up"):
            v.assign(v * 0.05)
    x, _ = _data()
    scores, plan = compress_plan(
        model, x, ffn_ratio=0.5, head_ratio=0.5, uniform=False
    )
    kept = [len(k) for k in plan["ffn"]]
    assert sum(kept) == 4 * D and kept[0] > kept[1]
    small = compress(model, x, ffn_ratio=0.5, head_ratio=0.5, uniform=False)
    assert small.intermediate_dim == kept
    widths = transformer_widths(small)
    assert widths["heads"] == [len(k) for k in plan["heads"]]
    assert small.hidden_dim == D  # heads go alone: TransformerLM's head_dim
    masked = zero_transformer_units(model, plan)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(small(x)),
        keras.ops.convert_to_numpy(masked(x)),
        rtol=1e-4,
        atol=1e-4,
    )


def test_parameter_count_at_a_ratio_is_exact():
    model = _model()
    layout = Layout(model)
    for ratio in (0.0, 0.3, 0.5, 0.75):
        want = shrink(model, ratio=ratio).count_params()
        assert parameters_at(layout, counts_at(layout, ratio)) == want


@pytest.mark.parametrize("budget", [0.35, 0.5, 0.8])
def test_compress_meets_a_parameter_budget_with_the_least_removal(budget):
    model = _model()
    x, _ = _data()
    total = model.count_params()
    small = compress(model, x, params=budget)
    assert isinstance(small, TransformerLM)
    assert small.count_params() <= budget * total
    # The smallest share that fits: a hair less removal does not fit.
    ratio = ratio_for_params(model, budget)
    layout = Layout(model)
    assert parameters_at(layout, counts_at(layout, ratio - 1e-6)) > (
        budget * total
    )
    # It is `shrink` at that share with the same scores.
    scores, _ = compress_plan(model, x, params=budget)
    by_shrink = shrink(model, ratio=ratio, scores=scores)
    for a, b in zip(small.weights, by_shrink.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_distillation_step_equals_hand_written_kd_step():
    teacher, student = _model(0), _model(5)
    x, y = _data(n=4)
    lr, weight, temperature = 0.1, 0.3, 2.0
    before = {v.path: v.numpy().copy() for v in student.trainable_variables}
    kd = KnowledgeDistillationLoss(temperature)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    t_logits = keras.ops.convert_to_numpy(teacher(x))
    # The hand-written step: the gradient of the combined loss, one SGD
    # update (computed before the distiller touches the student).
    backend = keras.backend.backend()
    variables = student.trainable_variables

    def total(logits):
        return weight * ce(y, logits) + (1 - weight) * keras.ops.mean(
            kd(t_logits, logits)
        )

    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = total(student(x))
        grads = tape.gradient(loss, variables)
    elif backend == "torch":
        import torch

        grads = torch.autograd.grad(
            total(student(x)), [v.value for v in variables]
        )
    else:
        import jax

        def f(values):
            out, _ = student.stateless_call(values, [], x)
            return total(out)

        grads = jax.grad(f)([v.value for v in variables])
    want = {
        v.path: before[v.path] - lr * keras.ops.convert_to_numpy(g)
        for v, g in zip(variables, grads)
    }
    distiller = make_distiller(teacher, student, temperature, weight)
    distiller.compile(optimizer=keras.optimizers.SGD(lr), loss=ce)
    distiller.train_on_batch(x, y)
    for v in student.trainable_variables:
        np.testing.assert_allclose(v.numpy(), want[v.path], atol=2e-5)
    teacher_after = _model(0)
    for a, b in zip(teacher.weights, teacher_after.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_distill_lowers_the_kd_loss():
    teacher = _model(0)
    x, y = _data(n=32)
    student = compress(teacher, x, ffn_ratio=0.5, head_ratio=0.5,
                       hidden_ratio=0.5)  # fmt: skip
    kd = KnowledgeDistillationLoss(2.0)

    def gap():
        return float(keras.ops.mean(kd(teacher(x), student(x))))

    start = gap()
    distill(teacher, student, (x, y), epochs=8, batch_size=8,
            optimizer=keras.optimizers.Adam(1e-2), verbose=0)  # fmt: skip
    assert gap() < 0.7 * start


def test_hidden_state_distillation_trains_through_a_projection():
    teacher = _model(0)
    x, y = _data(n=32)
    student = compress(teacher, x, ffn_ratio=0.5, head_ratio=0.5,
                       hidden_ratio=0.5)  # fmt: skip
    history = distill(
        teacher, student, (x, y), epochs=6, batch_size=8, hidden_weight=1.0,
        student_loss_weight=0.2, optimizer=keras.optimizers.Adam(1e-2),
        verbose=0,
    )  # fmt: skip
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0]
    # The projections are not part of the student.
    assert not any("hidden_projection" in v.path for v in student.weights)


DENSE = keras.layers.Dense(2)
BAD = [
    (lambda m, d: transformer_importance("model", d), "model"),
    (lambda m, d: transformer_importance(m, d, "fisher"), "importance"),
    (lambda m, d: transformer_importance(m, None), "data"),
    (lambda m, d: transformer_importance(m, "text"), "data"),
    (lambda m, d: transformer_importance(m, d, batch_size=0), "batch_size"),
    (lambda m, d: transformer_importance(m, d, num_batches=0), "num_batches"),
    (lambda m, d: transformer_importance(m, d[0], "taylor"), "data"),
    (lambda m, d: transformer_importance(m, (d[0], d[1][:3])), "data"),
    (lambda m, d: compress(keras.Sequential([DENSE]), d), "model"),
    (lambda m, d: compress(m, d), "ffn_ratio"),
    (lambda m, d: compress(m, d, ffn_ratio=1.5), "ffn_ratio"),
    (lambda m, d: compress(m, d, head_ratio=1.0), "head_ratio"),
    (lambda m, d: compress(m, d, ffn_ratio=0.5, uniform=None), "uniform"),
    (lambda m, d: compress(m, d, params=0), "params"),
    (lambda m, d: compress(m, d, params=1.5), "params"),
    (lambda m, d: compress(m, d, params=0.01), "params"),
    (lambda m, d: compress(m, d, ffn_ratio=0.5, params=0.5), "params"),
    (lambda m, d: distill("t", m, d), "teacher"),
    (lambda m, d: distill(m, None, d), "student"),
    (lambda m, d: distill(m, m, d), "student"),
    (lambda m, d: distill(m, _model(1), d[0]), "data"),
    (lambda m, d: distill(m, _model(1), d, epochs=0), "epochs"),
    (lambda m, d: distill(m, _model(1), d, batch_size=-1), "batch_size"),
    (lambda m, d: distill(m, _model(1), d, temperature=0), "temperature"),
    (lambda m, d: distill(m, _model(1), d, student_loss_weight=2),
     "student_loss"),
    (lambda m, d: distill(m, _model(1), d, hidden_weight=-1), "hidden_weight"),
]  # fmt: skip


@pytest.mark.parametrize("call, name", BAD, ids=[n for _, n in BAD])
def test_bad_arguments_are_named(call, name):
    model = _model()
    with pytest.raises(ValueError, match=f"`{name}"):
        call(model, _data(n=4))


@pytest.mark.slow
def test_taylor_importance_on_keras_hub_llama():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=VOCAB, num_layers=2, hidden_dim=16,
        intermediate_dim=32, num_query_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    model = keras_hub.models.LlamaCausalLM(backbone, preprocessor=None)
    ids, y = _data(n=4)
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    scores = transformer_importance(model, (x, y), "taylor", batch_size=2)
    assert [len(s) for s in scores["heads"]] == [2, 2]  # key / value groups
    assert all(np.all(s > 0) for s in scores["ffn"])
    small = compress(model, (x, y), ffn_ratio=0.5, importance="taylor")
    assert small.backbone.intermediate_dim == 16
