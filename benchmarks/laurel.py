"""LAuReL benchmark: test accuracy of a 1D ResNet on MNIST-1D over widths.

The quality claim of LAuReL (Menghani et al., ICML 2025) is that replacing
each residual add `x + f(x)` by a learned one (RW: learned weights; LR: a
low-rank map of `x`) buys accuracy for a few parameters. This script
measures it on MNIST-1D (offline, 4,000 train / 1,000 test; not saturated:
small CNNs reach roughly 90-95%, unlike the 8x8 digits where every variant
was at ~99%) with a 1D ResNet: a `Conv1D` stem of `w` filters, then two
stages of two basic blocks with `w` and `2w` filters (the second stage
halves the length), global average pooling and a softmax classifier. The
blocks' residual adds are plain `Add`s or `LaurelResidual(variant,
rank=min(4, channels))`.

For every width `w` (`--widths`) it trains, with the same data, steps and
seeds: `plain`, `rw` and `rw+lr` of width `w`, and the plain net of width
`2w` as the strong baseline (it must be clearly ahead of `plain`, else the
setup cannot tell a gain from noise). It writes per-seed test accuracies
(`test_accuracy/VARIANT/width_W`), the paired differences
`paired/METHOD-plain/width_W` and `paired/wide2x-plain/width_W` (mean, 95%
interval, verdict via `paired_difference`) and the per-seed fraction of the
plain-to-wide gap a method closes (`gap_closed/METHOD/width_W`).

Training: Adam, peak learning rate 3e-3 with a 5% linear warm-up and cosine
decay to zero over all steps, batch 50. The plain net of width `2w` is
trained once and reused when `2w` is also a swept width.

Modes:

- default: the CPU run behind `benchmarks/results/laurel.json` (widths
  8 and 16, 30 epochs, 5 seeds; ~15 minutes on one core);
- `--quick`: a smoke run (one width, one seed, 1,000 examples);
- `--full`: widths 16, 32 and 64, 100 epochs, 5 seeds, meant for one GPU
  in under 10 minutes (written without a GPU to try it on: untested there);
- `--timing-only`: the old step-time and parameter-overhead comparison of
  `ResNet([2, 2], [16, 32])` variants on the 8x8 digits (no training);
  `benchmarks/overhead.py` is the reference for step time.

    KERAS_BACKEND=jax python benchmarks/laurel.py [--quick | --full]
        [--seeds N] [--widths 8 16] [--epochs E] [--timing-only]
"""

import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import Progress  # noqa: E402
from benchmarks.common import compare_step_times  # noqa: E402
from benchmarks.common import figure  # noqa: E402
from benchmarks.common import median  # noqa: E402
from benchmarks.common import paired_difference  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from keras_efficient.applications import ResNet  # noqa: E402
from keras_efficient.datasets import dataset_fingerprint  # noqa: E402
from keras_efficient.datasets import load_digits  # noqa: E402
from keras_efficient.datasets import load_mnist1d  # noqa: E402
from keras_efficient.layers import LaurelResidual  # noqa: E402

METHODS = ("rw", "rw+lr")
RANK = 4
LEARNING_RATE = 3e-3
BATCH_SIZE = 50  # divides the 4,000 / 1,000 splits: no ragged batch
TIMING_BATCH_SIZE = 64
SCALES = {
    "quick": dict(widths=[8], epochs=2, seeds=1, num_train=1000),
    "default": dict(widths=[8, 16], epochs=30, seeds=5, num_train=4000),
    "full": dict(widths=[16, 32, 64], epochs=100, seeds=5, num_train=4000),
}
JIT = keras.backend.backend() != "torch"


def conv_bn(x, filters, strides, name, relu=True):
    x = keras.layers.Conv1D(
        filters,
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu")(x) if relu else x


def resnet1d(variant, width, input_shape):
    """Stem, stages of 2 + 2 basic blocks (`w`, `2w` filters), classifier."""
    inputs = keras.Input(input_shape)
    x = conv_bn(inputs, width, 1, "stem")
    for stage, filters in enumerate([width, 2 * width]):
        for block in range(2):
            name = f"s{stage + 1}b{block + 1}"
            strides = 2 if stage > 0 and block == 0 else 1
            fx = conv_bn(x, filters, strides, f"{name}_1")
            fx = conv_bn(fx, filters, 1, f"{name}_2", relu=False)
            if strides != 1 or x.shape[-1] != filters:
                x = keras.layers.Conv1D(
                    filters, 1, strides=strides, use_bias=False
                )(x)
                x = keras.layers.BatchNormalization(momentum=0.9)(x)
            if variant == "plain":
                x = keras.layers.Add()([x, fx])
            else:
                rank = min(RANK, filters)
                x = LaurelResidual(variant, rank=rank, name=f"{name}_laurel")(
                    x, fx
                )
            x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=f"resnet1d_{variant}_{width}")


def compiled_model(variant, width, input_shape, steps):
    """A compiled net; `fit` and `evaluate` compile once per model."""
    model = resnet1d(variant, width, input_shape)
    warmup = max(1, steps // 20)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0,
        steps - warmup,
        warmup_target=LEARNING_RATE,
        warmup_steps=warmup,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=JIT,
    )
    return model


def restart(model, fresh):
    """Gives `model` the initial weights of `fresh` and a new optimizer.

    Each seed's run reuses the model compiled for the first seed (XLA
    compilation dominated short CPU runs): weights from a freshly built
    net, optimizer slots and step counter (hence the schedule) zeroed.
    """
    model.set_weights(fresh.get_weights())
    for variable in model.optimizer.variables:
        if variable.name != "learning_rate":
            variable.assign(np.zeros(variable.shape, variable.dtype))


def train_and_test(models, variant, width, seed, data, epochs):
    """Test accuracy of one run; same data order per seed for all runs."""
    (x_train, y_train), (x_test, y_test) = data
    steps = epochs * -(-len(x_train) // BATCH_SIZE)
    keras.utils.set_random_seed(seed)
    fresh = resnet1d(variant, width, x_train.shape[1:])
    if (variant, width) not in models:
        models[(variant, width)] = compiled_model(
            variant, width, x_train.shape[1:], steps
        )
    model = models[(variant, width)]
    restart(model, fresh)
    keras.utils.set_random_seed(seed)
    model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
    accuracy = model.evaluate(x_test, y_test, batch_size=500, verbose=0)[1]
    return float(accuracy), model.count_params()


def quality(widths, seeds, epochs, num_train):
    """Per-seed accuracies of every (variant, width) run, and the figures."""
    data = load_mnist1d(num_train=num_train, num_test=1000)
    runs = []
    for w in widths:
        runs += [("plain", w)] + [(m, w) for m in METHODS] + [("plain", 2 * w)]
    runs = list(dict.fromkeys(runs))
    accuracy = {run: [] for run in runs}
    params, models = {}, {}
    progress = Progress([(s, r) for s in range(seeds) for r in runs], "run")
    for seed, (variant, w) in progress:
        start = time.perf_counter()
        acc, params[(variant, w)] = train_and_test(
            models, variant, w, seed, data, epochs
        )
        accuracy[(variant, w)].append(acc)
        progress.log(
            f"seed {seed} {variant:<6} width {w:<3} test accuracy {acc:.4f} "
            f"[{time.perf_counter() - start:.0f} s]"
        )

    figures = []
    for variant, w in runs:
        figures.append(
            figure(
                f"test_accuracy/{variant}/width_{w}",
                accuracy[(variant, w)],
                note=f"{params[(variant, w)]} parameters",
            )
        )
    for w in widths:
        plain = accuracy[("plain", w)]
        wide = accuracy[("plain", 2 * w)]
        for method in METHODS + ("wide2x",):
            values = wide if method == "wide2x" else accuracy[(method, w)]
            figures.append(
                paired_difference(
                    f"paired/{method}-plain/width_{w}", values, plain
                )
            )
        for method in METHODS:
            gap = np.subtract(wide, plain)
            gained = np.subtract(accuracy[(method, w)], plain)
            figures.append(
                figure(
                    f"gap_closed/{method}/width_{w}",
                    (gained / np.where(gap == 0, np.nan, gap)).tolist(),
                    note="(acc - acc_plain) / (acc_wide2x - acc_plain) per "
                    "seed; unstable where the gap is small",
                )
            )
    setup = {
        "data": f"MNIST-1D (load_mnist1d), {num_train} train / 1000 test",
        "data_fingerprint": dataset_fingerprint(*data[0], *data[1]),
        "model": "1D ResNet: Conv1D stem w, stages [2, 2] blocks of "
        f"[w, 2w] filters; LaurelResidual rank min({RANK}, channels)",
        "widths": widths,
        "strong_baseline": "plain net of width 2w",
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "optimizer": f"Adam, peak lr {LEARNING_RATE}, 5% warm-up, cosine",
        "seeds": seeds,
        "jit_compile": JIT,
        "params": {f"{v}/width_{w}": n for (v, w), n in params.items()},
    }
    return figures, setup


def timing(quick):
    """Step-time ratios and parameter overheads of ResNet on digits."""
    variants = ["plain", "rw", "lr", "rw+lr", "rw+lr+pa"]
    (x_train, y_train), _ = load_digits(seed=0)
    models = {}
    for v in variants:
        keras.utils.set_random_seed(0)
        models[v] = ResNet(
            [2, 2],
            [16, 32],
            input_shape=(8, 8, 1),
            classes=10,
            laurel=None if v == "plain" else v,
            laurel_rank=RANK,
        )
        models[v].compile(
            optimizer=keras.optimizers.Adam(LEARNING_RATE),
            loss="sparse_categorical_crossentropy",
            jit_compile=JIT,
        )
    result = compare_step_times(
        models,
        x_train,
        y_train,
        TIMING_BATCH_SIZE,
        steps=5 if quick else 15,
        repeats=3 if quick else 7,
        baseline="plain",
    )
    plain_params = models["plain"].count_params()
    figures = []
    for v in variants[1:]:
        figures.append(
            figure(
                f"step_time_ratio/{v}",
                median(result[v]["ratios"]),
                unit="x",
                note="median of interleaved per-round ratios to plain",
            )
        )
        extra = models[v].count_params() - plain_params
        figures.append(
            figure(
                f"param_overhead/{v}",
                100.0 * extra / plain_params,
                unit="%",
                note=f"+{extra} over {plain_params} parameters",
            )
        )
    setup = {
        "data": "sklearn digits 8x8, 1500 train",
        "model": f"ResNet([2, 2], [16, 32]), laurel_rank={RANK}",
        "jit_compile": JIT,
        "step_seconds": {v: result[v]["step_seconds"] for v in variants},
    }
    return figures, setup


def _extra_arguments(parser):
    parser.add_argument(
        "--timing-only",
        action="store_true",
        help="step times and parameter counts on digits only, no training",
    )
    parser.add_argument(
        "--widths", type=int, nargs="+", default=None, help="base widths w"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs"
    )


def main():
    args = parse_args(
        __doc__.splitlines()[0],
        extra=_extra_arguments,
        full_help="GPU-sized quality run (widths 16 32 64, 100 epochs, "
        "5 seeds)",
    )
    scale = "quick" if args.quick else "full" if args.full else "default"
    if args.timing_only:
        figures, setup = timing(args.quick)
        print_table(figures, title="LAuReL ResNet on digits: step time")
        write_results("laurel", figures, args, extra={"setup": setup})
        return
    config = dict(SCALES[scale])
    for key in ("widths", "epochs", "seeds"):
        if getattr(args, key):
            config[key] = getattr(args, key)
    start = time.perf_counter()
    figures, setup = quality(
        config["widths"], config["seeds"], config["epochs"], config["num_train"]
    )
    setup["scale"] = scale
    wall = time.perf_counter() - start
    print_table(figures, title="LAuReL 1D ResNet on MNIST-1D")
    for f in figures:
        if "verdict" in f:
            low, high = f["ci95"]
            print(
                f"{f['name']}: {f['mean']:+.4f} [{low:+.4f}, {high:+.4f}] "
                f"{f['verdict']}"
            )
    write_results(
        "laurel",
        figures,
        args,
        extra={"setup": setup, "wall_seconds": wall},
    )


if __name__ == "__main__":
    main()
