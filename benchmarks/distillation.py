"""Distillation benchmark: SLaM and debiased vs soft/hard KD on MNIST-1D.

Runs the comparison of `examples/slam_distillation.py` (the same teacher,
student, recipes and code) over seeds, at two labeled-set sizes:

- per seed s, MNIST-1D generated with seed s and split into L (2,000), V
  (500), a pool U (45,000) and a test set (5,000); the 500-label runs use
  the first 500 examples of the same L, so both sizes share V, U and test;
- per size, a CNN teacher (width 64) trained on L, a `TeacherAccuracy`
  estimator fitted on V, and one student (the same CNN at width 16) per
  method: labels only, soft KD, hard KD, debiased, SLaM (soft and hard
  target); plus, once per seed, an oracle student on the pool's true labels;
- test accuracy, mean and std over seeds, and the per-seed gain of SLaM and
  of debiased distillation over soft KD (the targets: SLaM >= soft KD + 1
  point, debiased >= soft KD);
- the train-step time of each loss relative to plain cross-entropy against
  the teacher's probabilities, for the student at batch 256, measured in one
  process by `compare_step_times` (target <= 1.05x).

No hyper-parameter is tuned per seed or per method.

    KERAS_BACKEND=jax python benchmarks/distillation.py [--quick] [--seeds N]
"""

import dataclasses
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
from examples import slam_distillation as tutorial  # noqa: E402
from keras_efficient.datasets import load_mnist1d_splits  # noqa: E402
from keras_efficient.losses import DebiasedDistillationLoss  # noqa: E402
from keras_efficient.losses import KnowledgeDistillationLoss  # noqa: E402
from keras_efficient.losses import SLaMLoss  # noqa: E402
from keras_efficient.losses import TeacherAccuracy  # noqa: E402

SIZES = (500, 2000)
METHODS = ("labels_only", "soft_kd", "hard_kd", "debiased", "slam", "slam_hard")


def step_times(splits, quick):
    """Step time of each loss vs plain cross-entropy, one process."""
    x_pool, _ = splits.unlabeled
    x_val, y_val = splits.validation
    # Any teacher will do for timing: a briefly trained one.
    teacher = tutorial.train_teacher(splits, seed=0, epochs=2)
    probs = tutorial.softmax(
        np.asarray(teacher.predict(x_pool, batch_size=1024, verbose=0))
    )
    est = TeacherAccuracy().fit(
        teacher.predict(x_val, verbose=0), y_val, from_logits=True
    )
    losses = {
        "cross_entropy": keras.losses.CategoricalCrossentropy(from_logits=True),
        "soft_kd": KnowledgeDistillationLoss(
            temperature=1.0, teacher_from_logits=False
        ),
        "debiased": DebiasedDistillationLoss(est, pool_teacher_outputs=probs),
        "slam": SLaMLoss(teacher_accuracy=est),
        "slam_hard": SLaMLoss(teacher_accuracy=est, target="hard"),
    }
    models = {}
    for name, loss in losses.items():
        model = tutorial.build_cnn(tutorial.STUDENT_WIDTH, 0, f"timed_{name}")
        model.compile(
            optimizer=keras.optimizers.Adam(2e-3),
            loss=loss,
            jit_compile=tutorial.JIT,
        )
        models[name] = model
    return compare_step_times(
        models,
        x_pool,
        probs,
        batch_size=256,
        # Long timed epochs (~0.5 s) so that fit's per-epoch overhead and
        # the noise of a shared machine do not swamp a 4 ms step.
        steps=5 if quick else 100,
        repeats=3 if quick else 9,
        baseline="cross_entropy",
    )


def main():
    args = parse_args(__doc__.splitlines()[0])
    quick = args.quick
    seeds = args.seeds or (1 if quick else 5)
    pool_size = 5000 if quick else 45000
    recipe = dict(
        teacher_epochs=15 if quick else 60,
        student_epochs=2 if quick else 6,
        labels_only_epochs=15 if quick else 60,
    )
    start = time.perf_counter()

    def load(seed):
        splits = load_mnist1d_splits(
            num_labeled=max(SIZES),
            num_validation=500,
            num_unlabeled=45000,
            num_test=5000,
            seed=seed,
        )
        x_pool, y_pool = splits.unlabeled
        return dataclasses.replace(
            splits, unlabeled=(x_pool[:pool_size], y_pool[:pool_size])
        )

    timing = step_times(load(0), quick)

    names = ("teacher",) + METHODS
    accuracy = {(n, m): [] for n in SIZES for m in names}
    teacher_pool = {n: [] for n in SIZES}
    slam_k = {n: [] for n in SIZES}
    oracle = []
    runs = Progress([(s, n) for s in range(seeds) for n in SIZES], "run")
    for seed, size in runs:
        if size == SIZES[0]:
            splits = load(seed)
        x_l, y_l = splits.labeled
        sub = dataclasses.replace(splits, labeled=(x_l[:size], y_l[:size]))
        methods = METHODS + (("oracle",) if size == SIZES[0] else ())
        runs.log(f"seed {seed}, {size} labels")
        # Its per-method lines at verbose 2 only (1 shows the bar).
        result = tutorial.run_comparison(
            sub,
            seed=seed,
            methods=methods,
            verbose=runs.verbose == 2,
            **recipe,
        )
        for m in names:
            accuracy[(size, m)].append(result["accuracy"][m])
        if "oracle" in result["accuracy"]:
            oracle.append(result["accuracy"]["oracle"])
        teacher_pool[size].append(result["teacher_pool_accuracy"])
        slam_k[size].append(result["k"])

    figures = []
    for size in SIZES:
        for m in names:
            figures.append(
                figure(f"test_accuracy/{size}_labels/{m}", accuracy[(size, m)])
            )
        figures.append(
            figure(
                f"teacher_pool_accuracy/{size}_labels",
                teacher_pool[size],
                note="teacher's top-1 accuracy on the unlabeled pool",
            )
        )
        soft = np.asarray(accuracy[(size, "soft_kd")])
        for m, target in (
            ("slam", (">=", 0.01)),
            ("slam_hard", None),
            ("debiased", (">=", 0.0)),
            ("hard_kd", None),
        ):
            figures.append(
                figure(
                    f"gain_over_soft_kd/{size}_labels/{m}",
                    (np.asarray(accuracy[(size, m)]) - soft).tolist(),
                    target=target,
                    note="per-seed test accuracy minus soft KD's",
                )
            )
    figures.append(
        figure(
            "test_accuracy/oracle_true_pool_labels",
            oracle,
            note="student on the pool's true labels (capacity reference)",
        )
    )
    for name in list(timing)[1:]:
        figures.append(
            figure(
                f"step_time_ratio/{name}",
                median(timing[name]["ratios"]),
                target=("<=", 1.05),
                unit="x",
                note="median of interleaved per-round ratios to "
                "categorical cross-entropy on teacher probabilities",
            )
        )

    print_table(figures, title="Distillation on MNIST-1D")
    write_results(
        "distillation",
        figures,
        args,
        extra={
            "setup": {
                "data": "MNIST-1D (mnist1d make_dataset, seed = run seed): "
                f"L {SIZES}, V 500, pool {pool_size}, test 5000",
                "teacher": "CNN 3x Conv1D(64) + global max-pool, Adam 3e-3, "
                f"batch 64, {recipe['teacher_epochs']} epochs on L",
                "student": "same CNN at width 16, Adam 2e-3, batch 256, "
                f"{recipe['student_epochs']} epochs on the pool "
                f"(labels only: batch 64, {recipe['labels_only_epochs']} "
                "epochs on L)",
                "soft_kd": "KnowledgeDistillationLoss(temperature=1)",
                "estimator": "TeacherAccuracy fitted on V (isotonic on margin)",
                "slam_k": {str(n): slam_k[n] for n in SIZES},
                "seeds": seeds,
                "jit_compile": tutorial.JIT,
                "wall_seconds": round(time.perf_counter() - start, 1),
            },
            "step_seconds": {n: timing[n]["step_seconds"] for n in timing},
        },
    )


if __name__ == "__main__":
    main()
