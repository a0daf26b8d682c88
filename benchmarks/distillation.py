"""Distillation benchmark: SLaM, debiased and pseudo-labels vs soft KD.

MNIST-1D, with the teacher and student CNNs of
`examples/slam_distillation.py`. Per seed s (data generated with seed s):
a labeled set L, a validation set V (512), an unlabeled pool U and a test
set, all disjoint. Conditions:

- labeled-set size: a CNN teacher (width 64) trained on the first
  250, 1,000 or 4,000 examples of L (`labels_N`);
- teacher accuracy: at 1,000 labels, the same teacher run stopped after 1,
  2 or 4 epochs (`teacher_acc_55`, `_70`, `_85`: nominal accuracies; the
  measured ones are `teacher_accuracy/...`, per seed). The weakest is the
  case where the old global-k SLaM collapsed (0.22 vs soft KD 0.46).

Per condition, a `TeacherAccuracy` estimator is fitted on V and four
students (the CNN at width 8) are distilled on U: soft KD
(`KnowledgeDistillationLoss(temperature=1)`, the baseline), `SLaMLoss`
(fitted estimator, per-example k(x)), `DebiasedDistillationLoss` (weights
normalised over U through `pool_teacher_outputs`) and `PseudoLabelLoss`
(teacher top-1 where its probability >= 0.9). The four students are four
branches of one Keras model, compiled with one loss per output: the
total loss is a sum of per-branch terms over disjoint weights, so their
gradients never mix and each has its own Adam state; they start from the
same initialisation and see the same batches (one XLA compilation per
condition instead of four).

Recorded: per-seed test accuracies (mean, std, 95% interval); the paired
difference of each method minus soft KD per condition with its interval
and verdict (shown / not shown / contradicted); two sanity checks that the
task is not saturated (teacher minus soft-KD student > 0, and a stronger
teacher gives a better soft-KD student); the fraction of U the
pseudo-labels keep and the mean k(x) of SLaM. No hyper-parameter is tuned
per seed, condition or method. Step times are measured by
`benchmarks/overhead.py`, not here.

Modes: default (CPU): pool 10,240, teacher 30 epochs, students 10 epochs;
44 minutes wall (2,633 s) measured with JAX pinned to one CPU core that
two to three other benchmark processes shared. `--quick`: one seed, two
conditions, a tiny pool and 2 student epochs, a smoke test whose students
stay near chance (44 s of CPU time, 3 minutes wall on that shared core).
`--full`: pool 40,960, teacher 60 epochs, students 20 epochs, labels up to
8,000; meant for one GPU in <= 10 minutes, written to
`distillation.full[.gpu].json`. It has NOT been run on a GPU: its time
there is an estimate.

    KERAS_BACKEND=jax python benchmarks/distillation.py [--quick|--full]
        [--seeds N]
"""

import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import RESULTS_DIR  # noqa: E402
from benchmarks.common import Progress  # noqa: E402
from benchmarks.common import accelerator_name  # noqa: E402
from benchmarks.common import figure  # noqa: E402
from benchmarks.common import paired_difference  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from examples import slam_distillation as tutorial  # noqa: E402
from keras_efficient.datasets import load_mnist1d_splits  # noqa: E402
from keras_efficient.losses import DebiasedDistillationLoss  # noqa: E402
from keras_efficient.losses import KnowledgeDistillationLoss  # noqa: E402
from keras_efficient.losses import PseudoLabelLoss  # noqa: E402
from keras_efficient.losses import SLaMLoss  # noqa: E402
from keras_efficient.losses import TeacherAccuracy  # noqa: E402

STUDENTS = ("soft_kd", "slam", "debiased", "pseudo_label")
BASELINE = "soft_kd"
PSEUDO_LABEL_THRESHOLD = 0.9
TEACHER_BATCH = 50  # Divides every labeled-set size: no ragged last batch.
STUDENT_BATCH = 256
PREDICT_BATCH = 512

# Teacher-accuracy sweep: condition -> epochs of the 1,000-label teacher.
SWEEP = {"teacher_acc_55": 1, "teacher_acc_70": 2, "teacher_acc_85": 4}
SWEEP_LABELS = 1000

MODES = {
    # Sizes are multiples of the batch sizes so that every fit and predict
    # compiles once (a ragged last batch costs a second XLA compilation).
    "quick": dict(
        labels=(250,),
        sweep=("teacher_acc_55",),
        pool=1024,
        test=1024,
        teacher_epochs=4,
        student_epochs=2,
        seeds=1,
    ),
    "default": dict(
        labels=(250, 1000, 4000),
        sweep=tuple(SWEEP),
        pool=10240,
        test=4096,
        teacher_epochs=30,
        student_epochs=10,
        seeds=5,
    ),
    "full": dict(
        labels=(250, 1000, 4000, 8000),
        sweep=tuple(SWEEP),
        pool=40960,
        test=8192,
        teacher_epochs=60,
        student_epochs=20,
        seeds=5,
    ),
}
VALIDATION = 512
STUDENT_WIDTH = 8


def conditions(mode):
    """[(name, labels, teacher_epochs)] of a mode, in training order."""
    out = [(f"labels_{n}", n, mode["teacher_epochs"]) for n in mode["labels"]]
    for name in mode["sweep"]:
        out.append((name, SWEEP_LABELS, SWEEP[name]))
    return out


def predict(model, x):
    return np.asarray(model.predict(x, batch_size=PREDICT_BATCH, verbose=0))


def train_teachers(splits, labels, epochs, seed):
    """One teacher run on the first `labels` examples of L, snapshotted.

    Returns {epochs: (val_logits, pool_logits, test_logits)} for each
    requested number of epochs (the run continues from one to the next).
    """
    x, y = splits.labeled
    teacher = tutorial.build_cnn(tutorial.TEACHER_WIDTH, seed, "teacher")
    teacher.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=tutorial.JIT,
    )
    keras.utils.set_random_seed(seed)
    snapshots, done = {}, 0
    for target in sorted(set(epochs)):
        teacher.fit(
            x[:labels],
            y[:labels],
            batch_size=TEACHER_BATCH,
            epochs=target - done,
            verbose=0,
        )
        done = target
        snapshots[target] = tuple(
            predict(teacher, part[0])
            for part in (splits.validation, splits.unlabeled, splits.test)
        )
    return snapshots


def student_losses(estimator, pool_probs):
    return {
        "soft_kd": KnowledgeDistillationLoss(
            temperature=1.0, teacher_from_logits=False
        ),
        "slam": SLaMLoss(teacher_accuracy=estimator),
        "debiased": DebiasedDistillationLoss(
            estimator, pool_teacher_outputs=pool_probs
        ),
        "pseudo_label": PseudoLabelLoss(threshold=PSEUDO_LABEL_THRESHOLD),
    }


def build_students(input_shape, losses, seed):
    """One model whose outputs are one student per loss, compiled.

    Every branch is built from the same seed (the same initialisation);
    the total loss is a sum of per-branch terms over disjoint weights, so
    each branch trains as it would alone.
    """
    branches = [
        tutorial.build_cnn(STUDENT_WIDTH, seed + 1, f"student_{m}")
        for m in losses
    ]
    inputs = keras.Input(input_shape)
    students = keras.Model(inputs, [b(inputs) for b in branches])
    students.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=list(losses.values()),
        jit_compile=tutorial.JIT,
    )
    return students


def distill(splits, snapshot, seed, epochs):
    """Trains the four students on one teacher's outputs; returns results."""
    val_logits, pool_logits, test_logits = snapshot
    (_, y_val), (x_pool, y_pool), (x_test, y_test) = (
        splits.validation,
        splits.unlabeled,
        splits.test,
    )
    pool_probs = tutorial.softmax(pool_logits)
    estimator = TeacherAccuracy().fit(val_logits, y_val, from_logits=True)
    losses = student_losses(estimator, pool_probs)
    students = build_students(x_pool.shape[1:], losses, seed)
    keras.utils.set_random_seed(seed)
    students.fit(
        x_pool,
        [pool_probs] * len(STUDENTS),
        batch_size=STUDENT_BATCH,
        epochs=epochs,
        verbose=0,
    )
    outputs = students.predict(x_test, batch_size=PREDICT_BATCH, verbose=0)
    result = {
        m: float((np.argmax(out, -1) == y_test).mean())
        for m, out in zip(losses, outputs)
    }
    result["teacher"] = float((test_logits.argmax(-1) == y_test).mean())
    result["teacher_pool"] = float((pool_logits.argmax(-1) == y_pool).mean())
    result["pseudo_label_kept"] = float(
        (pool_probs.max(-1) >= PSEUDO_LABEL_THRESHOLD).mean()
    )
    k = losses["slam"].example_k(keras.ops.convert_to_tensor(pool_probs))
    result["slam_mean_k"] = float(keras.ops.mean(keras.ops.cast(k, "float32")))
    return result


def summarise(runs, conds):
    """Figures from runs[(condition, key)] = [per-seed values]."""
    figures = []
    for name, labels, epochs in conds:
        where = f"{labels} labels, teacher {epochs} epochs"
        figures.append(
            figure(
                f"teacher_accuracy/{name}",
                runs[(name, "teacher")],
                note=f"teacher test accuracy ({where})",
            )
        )
        figures.append(
            figure(
                f"teacher_pool_accuracy/{name}",
                runs[(name, "teacher_pool")],
                note="teacher top-1 accuracy on the pool",
            )
        )
        for m in STUDENTS:
            figures.append(figure(f"test_accuracy/{name}/{m}", runs[(name, m)]))
        for m in STUDENTS[1:]:
            figures.append(
                paired_difference(
                    f"paired/{m}-{BASELINE}/{name}",
                    runs[(name, m)],
                    runs[(name, BASELINE)],
                )
            )
        figures.append(
            paired_difference(
                f"check/teacher-{BASELINE}/{name}",
                runs[(name, "teacher")],
                runs[(name, BASELINE)],
            )
        )
        figures.append(
            figure(
                f"pseudo_label_kept/{name}",
                runs[(name, "pseudo_label_kept")],
                note=f"fraction of the pool with teacher max probability "
                f">= {PSEUDO_LABEL_THRESHOLD}",
            )
        )
        figures.append(
            figure(
                f"slam_mean_k/{name}",
                runs[(name, "slam_mean_k")],
                note="mean over the pool of SLaM's per-example k(x)",
            )
        )
    # A stronger teacher must give a better student, else the task is
    # saturated by the student (paired by seed, weakest vs strongest).
    for group in ("labels_", "teacher_acc_"):
        names = [c[0] for c in conds if c[0].startswith(group)]
        if len(names) < 2:
            continue
        weak, strong = (
            min(names, key=lambda n: np.mean(runs[(n, "teacher")])),
            max(names, key=lambda n: np.mean(runs[(n, "teacher")])),
        )
        figures.append(
            paired_difference(
                f"check/stronger_teacher/{BASELINE}/{strong}-{weak}",
                runs[(strong, BASELINE)],
                runs[(weak, BASELINE)],
            )
        )
    return figures


def main():
    args = parse_args(
        __doc__.splitlines()[0],
        full_help="GPU-sized run (bigger pool, more labels and epochs); "
        "results go to distillation.full[.gpu].json",
    )
    size = "quick" if args.quick else "full" if args.full else "default"
    mode = MODES[size]
    seeds = args.seeds or mode["seeds"]
    if args.full and not args.output:
        backend = keras.backend.backend()
        suffix = "" if backend == "jax" else f".{backend}"
        if accelerator_name() != "cpu":
            suffix += ".gpu"
        args.output = os.path.join(
            RESULTS_DIR, f"distillation.full{suffix}.json"
        )
    conds = conditions(mode)
    by_labels = {}
    for name, labels, epochs in conds:
        by_labels.setdefault(labels, []).append((name, epochs))
    # The sweep's labeled-set size first (it holds the most conditions),
    # then the others; results are written after each size, all seeds
    # done, so an interrupted run keeps whole conditions.
    order = sorted(by_labels, key=lambda n: (n != SWEEP_LABELS, n))
    start = time.perf_counter()
    runs, done = {}, []
    progress = Progress([(n, s) for n in order for s in range(seeds)], "run")
    for labels, seed in progress:
        splits = load_mnist1d_splits(
            num_labeled=max(by_labels),
            num_validation=VALIDATION,
            num_unlabeled=mode["pool"],
            num_test=mode["test"],
            seed=seed,
        )
        group = by_labels[labels]
        snapshots = train_teachers(splits, labels, [e for _, e in group], seed)
        for name, epochs in group:
            result = distill(
                splits, snapshots[epochs], seed, mode["student_epochs"]
            )
            for key, value in result.items():
                runs.setdefault((name, key), []).append(value)
            progress.log(
                f"seed {seed} {name}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in result.items())
                + f" ({time.perf_counter() - start:.0f} s)"
            )
        if seed == seeds - 1:
            done += [c for c in conds if c[1] == labels]
            figures = summarise(runs, [c for c in conds if c in done])
            write(args, figures, mode, size, conds, done, seeds, start)
    print_table(figures, title="Distillation on MNIST-1D")
    for f in figures:
        if "verdict" in f:
            low, high = f["ci95"]
            print(
                f"{f['name']}: {f['mean']:+.4f} [{low:+.4f}, {high:+.4f}] "
                f"{f['verdict']}"
            )


def write(args, figures, mode, size, conds, done, seeds, start):
    labels = max(c[1] for c in conds)
    write_results(
        "distillation",
        figures,
        args,
        extra={
            "setup": {
                "size": size,
                "data": "MNIST-1D (mnist1d make_dataset, seed = run seed): "
                f"L {labels} (a teacher uses its first N), "
                f"V {VALIDATION}, pool {mode['pool']}, test {mode['test']}",
                "conditions": {
                    name: {"labels": n, "teacher_epochs": epochs}
                    for name, n, epochs in conds
                },
                "completed_conditions": [c[0] for c in done],
                "teacher": "CNN 3x Conv1D(64) + global max-pool, Adam 3e-3, "
                f"batch {TEACHER_BATCH}, on the first N labels of L",
                "student": f"same CNN at width {STUDENT_WIDTH}, Adam 2e-3, "
                f"batch {STUDENT_BATCH}, {mode['student_epochs']} epochs "
                "on the pool; the four students are branches of one model",
                "soft_kd": "KnowledgeDistillationLoss(temperature=1) on "
                "teacher probabilities",
                "slam": "SLaMLoss(teacher_accuracy=estimator) (defaults)",
                "debiased": "DebiasedDistillationLoss(estimator, "
                "pool_teacher_outputs=pool probabilities)",
                "pseudo_label": "PseudoLabelLoss(threshold="
                f"{PSEUDO_LABEL_THRESHOLD})",
                "estimator": "TeacherAccuracy fitted on V (from_logits)",
                "seeds": seeds,
                "jit_compile": tutorial.JIT,
                "wall_seconds": round(time.perf_counter() - start, 1),
            },
        },
    )


if __name__ == "__main__":
    main()
