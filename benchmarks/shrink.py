"""Structural pruning benchmark: dense vs masked vs removed.

A ResNet20 (16/32/64 filters, 8x8 inputs) is trained on scikit-learn's
digits (offline, 1,500 / 297 split) for `epochs`. From those weights, per
seed and in one run:

- **dense**: trains on for `ramp + finetune` more epochs (same optimizer,
  learning rate 2e-3 then 1e-3 for the last `finetune` epochs);
- **masked**: gradual filter pruning for `ramp` epochs (fresh Adam, 2e-3):
  after each epoch `k`, the least important units of every coupled channel
  group are zeroed with `zero_units(model, s_k, importance="l1")` (L1 norm
  summed over the group; residual channels as one group), `s_k` following
  a cubic `PolynomialDecay(0, 0.5)` over the `ramp` epochs; zeroed units
  may regrow between epochs (soft filter pruning) until the last zeroing
  at exactly 50%. The result has the dense shapes with zeros in it;
- **removed**: `shrink(masked)` removes the zeroed units (outputs equal the
  masked model's up to float rounding; the largest difference is
  recorded), then fine-tunes `finetune` epochs (fresh Adam, 1e-3).

Both arms see `epochs + ramp + finetune` epochs. Group-aware zeroing is
used instead of `MagnitudePruning(structure="filter")`, whose masks are
chosen per layer: the layers that feed one residual sum then keep
different channels, so `shrink` can remove only the channels inside the
blocks (0.46x params on this model, not 0.25x).

Per seed: test accuracy of the three models, parameter (total and
nonzero) and FLOP ratios to dense, and inference latency at batch 64:
`predict_on_batch` (compiled), the three models interleaved round by round
(dense, masked, removed, dense, ...), median and 10th / 90th percentiles.

Targets (reported, not tuned to): removed latency >= 1.6x faster than
dense, params <= 0.3x, accuracy within 1 point of dense (mean over seeds).

    KERAS_BACKEND=jax python benchmarks/shrink.py [--quick] [--seeds N]
    KERAS_BACKEND=tensorflow python benchmarks/shrink.py

`python benchmarks/pruning.py --structure` runs the same benchmark.
"""

import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_efficient  # noqa: E402
from benchmarks.common import RESULTS_DIR  # noqa: E402
from benchmarks.common import Progress  # noqa: E402
from benchmarks.common import figure  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from keras_efficient.pruning import PolynomialDecay  # noqa: E402
from keras_efficient.pruning.cost import measure_latency  # noqa: E402
from keras_efficient.pruning.cost import model_cost  # noqa: E402
from keras_efficient.pruning.shrink import shrink  # noqa: E402
from keras_efficient.pruning.shrink import zero_units  # noqa: E402

RATIO = 0.5
BATCH = 64
ARMS = ("dense", "masked", "removed")


def _compile(model, lr):
    model.compile(
        keras.optimizers.Adam(lr),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _fit(model, x, y, epochs):
    model.fit(x, y, epochs=epochs, batch_size=BATCH, verbose=0)


def gradual_filter_pruning(model, x, y, epochs, ratio):
    """Trains `epochs` epochs, zeroing a growing share of every group's
    units after each (cubic ramp to `ratio`); returns the sparsities."""
    schedule = PolynomialDecay(0.0, ratio, begin_step=0, end_step=epochs)
    sparsities = []
    for epoch in range(1, epochs + 1):
        _fit(model, x, y, 1)
        sparsity = schedule.sparsity(epoch)
        model.set_weights(zero_units(model, sparsity, "l1").get_weights())
        sparsities.append(sparsity)
    return sparsities


def _nonzero(model):
    values = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    return int(sum(np.count_nonzero(v) for v in values))


def run_seed(seed, setup, data):
    (x, y), (xt, yt) = data
    keras.utils.set_random_seed(seed)
    dense = keras_efficient.applications.ResNet20(
        input_shape=(8, 8, 1), classes=10
    )
    _compile(dense, 2e-3)
    _fit(dense, x, y, setup["epochs"])
    masked = keras.models.clone_model(dense)
    masked.set_weights(dense.get_weights())
    _compile(masked, 2e-3)

    keras.utils.set_random_seed(seed + 1000)
    _fit(dense, x, y, setup["ramp_epochs"])
    dense.optimizer.learning_rate.assign(1e-3)
    _fit(dense, x, y, setup["finetune_epochs"])

    keras.utils.set_random_seed(seed + 1000)
    ramp = gradual_filter_pruning(masked, x, y, setup["ramp_epochs"], RATIO)
    removed = _compile(shrink(masked), 1e-3)
    out_masked = masked.predict(xt, verbose=0)
    gap = float(np.max(np.abs(out_masked - removed.predict(xt, verbose=0))))
    removed_before = removed.evaluate(xt, yt, verbose=0)[1]
    _fit(removed, x, y, setup["finetune_epochs"])

    models = {"dense": dense, "masked": masked, "removed": removed}
    times = measure_latency(
        list(models.values()), (8, 8, 1), BATCH, setup["rounds"]
    )
    row = {"seed": seed, "ramp_sparsities": ramp, "max_abs_output_gap": gap}
    for (arm, model), t in zip(models.items(), times):
        cost = model_cost(model)
        row[f"{arm}_accuracy"] = 100 * model.evaluate(xt, yt, verbose=0)[1]
        row[f"{arm}_params"] = cost["params"]
        row[f"{arm}_nonzero_params"] = _nonzero(model)
        row[f"{arm}_flops"] = cost["flops"]
        row[f"{arm}_latency_ms"] = t["median_ms"]
        row[f"{arm}_latency_p10_p90_ms"] = [t["p10_ms"], t["p90_ms"]]
    row["removed_accuracy_before_finetune"] = 100 * removed_before
    for arm in ("masked", "removed"):
        row[f"{arm}_speedup"] = (
            row["dense_latency_ms"] / row[f"{arm}_latency_ms"]
        )
        row[f"{arm}_params_ratio"] = row[f"{arm}_params"] / row["dense_params"]
        row[f"{arm}_nonzero_ratio"] = (
            row[f"{arm}_nonzero_params"] / row["dense_nonzero_params"]
        )
        row[f"{arm}_flops_ratio"] = row[f"{arm}_flops"] / row["dense_flops"]
        row[f"{arm}_accuracy_drop"] = (
            row["dense_accuracy"] - row[f"{arm}_accuracy"]
        )
    return row


def summarise(rows):
    def values(key):
        return [r[key] for r in rows]

    return [
        figure("latency_speedup_batch64", values("removed_speedup"),
               (">=", 1.6), unit="x", note="dense / removed, median of "
               "interleaved rounds"),  # fmt: skip
        figure("params_ratio", values("removed_params_ratio"), ("<=", 0.3),
               unit="x", note="removed / dense"),  # fmt: skip
        figure("flops_ratio", values("removed_flops_ratio"), unit="x"),
        figure("accuracy_drop_points", values("removed_accuracy_drop"),
               ("<=", 1.0), unit=" pts", note="per seed, dense minus removed "
               "after fine-tuning"),  # fmt: skip
        figure("latency_speedup_batch64/masked", values("masked_speedup"),
               unit="x", note="dense / masked: same shapes, zeros in them"),
        figure("params_ratio/masked", values("masked_params_ratio"), unit="x"),
        figure("nonzero_params_ratio/masked", values("masked_nonzero_ratio"),
               unit="x"),  # fmt: skip
        figure("accuracy_drop_points/masked", values("masked_accuracy_drop"),
               unit=" pts", note="masked after the ramp, before the removed "
               "model's fine-tuning"),  # fmt: skip
        figure("test_accuracy/dense", values("dense_accuracy"), unit="%"),
        figure("test_accuracy/masked", values("masked_accuracy"), unit="%"),
        figure("test_accuracy/removed_before_finetune",
               values("removed_accuracy_before_finetune"), unit="%"),
        figure("test_accuracy/removed", values("removed_accuracy"), unit="%"),
        figure("latency_ms/dense", values("dense_latency_ms"), unit="ms"),
        figure("latency_ms/masked", values("masked_latency_ms"), unit="ms"),
        figure("latency_ms/removed", values("removed_latency_ms"), unit="ms"),
        figure("max_abs_output_gap/masked_vs_removed",
               values("max_abs_output_gap"), note="softmax outputs on the "
               "test set, before fine-tuning"),  # fmt: skip
    ]


def run(args):
    """Runs the benchmark with parsed `parse_args` arguments."""
    seeds = args.seeds or (1 if args.quick else 3)
    epochs, ramp, finetune, rounds = (
        (3, 2, 1, 10) if args.quick else (20, 6, 4, 50)
    )
    setup = {"epochs": epochs, "ramp_epochs": ramp, "finetune_epochs": finetune,
             "rounds": rounds, "ratio": RATIO, "batch_size": BATCH,
             "importance": "l1"}  # fmt: skip
    data = keras_efficient.datasets.load_digits()
    rows, runs = [], Progress(range(seeds), "seed")
    for seed in runs:
        rows.append(run_seed(seed, setup, data))
        runs.log({k: round(v, 4) if isinstance(v, float) else v
                  for k, v in rows[-1].items()})  # fmt: skip
    figures = summarise(rows)
    print_table(figures, title="ResNet20 on digits: dense / masked / removed")
    if args.output is None:
        suffix = ".quick" if args.quick else ""
        args.output = os.path.join(
            RESULTS_DIR, f"shrink.{keras.backend.backend()}{suffix}.json"
        )
    write_results("shrink", figures, args,
                  extra={"per_seed": rows, "setup": setup})  # fmt: skip
    return figures


def main():
    run(parse_args(__doc__.splitlines()[0]))


if __name__ == "__main__":
    main()
