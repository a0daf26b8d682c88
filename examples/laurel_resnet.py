"""Tutorial: LAuReL residual connections in a ResNet.

A residual block computes `x + f(x)`. LAuReL (Learned Augmented Residual
Layer, Menghani et al., ICML 2025) generalises that add at almost no cost:

- RW (residual weights): `alpha * f(x) + beta * x` with two learned scalars
  (`2 softmax(theta)`), 2 parameters per block;
- LR (low rank): `f(x) + x + B(A x)` with a rank-r map over the channels,
  `2 * channels * r` parameters per block; B starts at zero, so the block is
  the plain residual at initialization;
- PA (previous activations): also mixes the inputs of the previous blocks
  (here through low-rank maps, as in "rw+lr+pa").

`keras_efficient.applications.ResNet*` switch this on with one argument,
`laurel=...`. This script trains four twins of one small ResNet on
scikit-learn's 8x8 digits (offline) from the same seed, for the same steps:

    plain     x + f(x)
    rw        RW
    rw+lr     RW and LR
    rw+lr+pa  RW, LR and PA

and prints a table (test accuracy, parameters, step time) and saves the
learning curves to `examples/output/laurel_resnet.png`.

    KERAS_BACKEND=jax python examples/laurel_resnet.py

One seed on 297 test images is noisy: `benchmarks/laurel.py` averages over
seeds.
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
from keras_efficient.layers.laurel import LaurelResidual  # noqa: E402

SEED = 0
# --quick: a smoke run (CI runs every example this way on every backend).
QUICK = "--quick" in sys.argv[1:]
EPOCHS = 2 if QUICK else 15
BATCH_SIZE = 64
# --quick: 256 training images (4 steps an epoch) and two variants (rw and
# rw+lr run parts of the rw+lr+pa code path).
TRAIN_SIZE = 256 if QUICK else None
VARIANTS = ["plain", "rw+lr+pa"] if QUICK else [
    "plain", "rw", "rw+lr", "rw+lr+pa"
]  # fmt: skip
OUTPUT_DIR = os.path.join(os.path.dirname(__file__), "output")


def build(variant):
    # Step 1: build the network. `ResNet` is the generic builder behind
    # ResNet20 / ResNet56 / ResNet18 / ResNet50. Two stages of two basic
    # blocks (16 and 32 filters) are plenty for 8x8 digits; the second
    # stage halves the resolution to 4x4. `laurel=None` keeps the plain add;
    # anything else replaces every block's add by a LaurelResidual called as
    # `residual(shortcut, branch)`.
    keras.utils.set_random_seed(SEED)
    return ResNet(
        stack_sizes=[2, 2],
        filters=[16, 32],
        input_shape=(8, 8, 1),
        classes=10,
        laurel=None if variant == "plain" else variant,
        laurel_rank=4,
        name=f"resnet_{variant.replace('+', '_')}",
    )


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def train(variant, data):
    (x_train, y_train), (x_test, y_test) = data
    model = build(variant)
    # Step 2: the LAuReL layers are ordinary Keras layers in the model:
    # count what they add.
    residuals = [
        layer for layer in model.layers if isinstance(layer, LaurelResidual)
    ]
    laurel_params = sum(layer.count_params() for layer in residuals)

    # Step 3: train exactly like any Keras model. XLA compiles the step on
    # JAX and TensorFlow; torch runs eagerly.
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=keras.backend.backend() != "torch",
    )
    timer = EpochTimer()
    keras.utils.set_random_seed(SEED)  # Same batches for every variant.
    history = model.fit(
        x_train,
        y_train,
        batch_size=BATCH_SIZE,
        epochs=EPOCHS,
        validation_data=(x_test, y_test),
        callbacks=[timer],
        verbose=0,
    )
    steps = int(np.ceil(len(x_train) / BATCH_SIZE))
    return {
        "history": history.history,
        "accuracy": history.history["val_accuracy"][-1],
        "params": model.count_params(),
        "laurel_params": laurel_params,
        # Epoch 1 includes compilation; the median of the others is fair.
        "step_ms": 1000 * float(np.median(timer.times[1:])) / steps,
        "model": model,
    }


def check_identity_at_init():
    # LAuReL starts as the plain residual: copy the plain twin's weights
    # into an untrained rw+lr+pa net and both give the same outputs.
    plain, laurel = build("plain"), build("rw+lr+pa")
    for layer in plain.layers:
        if layer.get_weights():
            laurel.get_layer(layer.name).set_weights(layer.get_weights())
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("float32")
    gap = np.abs(plain.predict(x, verbose=0) - laurel.predict(x, verbose=0))
    print(f"identity at init: max |plain - rw+lr+pa| = {gap.max():.2e}")


def plot(results):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for variant, r in results.items():
        epochs = np.arange(1, EPOCHS + 1)
        ax_loss.plot(epochs, r["history"]["loss"], label=variant)
        ax_acc.plot(epochs, r["history"]["val_accuracy"], label=variant)
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", ylim=(0.8, 1.0))
    ax_acc.legend()
    fig.suptitle(f"LAuReL ResNet on digits ({keras.backend.backend()})")
    fig.tight_layout()
    path = os.path.join(OUTPUT_DIR, "laurel_resnet.png")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


def main():
    (x_train, y_train), test = load_digits(seed=SEED)
    data = (x_train[:TRAIN_SIZE], y_train[:TRAIN_SIZE]), test
    check_identity_at_init()
    results = {}
    for variant in VARIANTS:
        results[variant] = train(variant, data)
        print(f"trained {variant}: {results[variant]['accuracy']:.4f}")

    # Step 4: what did RW learn? (alpha, beta) = 2 softmax(theta) per block:
    # both 1 at init (the plain add); training moves weight between the
    # branch f(x) (alpha) and the shortcut x (beta). (--quick: the RW part
    # of rw+lr+pa.)
    model = results["rw" if "rw" in results else "rw+lr+pa"]["model"]
    for layer in model.layers:
        if isinstance(layer, LaurelResidual):
            w = keras.ops.convert_to_numpy(layer.residual_weights)
            e = np.exp(w - w.max())
            alpha, beta = 2 * e / e.sum()
            print(f"{layer.name:<22} alpha={alpha:.3f} beta={beta:.3f}")
    plot(results)

    # Step 5: compare. The overhead is the LAuReL parameters; step times on
    # a shared CPU are noisy (benchmarks/laurel.py interleaves repeats).
    base = results["plain"]
    print()
    print(
        f"{'variant':<10}{'test acc':>10}{'params':>9}{'LAuReL':>8}"
        f"{'step ms':>9}{'x plain':>9}"
    )
    for variant, r in results.items():
        print(
            f"{variant:<10}{r['accuracy']:>10.4f}{r['params']:>9,}"
            f"{r['laurel_params']:>8,}{r['step_ms']:>9.1f}"
            f"{r['step_ms'] / base['step_ms']:>9.2f}"
        )


if __name__ == "__main__":
    main()
    if "--quick" in sys.argv[1:]:
        print(
            "\n(smoke run, --quick: tiny data and a few steps; the figures "
            "above only show that the script runs, not how the method does)"
        )
