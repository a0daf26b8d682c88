"""Tutorial: a wider byte-level language model for (almost) free with AltUp.

AltUp ("Alternating Updates for Efficient Transformers", Baykal et al.,
NeurIPS 2023) widens each token's representation K times, to K blocks of
width d, while every Transformer block still computes at width d: the block
runs on one (predicted) block, and a few learned scalars spread its update
to the others. Recycled-AltUp gets the wide representation by copying a
width-d embedding K times, so it adds no embedding parameters at all.

This script trains four byte-level LMs on the Python standard library's own
source (no download), with the same data, steps and seed:

- a baseline of width d,
- AltUp K = 2 (a widened 2d embedding, blocks still of width d),
- Recycled-AltUp K = 2 (a width-d embedding, copied),
- a dense model of width 2d (what AltUp tries to approach).

It prints eval loss, bits per byte, parameters and step time, saves the
eval-loss curves to `examples/output/altup_lm.png`, and prints text sampled
from the AltUp model. A full run takes 18.5 min on a 2-core CPU with JAX:

    KERAS_BACKEND=jax python examples/altup_lm.py
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

from keras_efficient.applications import TransformerLM  # noqa: E402
from keras_efficient.datasets import lm_windows  # noqa: E402
from keras_efficient.datasets import load_stdlib_text  # noqa: E402

# --quick: a smoke run (CI runs every example this way on every backend):
# one-layer models, 4 steps, short windows.
QUICK = "--quick" in sys.argv[1:]
HIDDEN_DIM = 32 if QUICK else 64
NUM_LAYERS = 1 if QUICK else 4
SEQUENCE_LENGTH = 32 if QUICK else 64
BATCH_SIZE = 8 if QUICK else 16
STEPS = 4 if QUICK else 300
EVAL_EVERY = 2 if QUICK else 50
EVAL_WINDOWS = 16 if QUICK else 128
NEW_TOKENS = 8 if QUICK else 80
SEED = 0
OUTPUT_DIR = os.path.join(os.path.dirname(__file__), "output")

# 1. Data: bytes of the standard library's source, split by position.
train, validation = load_stdlib_text(max_bytes=200_000 if QUICK else 2_000_000)
x_train, y_train = lm_windows(
    train, SEQUENCE_LENGTH, STEPS * BATCH_SIZE, seed=SEED
)
x_eval, y_eval = lm_windows(validation, SEQUENCE_LENGTH, EVAL_WINDOWS, seed=99)

# 2. Four models, switched on by constructor arguments.
MODELS = {
    "baseline (d)": dict(hidden_dim=HIDDEN_DIM),
    "AltUp K=2": dict(hidden_dim=HIDDEN_DIM, altup=2),
    "Recycled-AltUp K=2": dict(hidden_dim=HIDDEN_DIM, altup=2, recycled=True),
    "dense (2d)": dict(hidden_dim=2 * HIDDEN_DIM),
}


def make_model(options):
    keras.utils.set_random_seed(SEED)
    model = TransformerLM(
        vocabulary_size=256,
        sequence_length=SEQUENCE_LENGTH,
        num_layers=NUM_LAYERS,
        num_heads=4,
        **options,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=keras.backend.backend() != "torch",
    )
    return model


# 3. Train each model for the same steps, evaluating as it goes.
results, curves, models = {}, {}, {}
for name, options in MODELS.items():
    model = make_model(options)
    curve, train_seconds = [], 0.0
    for start in range(0, STEPS, EVAL_EVERY):
        chunk = slice(start * BATCH_SIZE, (start + EVAL_EVERY) * BATCH_SIZE)
        begin = time.perf_counter()
        model.fit(
            x_train[chunk],
            y_train[chunk],
            batch_size=BATCH_SIZE,
            epochs=1,
            verbose=0,
            shuffle=False,
        )
        if start > 0:  # the first chunk pays for compilation
            train_seconds += time.perf_counter() - begin
        loss = model.evaluate(x_eval, y_eval, batch_size=64, verbose=0)
        curve.append((start + EVAL_EVERY, loss))
    curves[name] = curve
    models[name] = model
    results[name] = {
        "loss": curve[-1][1],
        "params": model.count_params(),
        "step_ms": 1000 * train_seconds / (STEPS - EVAL_EVERY),
    }
    print(f"{name}: eval loss {curve[-1][1]:.4f}", flush=True)

# 4. Generation: greedy and sampled continuations (jitted on JAX).
prompt = np.frombuffer(b"def __init__(self", dtype=np.uint8)
model = models["AltUp K=2"]
for temperature in (0.0, 0.8):
    tokens = model.generate(
        prompt, max_new_tokens=NEW_TOKENS, temperature=temperature, seed=SEED
    )
    text = bytes(tokens.astype(np.uint8).tolist()).decode("utf-8", "replace")
    print(f"\n--- AltUp K=2, temperature {temperature} ---\n{text}")

# 5. Loss curves.
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(OUTPUT_DIR, exist_ok=True)
    plt.figure(figsize=(6, 4))
    for name, curve in curves.items():
        steps, losses = zip(*curve)
        plt.plot(steps, np.array(losses) / np.log(2), marker="o", label=name)
    plt.xlabel("training step")
    plt.ylabel("eval bits per byte")
    plt.title("Byte-level LM on stdlib source")
    plt.legend()
    plt.tight_layout()
    path = os.path.join(OUTPUT_DIR, "altup_lm.png")
    plt.savefig(path, dpi=120)
    print(f"saved {path}")
except ImportError:
    print("matplotlib is not installed: no plot")

# 6. The side-by-side table.
base = results["baseline (d)"]
print(
    f"\n{'model':20s} {'eval loss':>9s} {'bits/byte':>9s} "
    f"{'params':>9s} {'step ms':>8s} {'vs base':>7s}"
)
for name, r in results.items():
    print(
        f"{name:20s} {r['loss']:9.4f} {r['loss'] / np.log(2):9.3f} "
        f"{r['params']:9,d} {r['step_ms']:8.1f} "
        f"{r['step_ms'] / base['step_ms']:6.2f}x"
    )
gap = base["loss"] - results["dense (2d)"]["loss"]
for name in ("AltUp K=2", "Recycled-AltUp K=2"):
    gain = base["loss"] - results[name]["loss"]
    if gap > 0 and gain > 0:
        share = 100 * gain / gap
        print(f"{name} closes {share:.0f}% of the gap to the 2d model")
    else:
        print(
            f"{name} does not close the gap to the 2d model here (eval loss "
            f"{-gain:+.4f} against the baseline; 2d model {-gap:+.4f})"
        )
print(
    "(one seed and a busy CPU: see benchmarks/altup.py for seeds and "
    "interleaved step-time ratios)"
)
if QUICK:
    print(
        "\n(smoke run, --quick: tiny data and a few steps; the figures "
        "above only show that the script runs, not how the method does)"
    )
