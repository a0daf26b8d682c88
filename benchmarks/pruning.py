"""Pruning benchmark: accuracy vs sparsity per schedule, callback step time.

A Conv1D network on MNIST-1D (4,000 / 1,000 split, offline) is trained
dense, then fine-tuned from the dense weights for the same number of steps
(same data order and seed) under each schedule and target sparsity:

- `one-shot`: `ConstantSparsity(s, begin_step=1, end_step=1)`, pruned once
  before the first fine-tuning batch (tfmot steps: batch i runs at
  step i + 1), then retrained;
- `polynomial`: `PolynomialDecay(0, s, 0, prune_steps, frequency)`;
- `iterative`: `IterativePruning.geometric(s, prune_fraction=0.4)` cycles
  spread evenly over the same `prune_steps`, then retrained.

All three use `scope="global"` (one magnitude threshold over all kernels);
one-shot with `scope="layer"` at 90% is reported for contrast.

The dense baseline is the dense network fine-tuned for the same steps with
no pruning, in the same run and seeds. A 2:4 (N:M) run prunes every kernel
whose input size is a multiple of 4 (all but the first convolution).
Figures: test accuracy (mean and std over seeds), per-seed accuracy drop to
dense in points, iterative minus one-shot at 95%.

Step time, in one process (`jit_compile=True` on JAX and TensorFlow):
`compare_step_times` of the network with and without the callback,
`ConstantSparsity(0.9, 0, frequency=f)` for f = 1 (masks recomputed inside
the compiled step at every step) and f = 100 (tfmot's default), interleaved
A/B rounds, median and spread of the per-round ratios; the train-step
compilations during the timed rounds are counted (0 expected).

With `--structure`, runs the filter-removal benchmark instead (dense vs
masked vs removed ResNet20: latency, parameters, FLOPs and accuracy; see
`benchmarks/shrink.py`, results in `shrink.<backend>.json`).

    KERAS_BACKEND=jax python benchmarks/pruning.py [--quick] [--seeds N]
        [--timing-only | --structure]
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
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from benchmarks.step_timing import CompileCounter  # noqa: E402
from examples import pruning as tutorial  # noqa: E402
from keras_efficient.callbacks import MagnitudePruning  # noqa: E402
from keras_efficient.datasets import load_mnist1d  # noqa: E402
from keras_efficient.pruning import ConstantSparsity  # noqa: E402
from keras_efficient.pruning import IterativePruning  # noqa: E402
from keras_efficient.pruning import PolynomialDecay  # noqa: E402

JIT = keras.backend.backend() != "torch"
BATCH = 100
SCHEDULES = ["one-shot", "polynomial", "iterative"]
PRUNE_FRACTION = 0.4  # iterative: remove 40% of the remaining weights/cycle
SCOPE = "global"  # one magnitude threshold across all kernels


def make_model(seed):
    """The tutorial's CNN (`examples/pruning.py`), seeded."""
    keras.utils.set_random_seed(seed)
    return tutorial.make_model()


def compile_(model, lr):
    model.compile(
        keras.optimizers.Adam(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=JIT,
    )
    return model


def n_m_targets(layer):
    """Kernels whose input size is a multiple of 4 (2:4 groups)."""
    return int(np.prod(layer.kernel.shape[:-1])) % 4 == 0


def make_callback(schedule, sparsity, prune_steps, frequency):
    if schedule == "one-shot":
        return MagnitudePruning(ConstantSparsity(sparsity, 1, 1), scope=SCOPE)
    if schedule == "one-shot-layer":
        return MagnitudePruning(ConstantSparsity(sparsity, 1, 1), scope="layer")
    if schedule == "polynomial":
        return MagnitudePruning(
            PolynomialDecay(0.0, sparsity, 0, prune_steps, frequency=frequency),
            scope=SCOPE,
        )
    if schedule == "iterative":
        cycles = IterativePruning.geometric_sparsities(sparsity, PRUNE_FRACTION)
        return MagnitudePruning(
            IterativePruning(cycles, max(prune_steps // len(cycles), 1)),
            scope=SCOPE,
        )
    if schedule == "2:4":
        return MagnitudePruning(
            ConstantSparsity(0.5, 1, 1), n_m=(2, 4), targets=n_m_targets
        )
    raise ValueError(schedule)


def finetune(weights, seed, callback, data, epochs):
    (x, y), (xt, yt) = data
    model = compile_(make_model(seed), 1e-3)
    model.set_weights(weights)
    keras.utils.set_random_seed(seed + 1000)  # same data order for all
    callbacks = [] if callback is None else [callback]
    model.fit(
        x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=callbacks
    )
    acc = float(model.evaluate(xt, yt, batch_size=500, verbose=0)[1])
    return model, acc


def n_m_exact(model, callback):
    """1.0 if every 4-group along the input axis of each target has 2."""
    for variable in callback.target_weights.values():
        w = keras.ops.convert_to_numpy(variable.value)
        w = w.reshape(-1, w.shape[-1])
        groups = (w.reshape(-1, 4, w.shape[-1]) != 0).sum(axis=1)
        if not (groups <= 2).all():
            return 0.0
    return 1.0


def timed_fit(model, callback, x, y, epochs):
    start = time.perf_counter()
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        verbose=0,
        shuffle=False,
        callbacks=[] if callback is None else [callback],
    )
    return time.perf_counter() - start


def _with_callback(model, callback):
    fit = model.fit
    model.fit = lambda *a, **k: fit(*a, **{**k, "callbacks": [callback]})
    return model


def timing(data, quick, prune_steps, frequency, ft_epochs):
    (x, y), _ = data
    steps = 10 if quick else 40
    repeats = 3 if quick else 9
    figures, extra = [], {}

    # Pruned fit vs plain fit, interleaved A/B rounds in one process, masks
    # recomputed in the compiled step every step (frequency 1) or every 100.
    models = {"off": compile_(make_model(0), 1e-3)}
    for f in (1, 100):
        cb = MagnitudePruning(ConstantSparsity(0.9, 0, frequency=f))
        models[f"frequency_{f}"] = _with_callback(
            compile_(make_model(0), 1e-3), cb
        )
    for name in models:  # warm-up: compile outside the counted rounds
        models[name].fit(
            x[: BATCH * 2], y[: BATCH * 2], batch_size=BATCH, verbose=0
        )
    with CompileCounter(models) as counted:
        res = compare_step_times(
            models, x, y, BATCH, steps=steps, repeats=repeats, baseline="off"
        )
    for f in (1, 100):
        ratios = res[f"frequency_{f}"]["ratios"]
        figures.append(
            figure(
                f"step_time_ratio/frequency_{f}",
                median(ratios),
                target=("<=", 1.03),
                unit="x",
                note=(
                    f"pruned/plain fit, {steps}-step epochs, median of "
                    f"{repeats} interleaved rounds (min {min(ratios):.3f}, "
                    f"max {max(ratios):.3f}); train-step compiles while "
                    f"timing: {counted.train_step} (JAX), train-function "
                    f"rebuilds: {counted.rebuilds}"
                ),
            )
        )
    extra["step_seconds"] = {k: v["step_seconds"] for k, v in res.items()}
    extra["compiles_while_timing"] = {
        "jax_train_step_compiles": counted.train_step,
        "train_function_rebuilds": counted.rebuilds,
    }
    return figures, extra


def _arguments(parser):
    parser.add_argument(
        "--timing-only", action="store_true", help="only the step-time figures"
    )
    parser.add_argument(
        "--structure",
        action="store_true",
        help="dense vs masked vs removed ResNet20 (benchmarks/shrink.py)",
    )


def main():
    args = parse_args(__doc__.splitlines()[0], extra=_arguments)
    if args.structure:
        from benchmarks import shrink

        shrink.run(args)
        return
    quick = args.quick
    if args.timing_only and not args.output:
        name = f"pruning.timing.{keras.backend.backend()}"
        name += ".quick" if quick else ""
        args.output = os.path.join(
            os.path.dirname(os.path.abspath(__file__)),
            "results",
            name + ".json",
        )
    seeds = args.seeds or (1 if quick else 3)
    dense_epochs = 4 if quick else 15
    ft_epochs = 2 if quick else 8
    sparsities = [0.5, 0.95] if quick else [0.5, 0.75, 0.9, 0.95, 0.97]
    data = load_mnist1d()
    (x, y), (xt, yt) = data
    steps_per_epoch = len(x) // BATCH
    ft_steps = ft_epochs * steps_per_epoch
    prune_steps = (ft_steps * 5) // 8  # prune in the first 5/8, then retrain
    frequency = max(prune_steps // 5, 1)

    figures, extra = timing(data, quick, prune_steps, frequency, ft_epochs)

    accuracy = {"dense": []}
    sparsity_achieved = {}
    if not args.timing_only:
        runs = Progress(range(seeds), "seed")
        for seed in runs:
            t0 = time.perf_counter()
            dense = compile_(make_model(seed), 3e-3)
            keras.utils.set_random_seed(seed)
            dense.fit(x, y, batch_size=BATCH, epochs=dense_epochs, verbose=0)
            weights = dense.get_weights()
            _, acc = finetune(weights, seed, None, data, ft_epochs)
            accuracy["dense"].append(acc)
            runs.log(f"seed {seed} dense {acc:.4f}")
            for schedule in SCHEDULES:
                for s in sparsities:
                    cb = make_callback(schedule, s, prune_steps, frequency)
                    _, acc = finetune(weights, seed, cb, data, ft_epochs)
                    key = f"{schedule}/{round(100 * s)}"
                    accuracy.setdefault(key, []).append(acc)
                    sparsity_achieved.setdefault(key, []).append(
                        cb.achieved_sparsity()
                    )
                    runs.log(f"seed {seed} {key:<15} {acc:.4f}")
            cb = make_callback("one-shot-layer", 0.9, prune_steps, frequency)
            _, acc = finetune(weights, seed, cb, data, ft_epochs)
            accuracy.setdefault("one-shot-layer/90", []).append(acc)
            sparsity_achieved.setdefault("one-shot-layer/90", []).append(
                cb.achieved_sparsity()
            )
            cb = make_callback("2:4", 0.5, prune_steps, frequency)
            model, acc = finetune(weights, seed, cb, data, ft_epochs)
            accuracy.setdefault("2:4", []).append(acc)
            sparsity_achieved.setdefault("2:4", []).append(n_m_exact(model, cb))
            runs.log(
                f"seed {seed} 2:4 {acc:.4f} ({time.perf_counter() - t0:.0f} s)"
            )

        dense_acc = np.array(accuracy["dense"])
        figures.append(figure("test_accuracy/dense", 100 * dense_acc, unit="%"))
        for key, accs in accuracy.items():
            if key == "dense":
                continue
            accs = np.array(accs)
            figures.append(
                figure(
                    f"test_accuracy/{key}",
                    100 * accs,
                    unit="%",
                    note="achieved sparsity "
                    f"{np.mean(sparsity_achieved[key]):.4f}"
                    if key != "2:4"
                    else "2:4 pattern exact in every group: "
                    f"{all(sparsity_achieved[key])}",
                )
            )
            target = None
            if key in ("one-shot/90", "polynomial/90", "iterative/90"):
                target = ("<=", 1.0)
            figures.append(
                figure(
                    f"accuracy_drop_points/{key}",
                    100 * (dense_acc - accs),
                    target=target,
                    unit=" pts",
                    note="per-seed dense minus pruned, same seeds and steps",
                )
            )
        if "iterative/95" in accuracy and "one-shot/95" in accuracy:
            figures.append(
                figure(
                    "iterative_minus_one_shot_points/95",
                    100
                    * (
                        np.array(accuracy["iterative/95"])
                        - np.array(accuracy["one-shot/95"])
                    ),
                    target=(">=", 0.0),
                    unit=" pts",
                    note="per-seed, same seeds and steps",
                )
            )

    print_table(figures, title="Magnitude pruning, CNN on MNIST-1D")
    write_results(
        "pruning",
        figures,
        args,
        extra={
            "setup": {
                "data": "MNIST-1D 4000 train / 1000 test (mnist1d, seed 42)",
                "model": "Conv1D(32,5)-pool-Conv1D(32,3)-pool-Dense(128)-"
                "Dense(10), 46k params",
                "dense_epochs": dense_epochs,
                "finetune_epochs": ft_epochs,
                "batch_size": BATCH,
                "prune_steps": prune_steps,
                "polynomial_frequency": frequency,
                "iterative_prune_fraction": PRUNE_FRACTION,
                "sparsities": sparsities,
                "scope": SCOPE,
                "seeds": seeds if not args.timing_only else 0,
                "jit_compile": JIT,
            },
            "timing": extra,
            "accuracy_raw": accuracy,
            "achieved_sparsity_raw": sparsity_achieved,
        },
    )


if __name__ == "__main__":
    main()
