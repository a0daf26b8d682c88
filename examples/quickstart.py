"""Quick start: a small ResNet and its LAuReL twin on handwritten digits.

Run it with any backend (a full run: 90 s on a 2-core CPU with JAX):

    KERAS_BACKEND=jax python examples/quickstart.py

It trains a small plain ResNet and the same network with LAuReL residual
connections (`laurel="rw+lr"`: a learned weight on each branch plus a
low-rank map of the shortcut) from the same seed, on the same data for the
same number of steps, then prints test accuracy, parameter count and
training step time side by side. The step times come from the two
trained models taking turns, epoch by epoch, for `TIMING_ROUNDS` rounds
(so a busy machine slows both alike); the ratio printed is the median of
the per-round ratios with its IQR, next to the share of extra FLOPs LAuReL
adds (~2%). Three runs in a row on a quiet 2-core CPU gave 1.073, 1.089
and 1.082 on JAX, 1.111, 1.109 and 1.113 on torch, 1.127, 1.126 and 1.109
on TensorFlow: within 0.012 of each backend's mean, but read the IQR
before the second decimal.

The data is scikit-learn's 8x8 handwritten digits (1,500 train / 297 test
images): it is real image data, ships with scikit-learn (no download), and
a CNN learns it in seconds, which keeps this script short on any
backend. MNIST-1D would need reshaping into a
fake 2D image for a 2D ResNet.
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

from keras_efficient.applications import ResNet  # noqa: E402
from keras_efficient.datasets import load_digits  # noqa: E402
from keras_efficient.pruning.cost import model_cost  # noqa: E402

SEED = 0
# --quick: a smoke run (CI runs every example this way on every backend).
QUICK = "--quick" in sys.argv[1:]
EPOCHS = 2 if QUICK else 12
BATCH_SIZE = 64
# --quick trains on the first 256 training images only (4 steps an epoch).
TRAIN_SIZE = 256 if QUICK else None
# Timed rounds after training: each round one epoch of each model, in
# alternating order (24 steps an epoch on the full data).
TIMING_ROUNDS = 3 if QUICK else 31


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every training epoch (inside `fit`, so
    not its setup)."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def build(laurel):
    # A small CIFAR-style ResNet: two stages of two basic blocks (16 and 32
    # filters). `laurel=None` gives plain `x + f(x)` residual adds;
    # `laurel="rw+lr"` replaces every one of them by a LaurelResidual.
    keras.utils.set_random_seed(SEED)
    return ResNet(
        stack_sizes=[2, 2],
        filters=[16, 32],
        input_shape=(8, 8, 1),
        classes=10,
        laurel=laurel,
        laurel_rank=4,
        name=f"resnet_{laurel or 'plain'}",
    )


def train_and_evaluate(laurel, data):
    (x_train, y_train), (x_test, y_test) = data
    model = build(laurel)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        # XLA on JAX and TensorFlow; torch runs eagerly.
        jit_compile=keras.backend.backend() != "torch",
    )
    keras.utils.set_random_seed(SEED)  # Same shuffling for both models.
    model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=EPOCHS, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return model, {
        "accuracy": accuracy,
        "params": model.count_params(),
        "flops": model_cost(model)["flops"],
    }


def interleaved_step_times(models, x, y):
    """Milliseconds a train step of each model, and the per-round ratios
    of the second model to the first: the models take turns (ABBA...), one
    epoch each a round, timed inside the epoch (compiled already)."""
    names = list(models)
    steps = int(np.ceil(len(x) / BATCH_SIZE))
    times = {name: [] for name in names}
    for round_index in range(TIMING_ROUNDS):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            timer = EpochTimer()
            models[name].fit(
                x,
                y,
                batch_size=BATCH_SIZE,
                epochs=1,
                callbacks=[timer],
                verbose=0,
                shuffle=False,
            )
            times[name].append(1000 * timer.times[0] / steps)
    ratios = [b / a for a, b in zip(times[names[0]], times[names[1]])]
    return {name: float(np.median(t)) for name, t in times.items()}, ratios


def main():
    start = time.perf_counter()
    (x_train, y_train), test = load_digits(seed=SEED)
    data = (x_train[:TRAIN_SIZE], y_train[:TRAIN_SIZE]), test
    print(
        f"backend={keras.backend.backend()}  train={len(data[0][0])} "
        f"test={len(data[1][0])}  epochs={EPOCHS}  batch={BATCH_SIZE}"
    )
    results, models = {}, {}
    for name, laurel in [("plain ResNet", None), ("LAuReL rw+lr", "rw+lr")]:
        models[name], results[name] = train_and_evaluate(laurel, data)
        print(f"trained {name}")
    step_ms, ratios = interleaved_step_times(models, *data[0])

    plain = results["plain ResNet"]
    print()
    print(f"{'model':<14}{'test acc':>10}{'params':>10}{'step ms':>10}")
    for name, r in results.items():
        print(
            f"{name:<14}{r['accuracy']:>10.4f}{r['params']:>10,}"
            f"{step_ms[name]:>10.2f}"
        )
    laurel = results["LAuReL rw+lr"]
    extra = laurel["params"] - plain["params"]
    low, ratio, high = np.percentile(ratios, [25, 50, 75])
    flop_share = 100 * (laurel["flops"] / plain["flops"] - 1)
    print(
        f"\nLAuReL adds {extra:,} parameters "
        f"(+{100 * extra / plain['params']:.2f}%) and {flop_share:.1f}% "
        f"FLOPs. Step time x{ratio:.3f} (median of {len(ratios)} "
        f"interleaved rounds, IQR {low:.3f}-{high:.3f}): a LAuReL training "
        f"step takes {ratio:.2f} times a plain one here. Above 1 + its "
        "FLOP share is the cost of its extra small ops and memory passes "
        "on a small CPU model; it shrinks as width grows "
        "(benchmarks/overhead.py). One seed on 297 test images: see "
        "benchmarks/laurel.py for accuracy over seeds."
    )
    print(f"total wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
    if "--quick" in sys.argv[1:]:
        print(
            "\n(smoke run, --quick: tiny data and a few steps; the figures "
            "above only show that the script runs, not how the method does)"
        )
