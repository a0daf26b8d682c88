import keras
import numpy as np
import pytest

from keras_efficient.losses import DistillationLossAdapter
from keras_efficient.losses import KnowledgeDistillationLoss
from keras_efficient.losses import SLaMLoss
from tests.harness import to_numpy


def _models():
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    return teacher, student


def test_adapter_equals_loss_and_trains_in_distiller():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(8, 3)).astype("float32")
    s = rng.normal(size=(8, 3)).astype("float32")
    kd = KnowledgeDistillationLoss(3.0)
    ad = DistillationLossAdapter(kd)
    np.testing.assert_allclose(
        to_numpy(ad.compute_loss(t, s)), to_numpy(kd(t, s)), rtol=1e-6
    )
    teacher, student = _models()
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=DistillationLossAdapter(
            SLaMLoss(teacher_from_logits=True)
        ),
        student_loss_weight=0.5,
    )
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 3, 32)
    hist = distiller.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert np.isfinite(hist.history["loss"][-1])


def test_config_roundtrip():
    ad = DistillationLossAdapter(KnowledgeDistillationLoss(4.0))
    ad2 = DistillationLossAdapter.from_config(ad.get_config())
    assert ad2.loss.temperature == 4.0
    with pytest.raises(ValueError, match="loss"):
        DistillationLossAdapter("kl_divergence")


def test_sample_weight_path_via_compile():
    # Distiller's distillation term never sees sample_weight; compiling the
    # student with our loss (teacher logits as y_true) honours it: zero
    # weights leave the weights unchanged.
    teacher, student = _models()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 6)).astype("float32")
    t = to_numpy(teacher(x))
    student.compile(optimizer="sgd", loss=KnowledgeDistillationLoss(2.0))
    before = [to_numpy(w) for w in student.weights]
    student.fit(x, t, sample_weight=np.zeros(16), epochs=1, verbose=0)
    for a, b in zip(before, student.weights):
        np.testing.assert_allclose(a, to_numpy(b))
    student.fit(x, t, sample_weight=np.ones(16), epochs=1, verbose=0)
    assert any(
        not np.allclose(a, to_numpy(b)) for a, b in zip(before, student.weights)
    )
