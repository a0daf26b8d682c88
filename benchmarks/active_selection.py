"""Active selection benchmark: student accuracy against the teacher budget.

Every strategy of `ActiveDistillation` (uniform, margin, entropy, robust,
sleeping_experts, coreset, badge, bald) trains the same student from the
same initial weights for the same number of steps on a noisy teacher's
answers; only which pool points are sent to the teacher differs. Per seed s:

- MNIST-1D generated with seed s: labeled 2,000 (the teacher uses the
  first 1,000), validation 500, a pool and a test set of 5,000; a CNN
  teacher (width 32, 60 epochs) on the 1,000 labels, right on about 3 of 4
  points (deliberately noisy: RAD's setting);
- the teacher's accuracy on the 500 validation labels is the estimate
  `robust` (RAD) needs for its adversary's budget
  (`RobustSelection(teacher_accuracy=...)`); it is measured here once, so
  the callback sends the teacher pool points only;
- per strategy one student (CNN width 16, dropout 0.25 before its last
  layer so that `bald` has MC-dropout passes; the same student, initial
  weights and dropout RNG for every strategy): round 0 (500 points) is
  uniform for every strategy, then rounds of 500 selected points, one
  epoch of `ceil(max budget / 128)` steps after each round; test accuracy
  after the training that follows the round reaching each budget (so at
  budget 1,000 half the points were selected);
- the teacher is wrapped in a counter: the benchmark asserts that it saw at
  most the budget (and that the callback's ledger agrees);
- "full pool" reference: the same student trained for the same total
  number of steps on the teacher's answers for the whole pool (what an
  unlimited budget buys; it shows the task is not saturated at the
  smallest budget).

Reported (`benchmarks/common.py`): per strategy and budget the per-seed
test accuracies with mean, std and 95% interval; per budget the paired
differences `paired/<strategy>-uniform/budget_<b>` and
`paired/robust-margin/budget_<b>` with their 95% interval and a verdict
(shown / not shown / contradicted); `paired/full_pool-uniform/...` at the
smallest and largest budget; the wall time of one selection per strategy
(median of repeats) and of the whole run.

Sizes: the default (CPU) mode uses a 20,000-point pool and budgets 1k, 2k,
4k, 6k, 5 seeds; about 35 minutes pinned to one CPU core shared with
another job (`taskset -c 1`).
`--quick` is a CI smoke run (tiny pool, 2 seeds). `--full` uses the
45,000-point pool and budgets 1k, 2k, 5k, 10k with 5 seeds, meant for one
GPU in under 10 minutes: it has NOT been run on a GPU yet, so that time is
an estimate; on CPU it writes `active_selection.full.json`.

No hyper-parameter is tuned per seed or per strategy.

    KERAS_BACKEND=jax python benchmarks/active_selection.py [--quick | --full]
        [--seeds N]
"""

import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import Progress  # noqa: E402
from benchmarks.common import accelerator_name  # noqa: E402
from benchmarks.common import figure  # noqa: E402
from benchmarks.common import median  # noqa: E402
from benchmarks.common import paired_difference  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from examples import active_distillation as tutorial  # noqa: E402
from keras_efficient.callbacks import ActiveDistillation  # noqa: E402
from keras_efficient.datasets import load_mnist1d_splits  # noqa: E402
from keras_efficient.distillation import BALDSelection  # noqa: E402
from keras_efficient.distillation import active as selection  # noqa: E402
from keras_efficient.distillation._common import np_probs  # noqa: E402

STRATEGIES = (
    "uniform",
    "margin",
    "entropy",
    "robust",
    "sleeping_experts",
    "coreset",
    "badge",
    "bald",
)

SIZES = {
    "quick": dict(
        labeled=200,
        validation=200,
        pool=1024,
        test=512,
        budgets=(128, 256),
        per_round=64,
        epochs_per_round=1,
        teacher_epochs=5,
        seeds=2,
        mc_passes=4,
        timing=(5000, 100, 1),
    ),
    "default": dict(
        labeled=2000,
        validation=500,
        pool=20000,
        test=5000,
        budgets=(1000, 2000, 4000, 6000),
        per_round=500,
        epochs_per_round=1,
        teacher_epochs=60,
        seeds=5,
        mc_passes=10,
        timing=(20000, 1000, 1),
    ),
    "full": dict(
        labeled=2000,
        validation=500,
        pool=45000,
        test=5000,
        budgets=(1000, 2000, 5000, 10000),
        per_round=500,
        epochs_per_round=1,
        teacher_epochs=60,
        seeds=5,
        mc_passes=10,
        timing=(100000, 1000, 3),
    ),
}
BATCH_SIZE = 128
STUDENT_WIDTH = 16
DROPOUT = 0.25


class CountingTeacher:
    """The teacher as a callable that counts the points it is sent."""

    def __init__(self, model):
        self.model = model
        self.points = 0

    def __call__(self, x):
        self.points += len(x)
        return self.model.predict_on_batch(x)


class MCDropout(keras.layers.Layer):
    """Dropout that is on in every call (MC-dropout passes for BALD)."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x):
        return keras.random.dropout(x, self.rate, seed=self.seed_generator)


class CompiledMCActiveDistillation(ActiveDistillation):
    """`ActiveDistillation` whose stochastic passes (BALD) run compiled.

    The library's passes call the student eagerly, one batch at a time,
    which costs about 0.3 s per 128-row batch on one shared CPU core here
    (over 7 minutes per round for a 20,000-point pool and 10 passes). This
    computes the same quantity, T passes of the student with its dropout
    on, through a compiled `predict` of a model that shares the student's
    layers and replaces its `Dropout` with one that is always on. The BALD
    scores and selection are the library's.
    """

    def _mc_probabilities(self, idx, num_passes):
        if getattr(self, "_mc_model", (None,))[0] is not self.model:
            inputs = keras.Input(self.model.inputs[0].shape[1:])
            x = inputs
            for layer in self.model.layers[1:]:
                if isinstance(layer, keras.layers.Dropout):
                    x = MCDropout(layer.rate, seed=self.seed)(x)
                else:
                    x = layer(x)
            self._mc_model = (self.model, keras.Model(inputs, x))
        x = self.pool[idx]
        passes = [
            self._predict(self._mc_model[1], x) for _ in range(num_passes)
        ]
        return np.stack([np_probs(p, self.from_logits) for p in passes])


def build_student(seed):
    """The tutorial's CNN (width 16) with dropout before its last layer."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((40, 1))
    x = keras.layers.Conv1D(
        STUDENT_WIDTH, 5, padding="same", activation="relu"
    )(inputs)
    x = keras.layers.Conv1D(STUDENT_WIDTH, 5, strides=2, activation="relu")(x)
    x = keras.layers.Conv1D(STUDENT_WIDTH, 3, strides=2, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu", name="embedding")(x)
    x = keras.layers.Dropout(DROPOUT)(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    return model


class Student:
    """One compiled student per seed, reset to its initial state per run.

    Every run starts from the same weights, optimizer state and dropout
    RNG state (as a fresh `build_student(seed)` would), but the model is
    compiled once: a new model per strategy would trace and compile its
    train and predict functions again each time.
    """

    def __init__(self, seed):
        self.model = build_student(seed)
        self.model.optimizer.build(self.model.trainable_variables)
        self.initial = [
            keras.ops.convert_to_numpy(v) for v in self.model.variables
        ]
        self.initial_optimizer = [
            keras.ops.convert_to_numpy(v)
            for v in self.model.optimizer.variables
        ]

    def fresh(self):
        for v, w in zip(self.model.variables, self.initial):
            v.assign(w)
        for v, w in zip(self.model.optimizer.variables, self.initial_optimizer):
            v.assign(w)
        return self.model


def test_accuracy(model, test):
    logits = model.predict(test[0], batch_size=1024, verbose=0)
    return float((np.asarray(logits).argmax(1) == test[1]).mean())


def make_strategy(name, teacher_accuracy, mc_passes):
    if name == "robust":
        # RAD's adversary budget needs the teacher's accuracy: the estimate
        # from the labeled validation set.
        return selection.RobustSelection(teacher_accuracy=teacher_accuracy)
    if name == "bald":
        return BALDSelection(num_passes=mc_passes)
    return selection.get(name)


def run_strategy(name, splits, teacher_model, tacc, seed, size, student):
    """One student trained with `name`; `{budget: test accuracy}`."""
    budgets = size["budgets"]
    budget = max(budgets)
    epr = size["epochs_per_round"]
    teacher = CountingTeacher(teacher_model)
    student = student.fresh()
    active = CompiledMCActiveDistillation(
        splits.unlabeled[0],
        teacher,
        budget=budget,
        queries_per_round=size["per_round"],
        strategy=make_strategy(name, tacc, size["mc_passes"]),
        epochs_per_round=epr,
        batch_size=BATCH_SIZE,
        steps_per_epoch=-(-budget // BATCH_SIZE),
        embedding_layer="embedding",
        teacher_output_shape=(10,),
        seed=seed,
    )
    record = tutorial.AccuracyAtRounds(active, splits.test, epr)
    rounds = -(-budget // size["per_round"])
    student.fit(
        active.dataset,
        epochs=rounds * epr,
        callbacks=[record, active],
        verbose=0,
    )
    # Never overspend: the teacher saw at most the budget, and the
    # callback's write-ahead ledger counts the same points.
    assert teacher.points <= budget, (name, teacher.points, budget)
    assert active.state.queries_spent == teacher.points, (
        name,
        active.state.queries_spent,
        teacher.points,
    )
    assert active.queries_used <= budget
    missing = [b for b in budgets if b not in record.accuracy]
    assert not missing, f"no accuracy recorded at budgets {missing}"
    return {b: record.accuracy[b] for b in budgets}, teacher.points


def run_full_pool(splits, teacher_model, seed, size, student):
    """The same student, steps and batch size on the whole labelled pool."""
    budget = max(size["budgets"])
    steps = (
        -(-budget // size["per_round"])
        * size["epochs_per_round"]
        * -(-budget // BATCH_SIZE)
    )
    x = splits.unlabeled[0]
    y = teacher_model.predict(x, batch_size=1024, verbose=0)
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [
            rng.permutation(len(x))
            for _ in range(-(-steps * BATCH_SIZE // len(x)))
        ]
    )[: steps * BATCH_SIZE]
    student = student.fresh()
    student.fit(
        x[order],
        y[order],
        batch_size=BATCH_SIZE,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    return test_accuracy(student, splits.test)


def time_selection(n, b, repeats, mc_passes, seed=0):
    """Median seconds of one `select` of `b` from `n` points per strategy."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(10, 0.3), size=n)
    mc = rng.dirichlet(np.full(10, 0.3), size=(mc_passes, n))
    emb = rng.normal(size=(n, 32)).astype("float32")
    out = {}
    progress = Progress(STRATEGIES, "strategy")
    for name in progress:
        times = []
        for r in range(repeats):
            strategy = make_strategy(name, 0.65, mc_passes)
            context = selection.SelectionContext(
                probs,
                embeddings=emb,
                mc_probabilities=mc,
                indices=np.arange(n),
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
    wall_start = time.perf_counter()
    args = parse_args(
        __doc__.splitlines()[0],
        full_help="45,000-point pool, budgets up to 10k (meant for one GPU)",
    )
    mode = "quick" if args.quick else "full" if args.full else "default"
    size = SIZES[mode]
    seeds = args.seeds or size["seeds"]
    budgets = size["budgets"]

    figures = []
    n, b, repeats = size["timing"]
    timing = time_selection(n, b, repeats, size["mc_passes"])
    for name in STRATEGIES:
        figures.append(
            figure(
                f"selection_seconds/{name}",
                median(timing[name]),
                unit="s",
                note=f"one select of {b} from {n} points, median of {repeats}",
            )
        )

    accuracy = {(s, q): [] for s in STRATEGIES for q in budgets}
    full_pool, seed_seconds = [], []
    teacher_acc = {"pool": [], "validation": [], "test": []}
    curves = {s: [] for s in STRATEGIES}
    runs = Progress(range(seeds), "seed")
    for seed in runs:
        seed_start = time.perf_counter()
        splits = load_mnist1d_splits(
            size["labeled"],
            size["validation"],
            size["pool"],
            size["test"],
            seed=seed,
        )
        teacher, tacc = tutorial.train_teacher(
            splits,
            seed,
            num_labels=min(1000, size["labeled"]),
            epochs=size["teacher_epochs"],
        )
        for k, v in tacc.items():
            teacher_acc[k].append(v)
        student = Student(seed)
        full_pool.append(run_full_pool(splits, teacher, seed, size, student))
        runs.log(
            f"seed {seed} teacher accuracy pool {tacc['pool']:.4f} "
            f"validation {tacc['validation']:.4f} test {tacc['test']:.4f}; "
            f"full-pool student {full_pool[-1]:.4f} "
            f"({time.perf_counter() - seed_start:.0f} s)"
        )
        for name in STRATEGIES:
            start = time.perf_counter()
            acc, spent = run_strategy(
                name, splits, teacher, tacc["validation"], seed, size, student
            )
            curves[name].append({str(q): a for q, a in acc.items()})
            for q in budgets:
                accuracy[(name, q)].append(acc[q])
            runs.log(
                f"seed {seed} {name:<17} "
                + "  ".join(f"{q}: {acc[q]:.4f}" for q in budgets)
                + f"  (teacher saw {spent}; "
                f"{time.perf_counter() - start:.0f} s)"
            )
        seed_seconds.append(time.perf_counter() - seed_start)
        keras.backend.clear_session()

    for k, v in teacher_acc.items():
        figures.append(figure(f"teacher_accuracy/{k}", v))
    figures.append(
        figure(
            "test_accuracy/full_pool",
            full_pool,
            note="student trained on the teacher's answers for the whole "
            "pool, same steps as the largest budget",
        )
    )
    for q in budgets:
        for name in STRATEGIES:
            figures.append(
                figure(f"test_accuracy/{name}/budget_{q}", accuracy[(name, q)])
            )
    for q in budgets:
        base = accuracy[("uniform", q)]
        for name in STRATEGIES[1:]:
            figures.append(
                paired_difference(
                    f"paired/{name}-uniform/budget_{q}",
                    accuracy[(name, q)],
                    base,
                )
            )
        figures.append(
            paired_difference(
                f"paired/robust-margin/budget_{q}",
                accuracy[("robust", q)],
                accuracy[("margin", q)],
            )
        )
    for q in sorted({min(budgets), max(budgets)}):
        figures.append(
            paired_difference(
                f"paired/full_pool-uniform/budget_{q}",
                full_pool,
                accuracy[("uniform", q)],
            )
        )
    figures.append(figure("seed_seconds", seed_seconds, unit="s"))
    wall = time.perf_counter() - wall_start
    figures.append(figure("wall_seconds", wall, unit="s"))

    print_table(figures, title="Active selection on MNIST-1D")
    for f in figures:
        if "verdict" in f:
            lo, hi = f["ci95"]
            print(
                f"{f['name']:<42} {f['mean']:+.4f} [{lo:+.4f}, {hi:+.4f}] "
                f"{f['verdict']}"
            )
    name = "active_selection"
    if mode == "full" and accelerator_name() == "cpu":
        name += ".full"
    budget = max(budgets)
    write_results(
        name,
        figures,
        args,
        extra={
            "size": mode,
            "wall_seconds": wall,
            "setup": {
                "data": f"MNIST-1D (seed = run seed): labeled "
                f"{size['labeled']} (teacher on the first "
                f"{min(1000, size['labeled'])}), validation "
                f"{size['validation']}, pool {size['pool']}, test "
                f"{size['test']}",
                "teacher": f"CNN width 32, {size['teacher_epochs']} epochs, "
                "Adam 2e-3",
                "student": f"CNN width {STUDENT_WIDTH}, dropout {DROPOUT} "
                "before the last layer, Adam 3e-3, CE on teacher probs",
                "strategies": list(STRATEGIES),
                "robust_teacher_accuracy": "teacher accuracy on the "
                "validation set",
                "bald_passes": size["mc_passes"],
                "budgets": list(budgets),
                "queries_per_round": size["per_round"],
                "epochs_per_round": size["epochs_per_round"],
                "steps_per_epoch": -(-budget // BATCH_SIZE),
                "batch_size": BATCH_SIZE,
                "seeds": seeds,
            },
            "curves": curves,
        },
    )


if __name__ == "__main__":
    main()
