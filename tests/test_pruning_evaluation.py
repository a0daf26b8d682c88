"""Evaluation beyond test accuracy against a NumPy transcription of the
Lost in Pruning authors' formulas (torchprune `paper/lost/script/
eps_ball.py`: `get_softmax_norm_diff`, `get_accuracy`, `get_overlap`,
`get_commensurate_pr`)."""

import inspect

import keras
import numpy as np
import pytest

from keras_efficient.pruning import compare_to_dense
from keras_efficient.pruning import noisy_accuracy
from keras_efficient.pruning import noisy_prune_potential
from keras_efficient.pruning import prune_potential

EPS = (0.0, 0.3, 1.0)
DRAWS = 20


def _models():
    keras.utils.set_random_seed(0)
    dense = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(4),
        ]
    )
    pruned = {}
    for sparsity in (0.3, 0.6, 0.9):
        model = keras.models.clone_model(dense)
        weights = []
        for w in dense.get_weights():
            cut = np.quantile(np.abs(w), sparsity) if w.ndim > 1 else -1
            weights.append(np.where(np.abs(w) > cut, w, 0).astype(w.dtype))
        model.set_weights(weights)
        pruned[sparsity] = model
    return dense, pruned


def _data():
    x = np.random.default_rng(0).normal(size=(40, 6)).astype("float32")
    return x


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _samples(models, x, seed=0):
    """Logits `(num_f, num_eps, num_images, num_samples, classes)`, noise
    as the authors write it, `x + 2 * eps * (u - 0.5)`, with our draws of
    `u` (documented: `default_rng(seed).random((draws, *x.shape))`)."""
    out = np.zeros((len(models), len(EPS), len(x), DRAWS, 4))
    for j, eps in enumerate(EPS):
        u = np.random.default_rng(seed).random(
            (DRAWS,) + x.shape, dtype="float32"
        )
        noisy = (x + 2 * np.float32(eps) * (u - 0.5)).reshape(-1, 6)
        for i, model in enumerate(models):
            z = keras.ops.convert_to_numpy(model(noisy)).reshape(
                DRAWS, len(x), 4
            )
            out[i, j] = np.swapaxes(z, 0, 1)
    return out


def _std_mean(a, axis):
    return a.std(axis=axis, ddof=1), a.mean(axis=axis)


def _authors_stats(samples, samples_ref, labels):
    diff = np.linalg.norm(
        _softmax(samples) - _softmax(samples_ref), axis=-1
    )  # (f, eps, images, samples)
    sm_l2 = _std_mean(diff.mean(axis=2), axis=2)
    match = samples.argmax(-1) == labels[:, None]
    accuracy = _std_mean(match.mean(axis=2), axis=-1)
    top_ref = samples_ref.argmax(-1)
    overlap = _std_mean((samples.argmax(-1) == top_ref).mean(axis=2), -1)
    return sm_l2, accuracy, overlap


def _authors_commensurate(samples, samples_ref, labels, prs):
    acc = (samples.argmax(-1) == labels[:, None]).mean(axis=2)
    acc_ref = (samples_ref.argmax(-1) == labels[:, None]).mean(axis=2)
    gain = acc - acc_ref  # (num_prs, num_eps, num_samples)
    level = np.zeros_like(acc[0])
    for i, pr in enumerate(prs):
        update = (gain[i] + 0.005 > 0.0) & (level < pr)
        level[update] = pr
    mean = level.mean(axis=-1, keepdims=True)
    dev = np.sort(np.abs(level - mean), axis=-1)
    mad = dev[..., (dev.shape[-1] - 1) // 2]  # torch.median: lower middle
    return mean[..., 0], level.std(axis=-1, ddof=1), mad


def test_compare_to_dense_equals_authors_formulas_at_every_level():
    dense, pruned = _models()
    x = _data()
    y = keras.ops.convert_to_numpy(dense(x)).argmax(-1)
    y[::3] = (y[::3] + 1) % 4  # dense accuracy about 2/3, not 1
    model = pruned[0.6]
    stats = compare_to_dense(dense, model, x, y, eps=EPS, draws=DRAWS)
    samples = _samples([dense, model], x)
    sm_l2, accuracy, overlap = _authors_stats(samples[1:], samples[:1], y)
    dense_acc = _authors_stats(samples[:1], samples[:1], y)[1]
    assert stats["noise"][1]["softmax_l2"] > 0.01  # not trivially equal
    for j, row in enumerate(stats["noise"]):
        assert row["eps"] == EPS[j]
        for name, (std, mean) in (
            ("softmax_l2", sm_l2),
            ("pruned_accuracy", accuracy),
            ("top1_agreement", overlap),
            ("dense_accuracy", dense_acc),
        ):
            assert row[name] == pytest.approx(mean[0, j], abs=1e-6), name
            assert row[f"{name}_std"] == pytest.approx(std[0, j], abs=1e-6)
        assert row["pruned_accuracy_draws"].shape == (DRAWS,)
    # Noise changes the distance: the levels are measured, not copied.
    assert stats["noise"][2]["softmax_l2"] != stats["noise"][0]["softmax_l2"]
    clean = stats["noise"][0]
    assert stats["softmax_l2"] == pytest.approx(clean["softmax_l2"], 1e-12)
    assert clean["softmax_l2_std"] == pytest.approx(0.0, abs=1e-12)


def test_noisy_prune_potential_per_draw_equals_authors():
    dense, pruned = _models()
    x = _data()
    y = keras.ops.convert_to_numpy(dense(x)).argmax(-1)
    y[::4] = (y[::4] + 1) % 4
    results = [
        (s, compare_to_dense(dense, m, x, y, eps=EPS, draws=DRAWS))
        for s, m in pruned.items()
    ]
    got = noisy_prune_potential(results)
    samples = _samples([dense, *pruned.values()], x)
    mean, std, mad = _authors_commensurate(
        samples[1:], samples[:1], y, list(pruned)
    )
    assert [row["eps"] for row in got] == list(EPS)
    for j, row in enumerate(got):
        assert row["prune_potential"] == pytest.approx(mean[j], abs=1e-9)
        assert row["prune_potential_std"] == pytest.approx(std[j], abs=1e-9)
        assert row["prune_potential_mad"] == pytest.approx(mad[j], abs=1e-9)
    # Per draw, not on averaged accuracies: the draws disagree somewhere.
    assert any(np.unique(row["draws"]).size > 1 for row in got[1:])
    with pytest.raises(ValueError, match="same noise"):
        other = compare_to_dense(dense, pruned[0.3], x, y, EPS, DRAWS, seed=1)
        noisy_prune_potential(results + [(0.95, other)])


def test_draws_are_batched_and_default_to_100():
    for fn in (compare_to_dense, noisy_accuracy):
        assert inspect.signature(fn).parameters["draws"].default == 100
    dense, pruned = _models()
    x = _data()
    y = np.zeros(len(x), "int64")
    calls = []
    for model in (dense, pruned[0.3]):
        predict = model.predict

        def counted(data, *args, predict=predict, **kwargs):
            calls.append(len(data))
            return predict(data, *args, **kwargs)

        model.predict = counted
    compare_to_dense(dense, pruned[0.3], x, y, eps=(0.0, 0.5), draws=100)
    # Clean once per model, then one call per model for all 100 draws.
    assert calls == [40, 40, 4000, 4000]
    calls.clear()
    acc = noisy_accuracy(dense, x, y, 0.5, draws=100)
    assert calls == [4000]
    stats = compare_to_dense(dense, dense, x, y, eps=(0.5,), draws=100)
    assert acc == pytest.approx(stats["noise"][0]["dense_accuracy"], 1e-12)


def test_compare_identical_models():
    dense, pruned = _models()
    x = _data()
    y = keras.ops.convert_to_numpy(dense(x)).argmax(-1)
    stats = compare_to_dense(dense, dense, x, y, eps=(0.0, 5.0), draws=3)
    assert stats["top1_agreement"] == 1.0 and stats["dense_accuracy"] == 1.0
    assert stats["softmax_l2"] == pytest.approx(0.0, abs=1e-6)
    assert stats["noise"][1]["top1_agreement"] == 1.0
    assert stats["noise"][1]["pruned_accuracy"] < 1.0


def test_prune_potential():
    res = [(0.5, 0.90), (0.8, 0.896), (0.9, 0.85), (0.95, 0.2)]
    assert prune_potential(0.90, res) == 0.8
    assert prune_potential(0.90, res, delta=0.06) == 0.9
    assert prune_potential(0.99, res) == 0.0
    # Any iterable of pairs (a zip was consumed by the check before).
    assert prune_potential(0.90, zip([0.5, 0.8], [0.9, 0.896])) == 0.8
    # Strict, as the authors: a drop of exactly delta does not qualify.
    assert prune_potential(0.5, [(0.7, 0.25)], delta=0.25) == 0.0
    # The largest qualifying sparsity counts, even past a failing one.
    assert prune_potential(0.9, [(0.5, 0.8), (0.7, 0.9)]) == 0.7
