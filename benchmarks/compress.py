"""Prune, then distil: a half-width byte LM recovered from its teacher.

Per seed: train a `TransformerLM` teacher on stdlib bytes; cut it to half
its feed-forward width and half its heads (the hidden width follows the
heads on `TransformerLM`) with `keras_efficient.compress.compress`; then
spend the same student steps three ways: distilled from the teacher,
fine-tuned on labels, and the small config trained from scratch.

Figures (bits per byte on held-out bytes, paired by seed):

- pruned + distilled vs from scratch, and vs pruned + fine-tuned;
- the share of the pruned-only -> teacher gap that distillation closes
  (target >= 0.8);
- activation vs magnitude vs Taylor importance (pruned-only quality at
  the same widths);
- parameters (target <= 0.55x) and forward latency of the shrunk model vs
  the teacher at batch 1 and 32 (target >= 1.7x at batch 32 on JAX CPU).

`--latency-only` measures just the last two on any backend (the
half-width model of the same config, cut by magnitude: latency does not
depend on the weights' values) and writes `compress_latency[.BACKEND].json`:
per round, the teacher and the shrunk model each run a generation-length
forward (the full sequence), interleaved, and the round's ratio is one
value; the 1-minute load averages before and after go in the JSON.

`--full` is sized for one GPU (width 512, 6 layers, sequences of 256,
4000 teacher and 1500 student steps); it has not been run on this
project's CPU machines.

    KERAS_BACKEND=jax python benchmarks/compress.py [--quick | --full]
    KERAS_BACKEND=torch python benchmarks/compress.py --latency-only
"""

import os
import time

import common
import keras
import numpy as np

from keras_efficient.applications import TransformerLM
from keras_efficient.compress import compress
from keras_efficient.compress import make_distiller
from keras_efficient.datasets import lm_windows
from keras_efficient.datasets import load_stdlib_text

SIZES = {
    "quick": dict(hidden=16, layers=1, length=16, batch=4, teacher=4,
                  student=2, eval=16, seeds=2, rounds=2),
    "default": dict(hidden=64, layers=2, length=64, batch=16, teacher=400,
                    student=150, eval=128, seeds=5, rounds=10),
    "full": dict(hidden=512, layers=6, length=256, batch=32, teacher=4000,
                 student=1500, eval=512, seeds=5, rounds=30),
}  # fmt: skip
LM_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
RATIOS = dict(ffn_ratio=0.5, head_ratio=0.5, hidden_ratio=0.5)
IMPORTANCES = ("activation", "magnitude", "taylor")
DESIGN = (
    "One teacher, trained once (seed 0), is shared by every seed. Per seed "
    "the calibration windows, the student's training windows (and so its "
    "batch order) and the from-scratch initialisation change. The paired "
    "intervals cover that student-side variation given this teacher, not "
    "teacher-to-teacher variation. Every small model is trained and "
    "evaluated in one compiled model per role, its weights and Adam state "
    "reset per run (the same arithmetic as a fresh model; it saves the "
    "recompiles that dominate on a small CPU)."
)


def _jit():
    return keras.backend.backend() != "torch"


def _adam():
    return keras.optimizers.Adam(2e-3, global_clipnorm=1.0)


class _Reusable:
    """A compiled model (or Distiller) run again from given weights.

    `run(weights, x, y)` sets the student's weights, restores the
    optimizer's state right after build (zero moments and step: a fresh
    Adam) and fits: one compile for every run.
    """

    def __init__(self, trainer, student, batch):
        self.trainer, self.student, self.batch = trainer, student, batch
        trainer.optimizer.build(trainer.trainable_variables)
        self.fresh = [v.numpy() for v in trainer.optimizer.variables]

    def run(self, weights, x, y):
        self.student.set_weights(weights)
        for variable, value in zip(
            self.trainer.optimizer.variables, self.fresh
        ):
            variable.assign(value)
        self.trainer.fit(x, y, batch_size=self.batch, verbose=0, shuffle=False)
        return self.student.get_weights()


def _latency(models, x, rounds):
    """Median ms of `predict_on_batch(x)` per model, interleaved."""
    for model in models:
        model.predict_on_batch(x)
    times = [[] for _ in models]
    for _ in range(rounds):
        for t, model in zip(times, models):
            begin = time.perf_counter()
            model.predict_on_batch(x)
            t.append(time.perf_counter() - begin)
    return [float(np.median(t)) for t in times]


def train_teacher(size, train):
    keras.utils.set_random_seed(0)
    n, b = size["length"], size["batch"]
    x, y = lm_windows(train, n, size["teacher"] * b, seed=0)
    teacher = TransformerLM(
        vocabulary_size=256, sequence_length=n, hidden_dim=size["hidden"],
        num_layers=size["layers"], num_heads=4,
    )  # fmt: skip
    teacher.compile(optimizer=_adam(), loss=LM_LOSS, jit_compile=_jit())
    teacher.fit(x, y, batch_size=b, verbose=0, shuffle=False)
    return teacher


class Roles:
    """The compiled small models: evaluator, label trainer, distiller."""

    def __init__(self, teacher, small_config, batch):
        def small():
            return TransformerLM.from_config(small_config)

        self.evaluator = small()
        self.evaluator.compile(loss=LM_LOSS, jit_compile=_jit())
        labels = small()
        labels.compile(optimizer=_adam(), loss=LM_LOSS, jit_compile=_jit())
        self.labels = _Reusable(labels, labels, batch)
        student = small()
        distiller = make_distiller(teacher, student, temperature=1.0)
        distiller.compile(optimizer=_adam(), loss=LM_LOSS, jit_compile=_jit())
        self.distiller = _Reusable(distiller, student, batch)

    def bpb(self, weights, x, y):
        self.evaluator.set_weights(weights)
        loss = self.evaluator.evaluate(x, y, batch_size=64, verbose=0)
        return loss / np.log(2)


def run_seed(seed, size, data, teacher, roles):
    train, validation = data
    n, b = size["length"], size["batch"]
    x_c, y_c = lm_windows(train, n, 8 * b, seed=seed + 500)
    x_s, y_s = lm_windows(train, n, size["student"] * b, seed=seed + 1000)
    x_e, y_e = lm_windows(validation, n, size["eval"], seed=99)
    out = {
        "teacher": teacher.evaluate(x_e, y_e, batch_size=64, verbose=0)
        / np.log(2)
    }
    pruned = {}
    for importance in IMPORTANCES:
        pruned[importance] = compress(
            teacher, (x_c, y_c), importance=importance, batch_size=b, **RATIOS
        ).get_weights()
        out[f"pruned/{importance}"] = roles.bpb(pruned[importance], x_e, y_e)
    finetuned = roles.labels.run(pruned["activation"], x_s, y_s)
    out["finetuned"] = roles.bpb(finetuned, x_e, y_e)
    distilled = roles.distiller.run(pruned["activation"], x_s, y_s)
    out["distilled"] = roles.bpb(distilled, x_e, y_e)
    keras.utils.set_random_seed(seed)
    init = TransformerLM.from_config(roles.evaluator.get_config())
    scratch = roles.labels.run(init.get_weights(), x_s, y_s)
    out["scratch"] = roles.bpb(scratch, x_e, y_e)
    out["params"] = roles.evaluator.count_params() / teacher.count_params()
    roles.evaluator.set_weights(distilled)
    for batch in (1, 32):
        t_ms, s_ms = _latency(
            [teacher, roles.evaluator], x_e[:batch], size["rounds"]
        )
        out[f"speedup/b{batch}"] = t_ms / s_ms
    return out


def _load():
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def latency_only(size, args, mode):
    """Parameters and forward latency, shrunk vs original (any backend)."""
    keras.utils.set_random_seed(0)
    teacher = TransformerLM(
        vocabulary_size=256, sequence_length=size["length"],
        hidden_dim=size["hidden"], num_layers=size["layers"], num_heads=4,
    )  # fmt: skip
    small = compress(teacher, importance="magnitude", **RATIOS)
    for model in (teacher, small):  # XLA on JAX and TensorFlow
        model.compile(jit_compile=_jit())
    x = np.random.default_rng(0).integers(0, 256, (32, size["length"]))
    load_before = _load()
    figures = [
        common.figure(
            "params_ratio",
            small.count_params() / teacher.count_params(),
            target=("<=", 0.55),
        )
    ]
    rounds = 3 * size["rounds"]
    for batch in (1, 32):
        per_round = []
        for _ in range(rounds):
            t_ms, s_ms = _latency([teacher, small], x[:batch], 3)
            per_round.append(t_ms / s_ms)
        target = (">=", 1.7) if batch == 32 else None
        figures.append(
            common.figure(
                f"speedup/batch{batch}",
                per_round,
                target=target,
                unit="x",
                note="teacher / shrunk forward time, per interleaved round",
            )  # fmt: skip
        )
    common.print_table(figures, title="compress: latency and parameters")
    common.write_results(
        "compress_latency",
        figures,
        args,
        extra={
            "mode": mode,
            "size": size,
            "load_average_1min": {"before": load_before, "after": _load()},
            "note": "The machine was shared (see the load averages); each "
            "round interleaves the two models, so slow drifts hit both.",
        },
    )


def main():
    args = common.parse_args(
        __doc__.splitlines()[0],
        extra=lambda parser: parser.add_argument(
            "--latency-only",
            action="store_true",
            help="parameters and forward latency only (any backend)",
        ),
        full_help="GPU-sized run: width 512, 6 layers, 4000 + 1500 steps "
        "(not run on CPU)",
    )
    mode = "quick" if args.quick else ("full" if args.full else "default")
    size = SIZES[mode]
    if args.latency_only:
        return latency_only(size, args, mode)
    load_before = _load()
    seeds = args.seeds or size["seeds"]
    data = load_stdlib_text(max_bytes=300_000 if args.quick else 3_000_000)
    teacher = train_teacher(size, data[0])
    small_config = compress(
        teacher,
        ffn_ratio=0.5,
        head_ratio=0.5,
        hidden_ratio=0.5,
        importance="magnitude",
    ).get_config()
    roles = Roles(teacher, small_config, size["batch"])
    runs = []
    for seed in common.Progress(range(seeds), "seed"):
        runs.append(run_seed(seed, size, data, teacher, roles))
    col = {key: [r[key] for r in runs] for key in runs[0]}
    closed = [
        (p - d) / (p - t) if p > t else float("nan")
        for p, d, t in zip(
            col["pruned/activation"], col["distilled"], col["teacher"]
        )
    ]
    figures = [
        common.figure("bpb/teacher", col["teacher"]),
        common.figure("bpb/pruned_only", col["pruned/activation"]),
        common.figure("bpb/pruned_finetuned", col["finetuned"]),
        common.figure("bpb/pruned_distilled", col["distilled"]),
        common.figure("bpb/scratch", col["scratch"]),
        common.paired_difference(
            "bpb_gain/distilled_vs_scratch", col["scratch"], col["distilled"]
        ),
        common.paired_difference(
            "bpb_gain/distilled_vs_finetuned",
            col["finetuned"],
            col["distilled"],
        ),
        common.figure(
            "gap_closed/distilled",
            closed,
            target=(">=", 0.8),
            note="(pruned - distilled) / (pruned - teacher)",
        ),  # fmt: skip
        common.paired_difference(
            "bpb_gain/activation_vs_magnitude",
            col["pruned/magnitude"],
            col["pruned/activation"],
        ),
        common.paired_difference(
            "bpb_gain/activation_vs_taylor",
            col["pruned/taylor"],
            col["pruned/activation"],
        ),
        common.figure("params_ratio", col["params"], target=("<=", 0.55)),
        common.figure("speedup/batch1", col["speedup/b1"], unit="x"),
        common.figure(
            "speedup/batch32",
            col["speedup/b32"],
            target=(">=", 1.7),
            unit="x",
        ),  # fmt: skip
    ]
    common.print_table(figures, title="compress: prune, then distil")
    common.write_results(
        "compress",
        figures,
        args,
        extra={
            "mode": mode,
            "size": size,
            "design": DESIGN,
            "runs": runs,
            "load_average_1min": {"before": load_before, "after": _load()},
        },
    )


if __name__ == "__main__":
    main()
