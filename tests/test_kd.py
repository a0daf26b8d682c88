import keras
import numpy as np
import pytest

from keras_efficient.losses import KnowledgeDistillationLoss
from tests.harness import run_loss_test
from tests.harness import to_numpy


def _data(n=16, c=5, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, c)).astype("float32") * 2,
        rng.normal(size=(n, c)).astype("float32"),
    )


def _logsm(x):
    x = x.astype("float64")
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_matches_reference(T):
    t, s = _data()
    lp, lq = _logsm(t / T), _logsm(s / T)
    ref = T * T * (np.exp(lp) * (lp - lq)).sum(-1)
    got = to_numpy(KnowledgeDistillationLoss(T, reduction="none")(t, s))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # Teacher probabilities give the same loss.
    p = np.exp(_logsm(t)).astype("float32")
    got2 = to_numpy(
        KnowledgeDistillationLoss(
            T, teacher_from_logits=False, reduction="none"
        )(p, s)
    )
    np.testing.assert_allclose(got2, ref, rtol=1e-3, atol=1e-4)


def test_difference_from_keras_logits_distillation_default():
    t, s = _data()
    T = 3.0
    ours = float(to_numpy(KnowledgeDistillationLoss(T)(t, s)))
    lp, lq = _logsm(t / T), _logsm(s / T)
    np.testing.assert_allclose(
        ours, (T * T * (np.exp(lp) * (lp - lq)).sum(-1)).mean(), rtol=1e-4
    )
    # Keras's default string loss: kl_divergence on the scaled LOGITS
    # (clipped to [eps, 1]), no softmax, no T^2.
    kd = keras.distillation.LogitsDistillation(temperature=T)
    theirs = float(to_numpy(kd.compute_loss(t, s)))
    a = np.clip(t / T, 1e-7, 1)
    b = np.clip(s / T, 1e-7, 1)
    np.testing.assert_allclose(
        theirs, (a * np.log(a / b)).sum(-1).mean(), rtol=1e-4, atol=1e-6
    )
    assert abs(theirs - ours) > 0.1
    # With a KLDivergence instance Keras applies softmax and T^2: ours.
    kd2 = keras.distillation.LogitsDistillation(
        temperature=T, loss=keras.losses.KLDivergence()
    )
    np.testing.assert_allclose(
        float(to_numpy(kd2.compute_loss(t, s))), ours, rtol=1e-4
    )


def test_harness():
    t, s = _data()
    run_loss_test(lambda **kw: KnowledgeDistillationLoss(2.0, **kw), t, s)


def test_errors():
    with pytest.raises(ValueError, match="temperature"):
        KnowledgeDistillationLoss(0.0)
    with pytest.raises(ValueError, match="from_logits"):
        KnowledgeDistillationLoss(from_logits=False)
