"""Distillation with unlabeled examples: soft/hard KD vs debiased vs SLaM.

Run it with any backend (a full run: 10.9 min on a 2-core CPU with JAX):

    KERAS_BACKEND=jax python examples/slam_distillation.py

(On a busy machine with few cores, run torch with `OMP_NUM_THREADS=1`: its
OpenMP threads otherwise spin against the other processes and a step can
take 20x longer.)

The setting (spec "Distillation with unlabeled examples"): a small labeled
set L, a labeled validation set V of 500 examples, a large unlabeled pool U
and a small student. A CNN teacher is trained on the ~1,000 labels of L; it
labels the ~45,000 examples of U, and is wrong on some of them. The student
only sees U through the teacher. We compare, on the same data, from the same
initialisation and for the same number of steps:

- **labels only**: the student trained on L with its true labels (what the
  student can do without a teacher);
- **soft KD**: cross-entropy against the teacher's probabilities
  (`KnowledgeDistillationLoss(temperature=1)`, i.e. the same target as the
  two methods below, without any correction);
- **hard KD**: cross-entropy against the teacher's top-1 label;
- **debiased**: `DebiasedDistillationLoss`, each example's soft-KD term
  weighted by the estimated teacher accuracy alpha(x), normalised to mean 1
  over the pool (Iliopoulos et al., NeurIPS 2022);
- **SLaM**: `SLaMLoss`, the student fits a mixture of its own prediction that
  models how the teacher errs (Kontonis et al., NeurIPS 2023), with soft and
  with hard (`target="hard"`) teacher labels;
- **oracle**: the student trained on the pool's *true* labels, a reference
  that no method can use, shown only to bound what the student can reach.

Both debiased distillation and SLaM use a `TeacherAccuracy` estimator fitted
on V: isotonic regression of "the teacher's top-1 is right" on the teacher's
margin. Its reliability plot (the teacher's accuracy against its confidence
on the test set, and alpha(margin)) is saved to
`examples/output/slam_distillation.png`.

Why this student. The comparison only means something if the student is
limited by the teacher's labels, not by its own capacity: a student that
cannot fit the task even with perfect labels gains nothing from better
labels, and every method ties. The student here is the teacher's
architecture at a quarter of the width (three 16-channel convolutions and a
global max-pool, ~2.8k parameters against the teacher's ~42k). With the
pool's true labels it reaches ~97% test accuracy, well above the teacher
(~94% on 1,000 labels), so the gap between the oracle row and the
distillation rows is the cost of the teacher's mistakes, which is what the
losses try to reduce. A plain MLP would not do: the published MLP reaches
~68% on 4,000 MNIST-1D labels against the CNN's ~94%, so an MLP student
would be limited by its architecture, not by the teacher's labels.

What to expect. The teacher's mistakes on MNIST-1D are few and systematic
(the pool examples it gets wrong look like the class it predicts), so every
distillation row lands close to the teacher's own accuracy, and the
differences between the losses are a fraction of a point on one seed: read
them with the spread over seeds that `benchmarks/distillation.py` measures.
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
from keras import layers  # noqa: E402

from keras_efficient.datasets import load_mnist1d_splits  # noqa: E402
from keras_efficient.distillation import PseudoLabelLoss  # noqa: E402
from keras_efficient.losses import DebiasedDistillationLoss  # noqa: E402
from keras_efficient.losses import KnowledgeDistillationLoss  # noqa: E402
from keras_efficient.losses import SLaMLoss  # noqa: E402
from keras_efficient.losses import TeacherAccuracy  # noqa: E402

NUM_CLASSES = 10
TEACHER_WIDTH = 64
STUDENT_WIDTH = 16
METHODS = (
    "labels_only",
    "soft_kd",
    "hard_kd",
    "debiased",
    "slam",
    "slam_hard",
    "pseudo_label",
    "oracle",
)
JIT = keras.backend.backend() != "torch"
OUTPUT_DIR = os.path.join(os.path.dirname(__file__), "output")


def build_cnn(width, seed, name):
    """A small 1-D CNN: three convolutions and a global max-pool.

    The global pool makes it robust to where a digit's pattern sits in the
    sequence, which MNIST-1D shifts at random.
    """
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((40, 1)),
            layers.Conv1D(width, 5, padding="same", activation="relu"),
            layers.Conv1D(width, 5, padding="same", activation="relu"),
            layers.MaxPooling1D(2),
            layers.Conv1D(width, 5, padding="same", activation="relu"),
            layers.GlobalMaxPooling1D(),
            layers.Dense(NUM_CLASSES),  # logits
        ],
        name=name,
    )


def fit(model, x, y, loss, seed, epochs, batch_size, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=loss,
        jit_compile=JIT,
    )
    keras.utils.set_random_seed(seed)  # Same shuffling for every method.
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    return model


def accuracy(model, x, y):
    logits = model.predict(x, batch_size=1024, verbose=0)
    return float((np.argmax(logits, axis=-1) == y).mean())


def train_teacher(splits, seed, epochs=60):
    """The teacher: the CNN at width 64, trained on L only."""
    x, y = splits.labeled
    teacher = build_cnn(TEACHER_WIDTH, seed, "teacher")
    return fit(
        teacher,
        x,
        y,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        seed,
        epochs=epochs,
        batch_size=64,
        learning_rate=3e-3,
    )


def softmax(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(axis=-1, keepdims=True)).astype("float32")


def student_setup(method, pool_logits, estimator):
    """(targets, loss) for a distillation method on the teacher's outputs."""
    pool_probs = softmax(pool_logits)
    if method == "soft_kd":
        return pool_logits, KnowledgeDistillationLoss(temperature=1.0)
    if method == "hard_kd":
        return (
            pool_probs.argmax(-1),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    if method == "debiased":
        # The normaliser (mean weight over the pool) is computed once here.
        loss = DebiasedDistillationLoss(
            estimator, pool_teacher_outputs=pool_probs
        )
        return pool_probs, loss
    if method == "slam":
        return pool_probs, SLaMLoss(teacher_accuracy=estimator)
    if method == "slam_hard":
        return pool_probs, SLaMLoss(teacher_accuracy=estimator, target="hard")
    if method == "pseudo_label":
        # Teacher top-1 where its max probability >= 0.9, weight 0 elsewhere.
        return pool_probs, PseudoLabelLoss(threshold=0.9)
    raise ValueError(f"Unknown distillation method {method!r}.")


def run_comparison(
    splits,
    seed=0,
    methods=METHODS,
    teacher_epochs=60,
    student_epochs=6,
    labels_only_epochs=60,
    verbose=True,
):
    """Trains the teacher and one student per method; returns the results.

    Every student starts from the same initialisation (`seed + 1`) and sees
    its data in the same order. Pool students train for `student_epochs`
    epochs of batch 256; the labels-only student, which has far fewer
    examples, trains with the teacher's recipe (batch 64,
    `labels_only_epochs` epochs).

    Returns:
        A dict with `accuracy` (method -> test accuracy, plus `teacher`),
        `teacher_pool_accuracy`, `estimator` (the fitted `TeacherAccuracy`),
        `k` (SLaM's k from the coverage rule), `teacher_test_probs` and
        `seconds` (method -> training time).
    """
    x_val, y_val = splits.validation
    x_pool, y_pool = splits.unlabeled
    x_test, y_test = splits.test
    teacher = train_teacher(splits, seed, teacher_epochs)
    pool_logits = np.asarray(
        teacher.predict(x_pool, batch_size=1024, verbose=0)
    )
    val_logits = np.asarray(teacher.predict(x_val, batch_size=1024, verbose=0))
    test_logits = np.asarray(
        teacher.predict(x_test, batch_size=1024, verbose=0)
    )
    estimator = TeacherAccuracy().fit(val_logits, y_val, from_logits=True)
    results = {
        "accuracy": {"teacher": accuracy(teacher, x_test, y_test)},
        "teacher_pool_accuracy": float(
            (pool_logits.argmax(-1) == y_pool).mean()
        ),
        "estimator": estimator,
        "k": SLaMLoss(teacher_accuracy=estimator).resolved_k(NUM_CLASSES),
        "teacher_test_probs": softmax(test_logits),
        "seconds": {},
    }
    if verbose:
        print(
            f"teacher: test accuracy {results['accuracy']['teacher']:.4f}, "
            f"pool accuracy {results['teacher_pool_accuracy']:.4f}, "
            f"top-k accuracy on V "
            f"{[round(a, 3) for a in estimator.topk_accuracy[:4]]}, "
            f"SLaM k = {results['k']}",
            flush=True,
        )
    sparse_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for method in methods:
        start = time.perf_counter()
        student = build_cnn(STUDENT_WIDTH, seed + 1, f"student_{method}")
        if method == "labels_only":
            x, y = splits.labeled
            fit(student, x, y, sparse_ce, seed, labels_only_epochs, 64, 3e-3)
        elif method == "oracle":
            fit(
                student,
                x_pool,
                y_pool,
                sparse_ce,
                seed,
                student_epochs,
                256,
                2e-3,
            )
        else:
            targets, loss = student_setup(method, pool_logits, estimator)
            fit(student, x_pool, targets, loss, seed, student_epochs, 256, 2e-3)
        results["accuracy"][method] = accuracy(student, x_test, y_test)
        results["seconds"][method] = time.perf_counter() - start
        if verbose:
            print(
                f"  {method:<12} test accuracy "
                f"{results['accuracy'][method]:.4f} "
                f"({results['seconds'][method]:.0f} s)",
                flush=True,
            )
    return results


def main(quick=False):
    # Data: 1,000 labels for the teacher, 500 for V, a pool of 46,000
    # unlabeled examples and 5,000 test examples (generated offline by the
    # `mnist1d` package, cached on disk after the first run). `--quick`:
    # a smoke run on small splits with few epochs (numbers meaningless).
    splits = load_mnist1d_splits(
        num_labeled=200 if quick else 1000,
        num_validation=200 if quick else 500,
        num_unlabeled=256 if quick else 46000,
        num_test=256 if quick else 5000,
        seed=0,
    )
    print(f"backend: {keras.backend.backend()}")
    epochs = {}
    if quick:
        epochs = dict(
            teacher_epochs=1,
            student_epochs=1,
            labels_only_epochs=1,
            methods=("soft_kd", "debiased", "slam", "pseudo_label"),
        )
    results = run_comparison(splits, seed=0, **epochs)

    print("\nstudent test accuracy (teacher CNN on 1,000 labels)")
    labels = {
        "teacher": "teacher (reference)",
        "labels_only": "student, labels only",
        "soft_kd": "soft KD",
        "hard_kd": "hard KD",
        "debiased": "debiased distillation",
        "slam": "SLaM (soft target)",
        "slam_hard": "SLaM (hard target)",
        "pseudo_label": "pseudo-labels (p >= 0.9)",
        "oracle": "oracle: true pool labels",
    }
    soft = results["accuracy"]["soft_kd"]
    for name, acc in results["accuracy"].items():
        delta = "" if name in ("teacher", "soft_kd") else f"{acc - soft:+.4f}"
        print(f"  {labels[name]:<26} {acc:.4f}  {delta}")
    print("  (last column: difference to soft KD)")

    # The teacher's calibration, measured on the test set.
    estimator = results["estimator"]
    _, y_test = splits.test
    report = estimator.report(results["teacher_test_probs"], y_test)
    print(
        f"\nteacher calibration on test: ECE of its top-1 probability "
        f"{report['ece']:.4f}, of the fitted alpha "
        f"{report['ece_estimator']:.4f}"
    )
    try:
        os.makedirs(OUTPUT_DIR, exist_ok=True)
        path = os.path.join(OUTPUT_DIR, "slam_distillation.png")
        estimator.plot(results["teacher_test_probs"], y_test, path=path)
        print(f"reliability plot: {path}")
    except ImportError:
        print("(install matplotlib for the reliability plot)")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run, well under 1 min"
    )
    main(quick=parser.parse_args().quick)
    if "--quick" in sys.argv[1:]:
        print(
            "\n(smoke run, --quick: tiny data and a few steps; the figures "
            "above only show that the script runs, not how the method does)"
        )
