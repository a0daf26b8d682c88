"""The overhead benchmark's models: each family's methods, the model and
loss of a method at a configuration (`overhead_floor`'s `*_config`), and
its training data.

- `resnet`: `ResNet20` (width_multiplier d/64, 8x8x3 inputs) plain and
  with LAuReL `rw` and `rw+lr`;
- `transformer`: a `TransformerLM` (2 layers, width d, head size 32, FFN
  4d, vocabulary 256) plain, with LAuReL `rw` and `rw+lr`, AltUp K=2 and
  Recycled-AltUp K=2;
- `loss`: an MLP 40 -> d -> d -> 10 trained with soft cross-entropy on
  the teacher's probabilities, `SLaMLoss` or `DebiasedDistillationLoss`;
- `checks`: the same `TransformerLM` with and without its token-id range
  check.
"""

import keras
import numpy as np

from benchmarks.overhead_floor import CLASSES
from benchmarks.overhead_floor import LAYERS
from benchmarks.overhead_floor import MLP_IN
from benchmarks.overhead_floor import RESNET_INPUT
from benchmarks.overhead_floor import VOCAB
from keras_efficient.applications import ResNet20
from keras_efficient.applications import TransformerLM
from keras_efficient.losses import DebiasedDistillationLoss
from keras_efficient.losses import SLaMLoss
from keras_efficient.losses import TeacherAccuracy

FAMILIES = ("resnet", "transformer", "loss", "checks")
# The methods of each family, the baseline first.
METHODS = {
    "resnet": ("plain", "rw", "rw+lr"),
    "transformer": ("plain", "rw", "rw+lr", "altup2", "recycled2"),
    "loss": ("cross_entropy", "slam", "debiased"),
    "checks": ("unchecked", "id_check"),
}


def _teacher_probs(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(CLASSES, 0.3), size=n).astype("float32")


def make_teacher(n, seed=0):
    """Teacher probabilities (n, C) and a fitted TeacherAccuracy."""
    probs = _teacher_probs(n, seed)
    rng = np.random.default_rng(seed + 1)
    val = rng.dirichlet(np.full(CLASSES, 0.3), size=500)
    labels = np.where(rng.random(500) < 0.7, val.argmax(-1), 0)
    return probs, TeacherAccuracy().fit(val, labels)


def make_loss(method, probs=None, estimator=None):
    if method == "slam":
        return SLaMLoss(teacher_accuracy=estimator)
    if method == "debiased":
        return DebiasedDistillationLoss(estimator, pool_teacher_outputs=probs)
    return keras.losses.CategoricalCrossentropy(from_logits=True)


def loss_mlp(d):
    """The `loss` family's model: an MLP 40 -> d -> d -> 10 (logits)."""
    return keras.Sequential(
        [
            keras.Input((MLP_IN,)),
            keras.layers.Dense(d, activation="relu"),
            keras.layers.Dense(d, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )


class UncheckedLM(TransformerLM):
    """`TransformerLM` without its input checks (the baseline of the
    `checks` family)."""

    def call(self, inputs, training=None, mask=None, **kwargs):
        # The functional graph without TransformerLM.call's dtype, length
        # and id-range checks.
        return super(TransformerLM, self).call(
            inputs, training=training, mask=mask, **kwargs
        )


def build(family, method, cfg, teacher=None):
    """The uncompiled model and its loss for one family / method / width;
    `teacher`: the `make_teacher` pair of the `loss` family."""
    keras.utils.set_random_seed(0)
    d = cfg["width"]
    sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    laurel = None if method in ("plain", "altup2", "recycled2") else method
    if family == "resnet":
        model = ResNet20(
            input_shape=(RESNET_INPUT, RESNET_INPUT, 3),
            laurel=laurel,
            laurel_rank=cfg["rank"],
            width_multiplier=d / 64,
            classifier_activation=None,
        )
        return model, sparse
    if family == "checks":
        cls = TransformerLM if method == "id_check" else UncheckedLM
        model = cls(
            vocabulary_size=VOCAB,
            sequence_length=cfg["seq"],
            hidden_dim=d,
            num_layers=LAYERS,
            num_heads=cfg["heads"],
        )
        return model, sparse
    if family == "transformer":
        model = TransformerLM(
            vocabulary_size=VOCAB,
            sequence_length=cfg["seq"],
            hidden_dim=d,
            num_layers=LAYERS,
            num_heads=cfg["heads"],
            altup=2 if method in ("altup2", "recycled2") else 1,
            recycled=method == "recycled2",
            laurel=laurel,
            laurel_rank=cfg["rank"],
        )
        return model, sparse
    model = loss_mlp(d)
    probs, estimator = teacher or make_teacher(1024)
    return model, make_loss(method, probs, estimator)


def make_data(family, cfg, n, seed=0):
    """`n` training examples `(x, y)` of a family at `cfg`."""
    rng = np.random.default_rng(seed)
    if family == "resnet":
        x = rng.normal(size=(n, RESNET_INPUT, RESNET_INPUT, 3))
        return x.astype("float32"), rng.integers(0, CLASSES, n)
    if family in ("transformer", "checks"):
        ids = rng.integers(0, VOCAB, (n, cfg["seq"] + 1)).astype("int32")
        return ids[:, :-1], ids[:, 1:]
    x = rng.normal(size=(n, MLP_IN)).astype("float32")
    return x, _teacher_probs(n, seed + 2)
