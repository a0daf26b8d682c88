"""Active selection benchmark: student accuracy at equal teacher budgets.

Runs the comparison of `examples/active_distillation.py` (the same teacher,
student, callback and code) over seeds:

- per seed s, MNIST-1D generated with seed s and split into labeled
  (2,000; the teacher uses the first 1,000), validation (500), a pool
  (45,000) and a test set (5,000); a CNN teacher (width 32) trained on the
  1,000 labels, deliberately noisy;
- per strategy (uniform, margin, entropy, coreset, robust,
  sleeping_experts) one student (the same CNN at width 16, the same initial
  weights for every strategy) trained by `ActiveDistillation` on the
  teacher's probabilities: round 0 uniform, then rounds of
  `queries_per_round` selected points, `epochs_per_round` epochs of a fixed
  number of steps after each round, up to the largest budget;
- test accuracy after the training that follows the round reaching each
  budget (2k, 5k, 10k queries), mean and std over seeds, and the per-seed
  differences robust - margin (target >= 0) and robust - uniform
  (target > 0) at every budget;
- the wall time of one selection of 1,000 points from a 100,000-point pool
  per strategy (10-class probabilities; 64-d embeddings for coreset, no
  prior centers), median of repeats.

No hyper-parameter is tuned per seed or per strategy; `robust` takes its
adversary budget from the teacher's validation accuracy.

    KERAS_BACKEND=jax python benchmarks/active_selection.py [--quick]
        [--seeds N]
"""

import dataclasses
import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import Progress  # noqa: E402
from benchmarks.common import figure  # noqa: E402
from benchmarks.common import median  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from examples import active_distillation as tutorial  # noqa: E402
from keras_efficient import selection  # noqa: E402

STRATEGIES = tutorial.STRATEGIES


def time_selection(n, b, repeats, seed=0):
    """Median seconds of one `select` of `b` from `n` points per strategy."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(10, 0.3), size=n)
    emb = rng.normal(size=(n, 64)).astype("float32")
    out = {}
    progress = Progress(STRATEGIES, "strategy")
    for name in progress:
        times = []
        for r in range(repeats):
            strategy = selection.get(name)
            context = selection.SelectionContext(
                probs,
                embeddings=emb,
                indices=np.arange(n),
                teacher_accuracy=0.65,
                rng=r,
            )
            start = time.perf_counter()
            idx = strategy.select(context, b)
            times.append(time.perf_counter() - start)
            assert len(np.unique(idx)) == b
        out[name] = times
        progress.log(f"select {b} of {n}: {name:<17} {median(times):.3f} s")
    return out


def main():
    args = parse_args(__doc__.splitlines()[0])
    quick = args.quick
    seeds = args.seeds or (1 if quick else 3)
    if quick:
        budgets, per_round, epochs_per_round, pool = (1000, 2000), 500, 1, 10000
        timing_n, timing_b, repeats = 20000, 200, 1
    else:
        budgets, per_round, epochs_per_round, pool = (
            (2000, 5000, 10000),
            1000,
            2,
            None,
        )
        timing_n, timing_b, repeats = 100000, 1000, 3
    budget = max(budgets)

    figures = []
    timing = time_selection(timing_n, timing_b, repeats)
    for name in STRATEGIES:
        figures.append(
            figure(
                f"selection_seconds/{name}",
                median(timing[name]),
                unit="s",
                note=f"one select of {timing_b} from {timing_n} points, "
                f"median of {repeats}",
            )
        )

    accuracy = {(s, b): [] for s in STRATEGIES for b in budgets}
    teacher_acc = {"pool": [], "validation": [], "test": []}
    curves = {s: [] for s in STRATEGIES}
    runs = Progress(range(seeds), "seed")
    for seed in runs:
        splits = tutorial.load(seed)
        if pool is not None:
            x, y = splits.unlabeled
            splits = dataclasses.replace(splits, unlabeled=(x[:pool], y[:pool]))
        start = time.perf_counter()
        teacher, tacc = tutorial.train_teacher(splits, seed)
        for k, v in tacc.items():
            teacher_acc[k].append(v)
        runs.log(
            f"seed {seed} teacher accuracy pool {tacc['pool']:.4f} "
            f"validation {tacc['validation']:.4f} test {tacc['test']:.4f} "
            f"({time.perf_counter() - start:.0f} s)"
        )
        for name in STRATEGIES:
            start = time.perf_counter()
            acc = tutorial.run_strategy(
                name,
                splits,
                teacher,
                seed,
                budget,
                per_round,
                epochs_per_round=epochs_per_round,
            )
            curves[name].append({str(q): a for q, a in sorted(acc.items())})
            for b in budgets:
                accuracy[(name, b)].append(acc[b])
            runs.log(
                f"seed {seed} {name:<17} "
                + "  ".join(f"{b}: {acc[b]:.4f}" for b in budgets)
                + f"  ({time.perf_counter() - start:.0f} s)"
            )
        keras.backend.clear_session()

    for k, v in teacher_acc.items():
        figures.append(figure(f"teacher_accuracy/{k}", v))
    for b in budgets:
        for name in STRATEGIES:
            figures.append(
                figure(f"test_accuracy/{name}/{b}", accuracy[(name, b)])
            )
    for b in budgets:
        robust = np.asarray(accuracy[("robust", b)])
        for base, target in (("margin", (">=", 0.0)), ("uniform", (">", 0.0))):
            diff = robust - np.asarray(accuracy[(base, b)])
            figures.append(
                figure(
                    f"accuracy_gain/robust-{base}/{b}",
                    diff.tolist(),
                    target=target,
                    note=f"per-seed test accuracy of robust minus {base} "
                    f"at {b} queries",
                )
            )

    print_table(figures, title="Active selection on MNIST-1D")
    write_results(
        "active_selection",
        figures,
        args,
        extra={
            "setup": {
                "data": "MNIST-1D (seed = run seed): teacher on 1,000 "
                "labels, validation 500, pool "
                f"{pool or 45000}, test 5,000",
                "teacher": "CNN width 32, 60 epochs, Adam 2e-3",
                "student": "CNN width 16, Adam 3e-3, CE on teacher probs",
                "budgets": list(budgets),
                "queries_per_round": per_round,
                "epochs_per_round": epochs_per_round,
                "steps_per_epoch": -(-budget // 128),
                "batch_size": 128,
                "seeds": seeds,
            },
            "curves": curves,
        },
    )


if __name__ == "__main__":
    main()
