"""Data pruning with distillation: random subsets and a * CE + (1 - a) * KD.

Run it with any backend (a full run: 20.6 min on a 2-core CPU with JAX):

    KERAS_BACKEND=jax python examples/data_pruning_kd.py

(On a busy machine with few cores, run torch with `OMP_NUM_THREADS=1`: its
OpenMP threads otherwise spin against the other processes and a step can
take 20x longer.)

"Distilling the knowledge in data pruning" (Ben-Baruch et al., 2024) finds
that when a student is trained on a *random* fraction of the data with a
teacher trained on all of it, the loss

    loss = a * CE(y, s) + (1 - a) * KD(t, s)

(CE on the true label y, KD against the teacher's logits t, s the student's
logits) recovers most of the accuracy lost by pruning, and that the best
weight of the KD term grows as the kept fraction shrinks: with few examples
the teacher's soft labels carry more information per example than the
one-hot labels do.

This tutorial reproduces the study on MNIST-1D (offline):

1. a CNN teacher (width 64) trained on the full training set of 8,000
   examples;
2. for each kept fraction (5% to 100%, a seeded random subset) and each
   a in {0, 0.25, 0.5, 0.75, 1}, a student (the same CNN at width 32) trained
   from the same initialisation for the same number of steps (so smaller
   subsets are seen for more epochs, and no run gets more compute than
   another); KD is `KnowledgeDistillationLoss(temperature=4)`, i.e.
   T^2 KL(softmax(t/T) || softmax(s/T));
3. a table of test accuracy per (fraction, a), averaged over two seeds, the
   best a per fraction, and a plot `examples/output/data_pruning_kd.png`.

a = 1 is plain training on the random subset (the pruning baseline); a = 0
is pure distillation on it.
"""

import logging
import os
import sys

# Examples only: quiet TensorFlow's and XLA's logs. Keras loads TensorFlow
# whenever it is installed (set_random_seed seeds it on every backend); a
# few C++ lines come before any log setting is read, so stderr is muted
# while it loads, and its Python logger only reports errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
logging.getLogger("tensorflow").setLevel(logging.ERROR)
_stderr = os.dup(2)
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
try:
    import keras  # noqa: E402

    keras.utils.set_random_seed(0)
finally:
    os.dup2(_stderr, 2)

import numpy as np  # noqa: E402
from keras import layers  # noqa: E402
from keras import ops  # noqa: E402

from keras_efficient.datasets import load_mnist1d  # noqa: E402
from keras_efficient.losses import KnowledgeDistillationLoss  # noqa: E402

NUM_CLASSES = 10
# --quick: a smoke run (CI runs every example this way on every backend).
QUICK = "--quick" in sys.argv[1:]
FRACTIONS = (0.1, 1.0) if QUICK else (0.05, 0.1, 0.25, 0.5, 1.0)
# a, the weight of the CE term
WEIGHTS = (0.0, 1.0) if QUICK else (0.0, 0.25, 0.5, 0.75, 1.0)
SEEDS = (0,) if QUICK else (0, 1)
STEPS = 5 if QUICK else 500
BATCH_SIZE = 64
TEMPERATURE = 4.0
JIT = keras.backend.backend() != "torch"
OUTPUT_DIR = os.path.join(os.path.dirname(__file__), "output")


class CEPlusKD(keras.losses.Loss):
    """`a * CE(y, s) + (1 - a) * KD(t, s)` in one Keras loss.

    `y_true` packs both targets: the one-hot true label followed by the
    teacher's logits, shape `(batch, 2 * num_classes)`. `y_pred` is the
    student's logits.

    Args:
        a: weight of the cross-entropy term, in [0, 1].
        temperature: temperature of the KD term.
        num_classes: number of classes.
    """

    def __init__(self, a, temperature=4.0, num_classes=10, **kwargs):
        super().__init__(**kwargs)
        self.a = float(a)
        self.num_classes = num_classes
        self.kd = KnowledgeDistillationLoss(
            temperature=temperature, reduction=None
        )

    def call(self, y_true, y_pred):
        one_hot = y_true[..., : self.num_classes]
        teacher_logits = y_true[..., self.num_classes :]
        log_q = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        ce = -ops.sum(one_hot * log_q, axis=-1)
        kd = self.kd(teacher_logits, y_pred)
        return self.a * ce + (1.0 - self.a) * kd


def build_cnn(width, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((40, 1)),
            layers.Conv1D(width, 5, padding="same", activation="relu"),
            layers.Conv1D(width, 5, padding="same", activation="relu"),
            layers.MaxPooling1D(2),
            layers.Conv1D(width, 5, padding="same", activation="relu"),
            layers.GlobalMaxPooling1D(),
            layers.Dense(NUM_CLASSES),
        ]
    )


def train(model, x, y, loss, seed, steps=STEPS):
    """Trains for (about) `steps` steps whatever the size of `x`."""
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3), loss=loss, jit_compile=JIT
    )
    steps_per_epoch = int(np.ceil(len(x) / BATCH_SIZE))
    epochs = max(1, int(round(steps / steps_per_epoch)))
    keras.utils.set_random_seed(seed)
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
    return model


def test_accuracy(model, x, y):
    logits = model.predict(x, batch_size=1024, verbose=0)
    return float((np.argmax(logits, axis=-1) == y).mean())


def main():
    (x_train, y_train), (x_test, y_test) = load_mnist1d(
        num_train=500 if QUICK else 8000,
        num_test=250 if QUICK else 2000,
        seed=0,
    )
    print(f"backend: {keras.backend.backend()}")
    teacher = train(
        build_cnn(64, 100),
        x_train,
        y_train,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        seed=100,
        steps=10 if QUICK else 2000,
    )
    teacher_logits = np.asarray(teacher.predict(x_train, verbose=0))
    print(f"teacher test accuracy {test_accuracy(teacher, x_test, y_test):.4f}")
    targets = np.concatenate(
        [np.eye(NUM_CLASSES, dtype="float32")[y_train], teacher_logits], -1
    )

    acc = np.zeros((len(SEEDS), len(FRACTIONS), len(WEIGHTS)))
    for s, seed in enumerate(SEEDS):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(x_train))
        for i, fraction in enumerate(FRACTIONS):
            keep = order[: int(round(fraction * len(x_train)))]
            for j, a in enumerate(WEIGHTS):
                student = train(
                    build_cnn(32, seed),
                    x_train[keep],
                    targets[keep],
                    CEPlusKD(a, TEMPERATURE),
                    seed,
                )
                acc[s, i, j] = test_accuracy(student, x_test, y_test)
            row = " ".join(f"{v:.3f}" for v in acc[s, i])
            print(f"seed {seed} fraction {fraction:<5} {row}", flush=True)

    mean = acc.mean(axis=0)
    print(f"\ntest accuracy, mean over seeds {SEEDS} ({STEPS} steps each)")
    print("fraction  " + "  ".join(f"a={a:<5}" for a in WEIGHTS) + "  best a")
    best = []
    for i, fraction in enumerate(FRACTIONS):
        j = int(np.argmax(mean[i]))
        best.append(WEIGHTS[j])
        cells = "  ".join(f"{v:.4f} " for v in mean[i])
        print(f"{fraction:<8}  {cells}  {WEIGHTS[j]}")
    print(
        "a = 1 is plain training on the random subset; the gain of the best "
        "a over it per fraction: "
        + ", ".join(
            f"{f}: {mean[i].max() - mean[i, -1]:+.4f}"
            for i, f in enumerate(FRACTIONS)
        )
    )

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(install matplotlib for the plot)")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for i, fraction in enumerate(FRACTIONS):
        left.plot(WEIGHTS, mean[i], "o-", label=f"{fraction:.0%} of data")
    left.set_xlabel("a (weight of CE; 1 - a on KD)")
    left.set_ylabel("test accuracy")
    left.legend(fontsize=8)
    right.plot(FRACTIONS, best, "s-")
    right.set_xscale("log")
    right.set_xlabel("kept fraction of the training data")
    right.set_ylabel("best a")
    right.set_ylim(-0.05, 1.05)
    fig.tight_layout()
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    path = os.path.join(OUTPUT_DIR, "data_pruning_kd.png")
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
    if "--quick" in sys.argv[1:]:
        print(
            "\n(smoke run, --quick: tiny data and a few steps; the figures "
            "above only show that the script runs, not how the method does)"
        )
