"""Active distillation: which teacher queries help a student most?

Run it with any backend (a full run: 16.4 min on a 2-core CPU with JAX):

    KERAS_BACKEND=jax python examples/active_distillation.py

The setting: a teacher is expensive to query, so the student may ask it
about only `budget` of the 45,000 unlabeled MNIST-1D sequences. The
`ActiveDistillation` callback spends that budget in rounds: each round it
scores the not-yet-queried pool with the current student, picks
`queries_per_round` points with a selection strategy, asks the teacher for
its class probabilities on those points only and adds them to the data
`fit` trains on.

The teacher here is deliberately noisy: a small CNN trained on only 1,000
labels, right on about 3 of 4 pool points. That is where strategies differ:
`margin` and `entropy` spend the budget on the points the student is least
sure of, which are also the ones the teacher most often gets wrong;
`robust` (after Robust Active Distillation, ICLR 2023) keeps the informative
direction but spreads its picks so that the teacher's mistakes (their
number estimated from a 500-example validation set) cost as little as
possible; `coreset` covers the student's embedding space; `uniform` is
the baseline; `sleeping_experts` learns across rounds which points pay.

Every strategy trains the same student, from the same initial weights, for
the same number of steps; only the queried points differ. The script
prints test accuracy against queries for each strategy and saves the
curves to `examples/output/active_distillation.png`.
"""

import logging
import os
import sys
import time

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

from keras_efficient.callbacks import ActiveDistillation  # noqa: E402
from keras_efficient.datasets import load_mnist1d_splits  # noqa: E402

STRATEGIES = (
    "uniform",
    "margin",
    "entropy",
    "coreset",
    "robust",
    "sleeping_experts",
    "badge",
    "bald",
)
OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")


def load(seed, quick=False):
    """MNIST-1D: labeled 2,000 / validation 500 / pool 45,000 / test 5,000."""
    if quick:
        return load_mnist1d_splits(200, 200, 512, 256, seed=seed)
    return load_mnist1d_splits(2000, 500, 45000, 5000, seed=seed)


def build_cnn(width, seed, embedding=32):
    """A small 1-D CNN; the `"embedding"` layer feeds `coreset`."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((40, 1))
    x = keras.layers.Conv1D(width, 5, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv1D(width, 5, strides=2, activation="relu")(x)
    x = keras.layers.Conv1D(width, 3, strides=2, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(embedding, activation="relu", name="embedding")(x)
    outputs = keras.layers.Dense(10)(x)
    return keras.Model(inputs, outputs)


def train_teacher(splits, seed, num_labels=1000, epochs=60):
    """A CNN on the first `num_labels` labels; outputs probabilities."""
    x, y = splits.labeled
    x, y = x[:num_labels], y[:num_labels]
    model = build_cnn(32, seed=1000 + seed)
    model.compile(
        keras.optimizers.Adam(2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    teacher = keras.Sequential([model, keras.layers.Softmax()])

    def accuracy(data):
        probs = teacher.predict(data[0], batch_size=1024, verbose=0)
        return float((probs.argmax(1) == data[1]).mean())

    return teacher, {
        "pool": accuracy(splits.unlabeled),
        "validation": accuracy(splits.validation),
        "test": accuracy(splits.test),
    }


class AccuracyAtRounds(keras.callbacks.Callback):
    """Test accuracy after each round's training, keyed by queries used.

    List it before `ActiveDistillation`: at the last batch of a round's
    last epoch it sees the student trained on the points queried so far,
    before the callback queries the next round.
    """

    def __init__(self, active, test, epochs_per_round):
        super().__init__()
        self.active = active
        self.test = test
        self.epochs_per_round = epochs_per_round
        self.accuracy = {}

    def on_epoch_end(self, epoch, logs=None):
        # Listed before `ActiveDistillation`, so this runs before its round.
        if (epoch + 1) % self.epochs_per_round:
            return
        x, y = self.test
        logits = self.model.predict(x, batch_size=1024, verbose=0)
        acc = float((np.asarray(logits).argmax(1) == y).mean())
        self.accuracy[self.active.queries_used] = acc


def run_strategy(
    strategy,
    splits,
    teacher,
    seed,
    budget,
    queries_per_round,
    epochs_per_round=2,
    batch_size=128,
    width=16,
):
    """Trains a student with `strategy`; returns `{queries: accuracy}`."""
    student = build_cnn(width, seed=seed)
    student.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    active = ActiveDistillation(
        splits.unlabeled[0],
        teacher,
        budget=budget,
        queries_per_round=queries_per_round,
        strategy=strategy,
        epochs_per_round=epochs_per_round,
        validation=splits.validation,
        batch_size=batch_size,
        # Steps per epoch from the final budget: every round trains the
        # same number of steps whatever the strategy.
        steps_per_epoch=-(-budget // batch_size),
        embedding_layer="embedding",
        seed=seed,
    )
    record = AccuracyAtRounds(active, splits.test, epochs_per_round)
    rounds = -(-budget // queries_per_round)
    student.fit(
        active.dataset,
        epochs=rounds * epochs_per_round,
        callbacks=[record, active],
        verbose=0,
    )
    return record.accuracy


def plot(curves, teacher_acc, path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    for name, acc in curves.items():
        q = sorted(acc)
        ax.plot(q, [100 * acc[k] for k in q], marker="o", ms=3, label=name)
    ax.axhline(100 * teacher_acc, color="gray", ls="--", lw=1, label="teacher")
    ax.set_xlabel("teacher queries")
    ax.set_ylabel("student test accuracy (%)")
    ax.set_title("Active distillation on MNIST-1D (noisy teacher)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


def main(seed=0, budget=6000, queries_per_round=500, quick=False):
    splits = load(seed, quick)
    strategies = STRATEGIES
    teacher_epochs, epochs_per_round = 60, 2
    if quick:  # a smoke run: a small pool, budget and teacher, 2 strategies
        budget, queries_per_round, teacher_epochs = 128, 64, 1
        epochs_per_round = 1
        strategies = ("uniform", "robust")
    start = time.perf_counter()
    teacher, teacher_acc = train_teacher(splits, seed, epochs=teacher_epochs)
    labels = min(1000, len(splits.labeled[0]))
    print(
        f"teacher (CNN, {labels:,} labels) accuracy: "
        + ", ".join(f"{k} {100 * v:.1f}%" for k, v in teacher_acc.items())
        + f" ({time.perf_counter() - start:.0f} s)"
    )
    curves = {}
    for strategy in strategies:
        start = time.perf_counter()
        curves[strategy] = run_strategy(
            strategy,
            splits,
            teacher,
            seed,
            budget,
            queries_per_round,
            epochs_per_round=epochs_per_round,
        )
        acc = curves[strategy]
        print(
            f"{strategy:<17} "
            + "  ".join(f"{q}: {100 * a:.1f}%" for q, a in sorted(acc.items()))
            + f"  ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    queries = sorted(curves["uniform"])
    print("\nstudent test accuracy (%) against teacher queries")
    print("strategy          " + "".join(f"{q:>7}" for q in queries))
    for name, acc in curves.items():
        row = "".join(f"{100 * acc[q]:7.1f}" for q in queries)
        print(f"{name:<18}{row}")
    plot(
        curves,
        teacher_acc["test"],
        os.path.join(OUTPUT, "active_distillation.png"),
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run, well under 1 min"
    )
    main(quick=parser.parse_args().quick)
    if "--quick" in sys.argv[1:]:
        print(
            "\n(smoke run, --quick: tiny data and a few steps; the figures "
            "above only show that the script runs, not how the method does)"
        )
