"""LAuReL benchmark: step time, parameter overhead and accuracy of a ResNet.

Compares a small CIFAR-style ResNet (two stages of two basic blocks, 16 and
32 filters) with plain residual adds against the same network with LAuReL
residuals (`rw`, `lr`, `rw+lr`, `rw+lr+pa`, rank 4) on scikit-learn's 8x8
digits (offline):

- step-time ratio of each variant to the plain network, measured in one
  process by `compare_step_times` (warm-up, then interleaved rounds;
  median of the per-round ratios), `jit_compile=True` on JAX and
  TensorFlow;
- parameter overhead in percent of the plain network;
- test accuracy over seeds (same data, steps and seeds for every variant),
  and the per-seed accuracy gain of RW+LR over plain.

    KERAS_BACKEND=jax python benchmarks/laurel.py [--quick] [--seeds N]
        [--timing-only]
"""

import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import Progress  # noqa: E402
from benchmarks.common import compare_step_times  # noqa: E402
from benchmarks.common import figure  # noqa: E402
from benchmarks.common import median  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from keras_efficient.applications import ResNet  # noqa: E402
from keras_efficient.datasets import load_digits  # noqa: E402

TIMED = ["plain", "rw", "lr", "rw+lr", "rw+lr+pa"]
TRAINED = ["plain", "rw", "rw+lr", "rw+lr+pa"]
STEP_TARGETS = {"rw": ("<=", 1.02), "rw+lr": ("<=", 1.05)}
JIT = keras.backend.backend() != "torch"


def build(variant, seed):
    keras.utils.set_random_seed(seed)
    model = ResNet(
        [2, 2],
        [16, 32],
        input_shape=(8, 8, 1),
        classes=10,
        laurel=None if variant == "plain" else variant,
        laurel_rank=4,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=JIT,
    )
    return model


def accuracy_figures(seeds, epochs, batch_size):
    """Test accuracy per variant; same data, steps and seeds for each."""
    (x_train, y_train), (x_test, y_test) = load_digits(seed=0)
    accuracy = {v: [] for v in TRAINED}
    runs = Progress([(s, v) for s in range(seeds) for v in TRAINED], "run")
    for seed, v in runs:
        model = build(v, seed)
        keras.utils.set_random_seed(seed)
        model.fit(
            x_train,
            y_train,
            batch_size=batch_size,
            epochs=epochs,
            verbose=0,
        )
        acc = model.evaluate(x_test, y_test, verbose=0)[1]
        accuracy[v].append(float(acc))
        runs.log(f"seed {seed} {v:<9} test accuracy {acc:.4f}")
    figures = [figure(f"test_accuracy/{v}", accuracy[v]) for v in TRAINED]
    gains = np.subtract(accuracy["rw+lr"], accuracy["plain"]).tolist()
    figures.append(
        figure(
            "accuracy_gain/rw+lr",
            gains,
            target=(">", 0.0),
            note="per-seed test accuracy of RW+LR minus plain",
        )
    )
    return figures


def main():
    args = parse_args(
        __doc__.splitlines()[0],
        extra=lambda parser: parser.add_argument(
            "--timing-only",
            action="store_true",
            help="step times and parameter counts only, no training runs",
        ),
    )
    quick = args.quick
    seeds = args.seeds or (1 if quick else 3)
    epochs = 3 if quick else 10
    batch_size = 64
    (x_train, y_train), _ = load_digits(seed=0)

    # Step time: all variants in one process, interleaved.
    models = {v: build(v, 0) for v in TIMED}
    timing = compare_step_times(
        models,
        x_train,
        y_train,
        batch_size,
        steps=5 if quick else 15,
        repeats=3 if quick else 7,
        baseline="plain",
    )
    plain_params = models["plain"].count_params()
    figures = []
    for v in TIMED[1:]:
        figures.append(
            figure(
                f"step_time_ratio/{v}",
                median(timing[v]["ratios"]),
                target=STEP_TARGETS.get(v),
                unit="x",
                note="median of interleaved per-round ratios to plain",
            )
        )
    for v in TIMED[1:]:
        extra = models[v].count_params() - plain_params
        figures.append(
            figure(
                f"param_overhead/{v}",
                100.0 * extra / plain_params,
                unit="%",
                note=f"+{extra} over {plain_params} parameters",
            )
        )

    if not args.timing_only:
        figures += accuracy_figures(seeds, epochs, batch_size)

    print_table(figures, title="LAuReL ResNet on digits")
    write_results(
        "laurel",
        figures,
        args,
        extra={
            "setup": {
                "data": "sklearn digits 8x8, 1500 train / 297 test",
                "model": "ResNet([2, 2], [16, 32]), laurel_rank=4",
                "epochs": epochs,
                "batch_size": batch_size,
                "seeds": 0 if args.timing_only else seeds,
                "jit_compile": JIT,
            },
            "step_seconds": {v: timing[v]["step_seconds"] for v in TIMED},
        },
    )


if __name__ == "__main__":
    main()
