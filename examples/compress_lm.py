"""Tutorial: prune a trained byte-level LM to half width, then distil it.

Minitron's recipe (Muralidharan et al., 2024) at CPU scale: train a
`TransformerLM` on the Python standard library's source, score its
feed-forward neurons, heads and hidden channels on calibration batches
(activation importance), cut it to half its feed-forward width and half
its heads (on `TransformerLM` the head size is `hidden_dim / num_heads`,
so the hidden width halves with the heads), and bring its quality back.
Five models, the same student steps each:

- the teacher,
- pruned only (no training after the cut),
- pruned + fine-tuned on the labels,
- pruned + distilled from the teacher (`keras_efficient.compress`'s
  `distill` / `make_distiller`),
- the small config trained from scratch.

It prints bits per byte, parameters and batch-32 forward latency, and
saves the learning curves to `examples/output/compress_lm.png` (a full
run: 5.4 min on a 2-core CPU with JAX):

    KERAS_BACKEND=jax python examples/compress_lm.py
"""

import logging
import os
import sys
import time

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

from keras_efficient.applications import TransformerLM  # noqa: E402
from keras_efficient.compress import compress  # noqa: E402
from keras_efficient.compress import make_distiller  # noqa: E402
from keras_efficient.datasets import lm_windows  # noqa: E402
from keras_efficient.datasets import load_stdlib_text  # noqa: E402

# --quick: a smoke run of seconds (CI runs every example this way on every
# backend): tiny widths and a few steps, each stage run once; its figures
# mean nothing.
QUICK = "--quick" in sys.argv[1:]
HIDDEN_DIM = 16 if QUICK else 128
NUM_LAYERS = 1 if QUICK else 2
NUM_HEADS = 4
SEQUENCE_LENGTH = 16 if QUICK else 64
BATCH_SIZE = 4 if QUICK else 32
TEACHER_STEPS = 2 if QUICK else 600
STUDENT_STEPS = 2 if QUICK else 200
EVAL_EVERY = STUDENT_STEPS if QUICK else 50
EVAL_WINDOWS = 8 if QUICK else 256
CALIBRATION_BATCHES = 1 if QUICK else 16
LATENCY_ROUNDS = 1 if QUICK else 20
SEED = 0
OUTPUT_DIR = os.path.join(os.path.dirname(__file__), "output")
# Progress bars on a terminal only (CI logs stay short).
VERBOSE = "auto" if sys.stdout.isatty() else 0
JIT = keras.backend.backend() != "torch"
LM_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

# 1. Data: bytes of the standard library's source, split by position.
train, validation = load_stdlib_text(max_bytes=50_000 if QUICK else 3_000_000)
x_teacher, y_teacher = lm_windows(
    train, SEQUENCE_LENGTH, TEACHER_STEPS * BATCH_SIZE, seed=SEED
)
x_student, y_student = lm_windows(
    train, SEQUENCE_LENGTH, STUDENT_STEPS * BATCH_SIZE, seed=SEED + 1
)
x_eval, y_eval = lm_windows(validation, SEQUENCE_LENGTH, EVAL_WINDOWS, seed=99)


# Every small model has the same architecture: one compiled copy of it
# evaluates (and times) them all, given their weights (a compile per model
# would cost more than a --quick run's training).
evaluators = {}


def bits_per_byte(model):
    """Eval bits per byte of `model`, through its architecture's evaluator."""
    key = model.count_params()
    if key not in evaluators:
        evaluators[key] = TransformerLM.from_config(model.get_config())
        evaluators[key].compile(loss=LM_LOSS, jit_compile=JIT)
    evaluator = evaluators[key]
    evaluator.set_weights(model.get_weights())
    loss = evaluator.evaluate(x_eval, y_eval, batch_size=64, verbose=0)
    return loss / np.log(2)


def train_curve(fit_chunk, model, steps):
    """Runs `fit_chunk(start, stop)` in chunks, evaluating after each."""
    curve = [(0, bits_per_byte(model))]
    for start in range(0, steps, EVAL_EVERY):
        fit_chunk(slice(start * BATCH_SIZE, (start + EVAL_EVERY) * BATCH_SIZE))
        curve.append((start + EVAL_EVERY, bits_per_byte(model)))
    return curve


def fit_on_labels(model, x, y):
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3, global_clipnorm=1.0),
        loss=LM_LOSS,
        jit_compile=JIT,
    )

    def chunk(part):
        model.fit(x[part], y[part], batch_size=BATCH_SIZE, verbose=VERBOSE)

    return chunk


# 2. The teacher.
teacher = TransformerLM(
    vocabulary_size=256, sequence_length=SEQUENCE_LENGTH,
    hidden_dim=HIDDEN_DIM, num_layers=NUM_LAYERS, num_heads=NUM_HEADS,
)  # fmt: skip
teacher_fit = fit_on_labels(teacher, x_teacher, y_teacher)
evaluators[teacher.count_params()] = teacher  # it evaluates itself
teacher_curve = train_curve(teacher_fit, teacher, TEACHER_STEPS)
print(f"teacher: {teacher_curve[-1][1]:.3f} bits per byte", flush=True)

# 3. Prune: activation importance on calibration batches, then shrink.
calibration = x_teacher[: CALIBRATION_BATCHES * BATCH_SIZE]
pruned_only = compress(
    teacher, calibration, batch_size=BATCH_SIZE,
    ffn_ratio=0.5, head_ratio=0.5, hidden_ratio=0.5,
)  # fmt: skip


def pruned():
    """A fresh copy of the pruned model (scored and cut once)."""
    copy = TransformerLM.from_config(pruned_only.get_config())
    copy.set_weights(pruned_only.get_weights())
    return copy


print(
    f"pruned: {teacher.count_params():,} -> {pruned_only.count_params():,} "
    f"parameters ({pruned_only.count_params() / teacher.count_params():.2f}x)"
)

# 4. Three ways to spend the same student steps.
students, curves = {}, {"teacher": teacher_curve}
finetuned = pruned()
curves["pruned + fine-tuned"] = train_curve(
    fit_on_labels(finetuned, x_student, y_student), finetuned, STUDENT_STEPS
)
students["pruned + fine-tuned"] = finetuned

distilled = pruned()
# `distill(teacher, distilled, (x, y))` in one call does the same; the
# tutorial builds its `keras.distillation.Distiller` once and fits it in
# chunks to draw the learning curve (a new one per chunk would recompile).
distiller = make_distiller(teacher, distilled, temperature=1.0)
distiller.compile(
    optimizer=keras.optimizers.Adam(2e-3, global_clipnorm=1.0),
    loss=LM_LOSS,
    jit_compile=JIT,
)


def distill_chunk(part):
    distiller.fit(
        x_student[part], y_student[part], batch_size=BATCH_SIZE,
        verbose=VERBOSE,
    )  # fmt: skip


curves["pruned + distilled"] = train_curve(
    distill_chunk, distilled, STUDENT_STEPS
)
students["pruned + distilled"] = distilled

keras.utils.set_random_seed(SEED)
scratch = TransformerLM.from_config(pruned_only.get_config())
curves["from scratch"] = train_curve(
    fit_on_labels(scratch, x_student, y_student), scratch, STUDENT_STEPS
)
students["from scratch"] = scratch

# 5. Learning curves.
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(OUTPUT_DIR, exist_ok=True)
    plt.figure(figsize=(6, 4))
    for name, curve in curves.items():
        if name == "teacher":
            plt.axhline(curve[-1][1], color="k", ls="--", label=name)
            continue
        steps, bpb = zip(*curve)
        plt.plot(steps, bpb, marker="o", label=name)
    plt.axhline(bits_per_byte(pruned_only), color="r", ls=":", label="pruned")
    plt.xlabel("student step")
    plt.ylabel("eval bits per byte")
    plt.title("Half-width byte LM: prune, then recover")
    plt.legend()
    plt.tight_layout()
    path = os.path.join(OUTPUT_DIR, "compress_lm.png")
    plt.savefig(path, dpi=120)
    print(f"saved {path}")
except ImportError:
    print("matplotlib is not installed: no plot")

# 6. The table: quality, size, batch-32 forward latency. The four small
# models share one architecture, so one of them is timed; teacher and small
# model in turn, round after round, so a busy moment of the CPU hits both.
x_batch = x_eval[:32]
rows = {"teacher": teacher, "pruned only": pruned_only, **students}
timed = {"teacher": teacher, "small": distilled}
times = {name: [] for name in timed}
for model in timed.values():
    model.predict_on_batch(x_batch)  # compile first
for _ in range(LATENCY_ROUNDS):
    for name, model in timed.items():
        begin = time.perf_counter()
        model.predict_on_batch(x_batch)
        times[name].append(1000 * (time.perf_counter() - begin))
print(f"\n{'model':22s} {'bits/byte':>9s} {'params':>9s} {'ms (b=32)':>9s}")
results = {}
for name, model in rows.items():
    results[name] = bits_per_byte(model)
    ms = np.median(times["teacher" if model is teacher else "small"])
    print(
        f"{name:22s} {results[name]:9.3f} {model.count_params():9,d} {ms:9.2f}"
    )
gap = results["pruned only"] - results["teacher"]
closed = results["pruned only"] - results["pruned + distilled"]
if gap > 0:
    print(f"distillation closes {100 * closed / gap:.0f}% of the pruning gap")
if QUICK:
    print("(--quick: a smoke run of every stage; its figures mean nothing)")
else:
    print(
        "(one seed on a busy CPU: benchmarks/compress.py repeats this over "
        "seeds with paired intervals)"
    )
