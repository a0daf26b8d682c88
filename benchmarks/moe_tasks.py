"""Tasks and small model builders shared by the lookup / MoE benchmarks.

`polynomial_task` is the LSH paper's synthetic regression task (a random
degree-4 polynomial in 8 dimensions); `lm_data` cuts byte-level windows out
of the standard library's source; `mlp` is the dense block both compare
against; `train_regression` fits a regression model with the recipe both
benchmarks use (Adam, cosine decay from 3e-3, batch 128).
"""

import itertools
import math

import keras
import numpy as np

from keras_efficient.datasets import lm_windows
from keras_efficient.datasets import load_stdlib_text
from keras_efficient.layers import SparseLookupTable

NUM_EXPERTS = 16
POLY_DIM = 8
POLY_DEGREE = 4
POLY_HIDDEN = 64


def jit_compile():
    """`jit_compile` of the benchmarks: XLA on JAX and TensorFlow."""
    return keras.backend.backend() != "torch"


def mlp(x, width, hidden, name):
    """`Dense(hidden, relu) -> Dense(width)` on `x`."""
    h = keras.layers.Dense(hidden, activation="relu", name=f"{name}_in")(x)
    return keras.layers.Dense(width, name=f"{name}_out")(h)


def lm_data(config, num, bigrams=True):
    """`num` next-byte windows of `config["sequence_length"]` bytes.

    Returns `([ids, bigram_ids], targets)` with `bigrams=True` (bigram id
    `previous * 256 + current`), else `(ids, targets)`.
    """
    train, _ = load_stdlib_text(max_bytes=2_000_000)
    x, y = lm_windows(train, config["sequence_length"], num, seed=0)
    if not bigrams:
        return x, y
    prev = np.concatenate([np.zeros_like(x[:, :1]), x[:, :-1]], axis=1)
    return [x, prev * 256 + x], y


def polynomial_task(num_train, num_test, seed):
    """A random degree-4 polynomial in 8 dims on uniform [-1, 1]^8 inputs.

    All monomials of degree <= 4 (495 of them) with N(0, 1) coefficients;
    the target is centred and scaled to unit variance on the training set,
    so an MSE of 1 is the constant predictor.
    """
    rng = np.random.default_rng(seed)
    monomials = [
        c
        for k in range(POLY_DEGREE + 1)
        for c in itertools.combinations_with_replacement(range(POLY_DIM), k)
    ]
    coefficients = rng.normal(size=len(monomials))

    def f(x):
        cols = [np.prod(x[:, list(m)], axis=1) for m in monomials]
        return np.stack(cols, axis=1) @ coefficients

    x = rng.uniform(-1, 1, size=(num_train + num_test, POLY_DIM))
    y = f(x)
    mean, std = y[:num_train].mean(), y[:num_train].std()
    y = ((y - mean) / std).astype("float32")[:, None]
    x = x.astype("float32")
    return (x[:num_train], y[:num_train]), (x[num_train:], y[num_train:])


def dense_flops(hidden):
    """Multiply-adds x2 of an 8 -> hidden -> 1 MLP per example."""
    return 2 * (POLY_DIM * hidden + hidden)


def train_regression(builder, data, epochs, seed):
    """Fits `builder()` on `data`; returns `(test MSE, params, model)`."""
    (x, y), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = builder()
    schedule = keras.optimizers.schedules.CosineDecay(
        3e-3, decay_steps=epochs * math.ceil(len(x) / 128)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="mse",
        jit_compile=jit_compile(),
    )
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0)
    pred = model.predict(x_test, batch_size=1024, verbose=0)
    mse = float(np.mean((pred - y_test) ** 2))
    return mse, model.count_params(), model


def table_model(num_entries, lookup, tokens, width, optimizer, **table_args):
    """Byte embedding -> `SparseLookupTable` -> 256-way head, compiled.

    `table_args` go to the table (e.g. `table_optimizer`, `router_type`).
    """
    ids = keras.Input((tokens,), dtype="int32")
    x = keras.layers.Embedding(256, width)(ids)
    if lookup == "token_id":
        table_args.setdefault("token_mapping", "hash")
    table = SparseLookupTable(num_entries, lookup=lookup, seed=0, **table_args)
    x = table(x, ids) if lookup == "token_id" else table(x)
    model = keras.Model(ids, keras.layers.Dense(256)(x))
    model.compile(
        optimizer,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile(),
    )
    return model


def peak_rss_gb():
    """Peak resident memory of this process so far, in GiB.

    Reads `VmHWM` (Linux): unlike `ru_maxrss`, it is not inherited from
    the parent of a forked-and-exec'd process.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
