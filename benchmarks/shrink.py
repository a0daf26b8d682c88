"""Structural removal benchmark: does pruning pay in latency?

A ResNet20 (16/32/64 filters, 8x8 inputs) is trained on scikit-learn's
digits (offline, 1,500 / 297 split). Then 50% of the units of every
channel group are removed (`shrink(model, ratio=0.5, importance="l1")`:
coupled residual channels as one group, filters ranked by the L1 norm
summed over the group) and the smaller model is fine-tuned. Per seed:

- test accuracy, dense and removed + fine-tuned (same epochs budget for
  both: the dense model trains `epochs + finetune_epochs` in total);
- parameter and FLOP ratios, removed / dense;
- inference latency at batch 64: `predict_on_batch` (compiled), dense and
  removed interleaved round by round (A, B, A, B, ...), median over the
  rounds and the 10th / 90th percentiles.

Targets (reported, not tuned to): latency >= 1.6x faster, params <= 0.3x,
accuracy within 1 point of dense.

    KERAS_BACKEND=jax python benchmarks/shrink.py [--quick] [--seeds N]
    KERAS_BACKEND=tensorflow python benchmarks/shrink.py
"""

import os
import sys

import keras

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_efficient  # noqa: E402
from benchmarks.common import RESULTS_DIR  # noqa: E402
from benchmarks.common import Progress  # noqa: E402
from benchmarks.common import figure  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from keras_efficient.pruning.cost import compare_cost  # noqa: E402
from keras_efficient.pruning.shrink import shrink  # noqa: E402


def _compile(model, lr):
    model.compile(
        keras.optimizers.Adam(lr),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def run_seed(seed, epochs, finetune_epochs, rounds, data):
    (x, y), (xt, yt) = data
    keras.utils.set_random_seed(seed)
    dense = keras_efficient.applications.ResNet20(
        input_shape=(8, 8, 1), classes=10
    )
    _compile(dense, 2e-3).fit(
        x, y, epochs=epochs + finetune_epochs, batch_size=64, verbose=0
    )
    dense_acc = dense.evaluate(xt, yt, verbose=0)[1]
    # Removal from the model trained `epochs`: retrain a twin to that point.
    keras.utils.set_random_seed(seed)
    base = keras_efficient.applications.ResNet20(
        input_shape=(8, 8, 1), classes=10
    )
    _compile(base, 2e-3).fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    small = _compile(shrink(base, ratio=0.5, importance="l1"), 1e-3)
    removed_acc_before = small.evaluate(xt, yt, verbose=0)[1]
    small.fit(x, y, epochs=finetune_epochs, batch_size=64, verbose=0)
    small_acc = small.evaluate(xt, yt, verbose=0)[1]
    cost = compare_cost(dense, small, (8, 8, 1), batch_size=64, rounds=rounds)
    row = {
        "seed": seed,
        "dense_accuracy": 100 * dense_acc,
        "removed_accuracy_before_finetune": 100 * removed_acc_before,
        "removed_accuracy": 100 * small_acc,
        "params_dense": cost["dense"]["params"],
        "params_removed": cost["pruned"]["params"],
        "params_ratio": cost["params_ratio"],
        "flops_ratio": cost["flops_ratio"],
        "speedup": cost["speedup"],
        "latency_dense_ms": cost["dense"]["latency_median_ms"],
        "latency_removed_ms": cost["pruned"]["latency_median_ms"],
        "latency_dense_p10_p90_ms": [
            cost["dense"]["latency_p10_ms"],
            cost["dense"]["latency_p90_ms"],
        ],
        "latency_removed_p10_p90_ms": [
            cost["pruned"]["latency_p10_ms"],
            cost["pruned"]["latency_p90_ms"],
        ],
    }
    return row


def main():
    args = parse_args(__doc__.splitlines()[0])
    seeds = args.seeds or (1 if args.quick else 3)
    epochs, finetune, rounds = (3, 2, 10) if args.quick else (20, 10, 50)
    data = keras_efficient.datasets.load_digits()
    rows, runs = [], Progress(range(seeds), "seed")
    for seed in runs:
        rows.append(run_seed(seed, epochs, finetune, rounds, data))
        row = rows[-1]
        runs.log({k: round(v, 4) if isinstance(v, float) else v
                  for k, v in row.items()})  # fmt: skip

    def values(key):
        return [r[key] for r in rows]

    drops = [r["dense_accuracy"] - r["removed_accuracy"] for r in rows]
    figures = [
        figure("latency_speedup_batch64", values("speedup"), (">=", 1.6),
               unit="x", note="dense / removed, median of interleaved "
               "rounds"),  # fmt: skip
        figure("params_ratio", values("params_ratio"), ("<=", 0.3), unit="x"),
        figure("flops_ratio", values("flops_ratio"), unit="x"),
        figure("test_accuracy/dense", values("dense_accuracy"), unit="%"),
        figure("test_accuracy/removed", values("removed_accuracy"), unit="%"),
        figure("accuracy_drop_points", drops, ("<=", 1.0), unit="points"),
        figure("latency_ms/dense", values("latency_dense_ms"), unit="ms"),
        figure("latency_ms/removed", values("latency_removed_ms"), unit="ms"),
    ]
    for f in figures:
        met = ""
        if "target" in f:
            met = f" (target {f['target']}: met={f['met']})"
        print(f"{f['name']:28s} {f['mean']:9.4f} +- {f['std']:.4f}{met}")
    if args.output is None:
        suffix = ".quick" if args.quick else ""
        args.output = os.path.join(
            RESULTS_DIR, f"shrink.{keras.backend.backend()}{suffix}.json"
        )
    write_results(
        "shrink",
        figures,
        args,
        extra={
            "per_seed": rows,
            "setup": {"epochs": epochs, "finetune_epochs": finetune,
                      "rounds": rounds, "ratio": 0.5, "batch_size": 64},
        },  # fmt: skip
    )


if __name__ == "__main__":
    main()
