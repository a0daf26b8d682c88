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


def _kd_reference(t, s, T):
    lp, lq = _logsm(t / T), _logsm(s / T)
    return T * T * (np.exp(lp) * (lp - lq)).sum(-1)


def test_defaults_name_and_dtype():
    loss = KnowledgeDistillationLoss()
    assert loss.temperature == 2.0
    assert loss.name == "knowledge_distillation_loss"
    t, s = _data()
    np.testing.assert_allclose(
        to_numpy(KnowledgeDistillationLoss(reduction="none")(t, s)),
        _kd_reference(t, s, 2.0),
        rtol=1e-4,
        atol=1e-5,
    )
    assert KnowledgeDistillationLoss(dtype="float64").dtype == "float64"


def test_sequence_outputs_softmax_over_classes():
    # (batch, time, classes): the softmax runs over the last axis only.
    rng = np.random.default_rng(3)
    t = rng.normal(size=(4, 3, 6)).astype("float32") * 2
    s = rng.normal(size=(4, 3, 6)).astype("float32")
    got = to_numpy(KnowledgeDistillationLoss(3.0, reduction="none")(t, s))
    np.testing.assert_allclose(
        got, _kd_reference(t, s, 3.0), rtol=1e-4, atol=1e-5
    )


def test_half_precision_outputs_computed_in_float32():
    # Mixed-precision teacher and student logits: the loss is computed in
    # float32 from their float16 values.
    t, s = _data()
    t16, s16 = t.astype("float16"), s.astype("float16")
    ref = _kd_reference(t16.astype("float32"), s16.astype("float32"), 4.0)
    got = to_numpy(KnowledgeDistillationLoss(4.0, reduction="none")(t16, s16))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_teacher_probabilities_with_zeros_stay_finite():
    # A class the teacher gives probability 0 contributes 0, not nan.
    t, s = _data()
    p = np.exp(_logsm(t))
    p[:, 0] = 0.0
    p = (p / p.sum(-1, keepdims=True)).astype("float32")
    T = 2.0
    logp = np.log(np.clip(p.astype("float64"), 1e-12, 1.0))
    got = to_numpy(
        KnowledgeDistillationLoss(
            T, teacher_from_logits=False, reduction="none"
        )(p, s)
    )
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(
        got, _kd_reference(logp, s, T), rtol=1e-4, atol=1e-5
    )


def test_error_messages_name_argument_and_value():
    with pytest.raises(
        ValueError, match=r"^`temperature` must .*Received: temperature=0"
    ):
        KnowledgeDistillationLoss(0.0)
    with pytest.raises(
        ValueError,
        match=r"^`from_logits` must be True \(a temperature needs logits\)\. "
        r"Received: from_logits=False$",
    ):
        KnowledgeDistillationLoss(from_logits=False)
