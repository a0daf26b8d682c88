"""Tutorial: sparse lookup tables and LSH mixtures of experts.

Two small experiments (2.9 min on a 2-core CPU with JAX):

1. The synthetic regression task of "A theoretical view on sparsely
   activated networks" (Baykal et al., NeurIPS 2022): a random degree-4
   polynomial in 8 dimensions. A dense MLP, the same MLP plus an LSH lookup
   table (each input reads one scalar per hash table from the bucket of its
   random-hyperplane hash) and an LSH-routed mixture of 16 MLPs, all at
   about the same active FLOPs per example. Printed: a test-MSE table.
2. A byte-level language model on the Python standard library's source: a
   small causal model with and without a `SparseLookupTable` of 2**16
   entries indexed by the byte bigram (previous byte, current byte). The
   table adds a million parameters but only one gather per token. The
   third model trains the same table with `table_optimizer="adam"`: the
   table updates only the rows a step read, in the backward pass of its
   gather, so a step costs the same however large the table is.

    KERAS_BACKEND=jax python examples/lookup_and_moe.py
    KERAS_BACKEND=jax python examples/lookup_and_moe.py --quick  # seconds
"""

import argparse
import itertools
import logging
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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

import keras_efficient as ke  # noqa: E402

JIT = keras.backend.backend() != "torch"

# ------------------------------------------------- 1. polynomial regression


def polynomial_task(num_train, num_test, seed=0, dim=8, degree=4):
    """Random degree-4 polynomial (all 495 monomials, N(0, 1) coefficients)
    on uniform [-1, 1]^8 inputs; targets scaled to unit variance."""
    rng = np.random.default_rng(seed)
    monomials = [
        c
        for k in range(degree + 1)
        for c in itertools.combinations_with_replacement(range(dim), k)
    ]
    coefficients = rng.normal(size=len(monomials))
    x = rng.uniform(-1, 1, size=(num_train + num_test, dim))
    features = np.stack([np.prod(x[:, list(m)], 1) for m in monomials], 1)
    y = features @ coefficients
    y = (y - y[:num_train].mean()) / y[:num_train].std()
    x, y = x.astype("float32"), y.astype("float32")[:, None]
    return (x[:num_train], y[:num_train]), (x[num_train:], y[num_train:])


def mlp(x, hidden, out=1):
    h = keras.layers.Dense(hidden, activation="relu")(x)
    return keras.layers.Dense(out)(h)


def regression_models(hidden=64, bits=11, tables=4, experts=16):
    """name -> (model, active FLOPs per example); FLOPs = 2 x mult-adds."""

    def flops(h):
        return 2 * (8 * h + h)

    hash_flops = 2 * 8 * bits * tables
    h_table = hidden - math.ceil(hash_flops / flops(1))
    moe_hash = 2 * 8 * int(math.log2(experts))
    h_moe = hidden - math.ceil(moe_hash / flops(1))

    x = keras.Input((8,))
    dense = keras.Model(x, mlp(x, hidden), name="dense")

    x = keras.Input((8,))
    # dim=1, consume="concat": the table appends one scalar per example (the
    # sum of its `tables` entries); it is added to the MLP's output.
    read = ke.layers.SparseLookupTable(
        tables * 2**bits,
        dim=1,
        lookup="lsh",
        consume="concat",
        num_tables=tables,
        embeddings_initializer="zeros",
        seed=0,
    )(x)
    table = keras.Model(x, mlp(x, h_table) + read[:, 8:], name="lsh_table")

    x = keras.Input((8,))
    moe_layer = ke.layers.MixtureOfExperts(
        experts, h_moe, router="lsh", output_dim=1, capacity_factor=None, seed=0
    )
    moe = keras.Model(x, moe_layer(x), name="lsh_moe")
    return {
        "dense MLP": (dense, flops(hidden)),
        "MLP + LSH table": (table, flops(h_table) + hash_flops),
        "LSH MoE (16 experts)": (moe, flops(h_moe) + moe_hash),
    }


def regression(quick):
    """Trains the three models; returns their rows for the summary."""
    n_train, n_test, epochs = (512, 512, 1) if quick else (16384, 4096, 15)
    (x, y), (x_test, y_test) = polynomial_task(n_train, n_test)
    print(f"\n1. Degree-4 polynomial in 8 dims, {n_train} training points")
    rows = []
    for name, (model, flops) in regression_models().items():
        steps = epochs * math.ceil(n_train / 128)
        model.compile(
            keras.optimizers.Adam(
                keras.optimizers.schedules.CosineDecay(3e-3, steps)
            ),
            "mse",
            jit_compile=JIT,
        )
        start = time.perf_counter()
        model.fit(x, y, batch_size=128, epochs=epochs, verbose=0)
        mse = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
        rows.append((name, flops, model.count_params(), mse))
        print(f"   trained {name} in {time.perf_counter() - start:.0f} s")
    return rows


def print_regression(rows):
    print("\n1. Degree-4 polynomial: test MSE at about equal active FLOPs")
    print(f"   {'model':<22} {'FLOPs/ex':>9} {'params':>8} {'test MSE':>9}")
    for name, flops, params, mse in rows:
        print(f"   {name:<22} {flops:>9,} {params:>8,} {mse:>9.4f}")
    print("   (MSE 1.0 = predicting the mean)")


# --------------------------------------------------- 2. byte-level LM


def byte_lm(table_entries=None, table_optimizer=None, width=64, length=64):
    """Embedding -> causal conv (sees the previous byte) -> MLP -> logits,
    optionally with a bigram lookup table added after the embedding."""
    ids = keras.Input((length,), dtype="int32")
    bigrams = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(256, width)(ids)
    if table_entries:
        # Bigram ids (previous * 256 + current) index the table directly:
        # with 2**16 entries every bigram owns a row.
        x = ke.layers.SparseLookupTable(
            table_entries, lookup="token_id", table_optimizer=table_optimizer
        )(x, bigrams)
    x = keras.layers.Conv1D(width, 4, padding="causal", activation="gelu")(x)
    x = x + mlp(x, 4 * width, width)
    logits = keras.layers.Dense(256)(x)
    model = keras.Model([ids, bigrams], logits)
    model.compile(
        keras.optimizers.Adam(2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=JIT,
    )
    return model


def count_parameters(model):
    """Weights of the model, without a table optimizer's moments and step."""
    return sum(
        int(np.prod(w.shape))
        for w in model.weights
        if not w.name.startswith("embeddings_")
    )


def language_model(quick):
    """Trains the two byte LMs; returns their rows for the summary."""
    from keras_efficient.datasets import lm_windows
    from keras_efficient.datasets import load_stdlib_text

    train, validation = load_stdlib_text(
        max_bytes=200_000 if quick else 2_000_000
    )
    n_train, n_val, epochs = (64, 64, 1) if quick else (8192, 512, 3)

    def windows(data, n, seed):
        x, y = lm_windows(data, 64, n, seed=seed)
        prev = np.concatenate([np.zeros_like(x[:, :1]), x[:, :-1]], 1)
        return [x, prev * 256 + x], y

    x, y = windows(train, n_train, 0)
    x_val, y_val = windows(validation, n_val, 1)
    print(f"\n2. Byte-level LM on stdlib source, {n_train} windows of 64")
    rows = []
    variants = (
        ("no table", None, None),
        ("bigram table 2^16", 2**16, None),
        ("+ table_optimizer", 2**16, "adam"),
    )
    for name, entries, table_optimizer in variants:
        keras.utils.set_random_seed(0)
        model = byte_lm(entries, table_optimizer)
        start = time.perf_counter()
        model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
        seconds = time.perf_counter() - start
        loss = model.evaluate(x_val, y_val, batch_size=256, verbose=0)
        rows.append((name, count_parameters(model), loss, seconds))
        print(f"   trained {name} in {seconds:.0f} s")
    return rows


def print_language_model(rows):
    print("\n2. Byte-level LM: validation bits per byte")
    print(f"   {'model':<18} {'params':>9} {'bits/byte':>9} {'train s':>8}")
    for name, params, loss, seconds in rows:
        bpb = loss / math.log(2)
        print(f"   {name:<18} {params:>9,} {bpb:>9.3f} {seconds:>8.0f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    regression_rows = regression(args.quick)
    language_model_rows = language_model(args.quick)
    print_regression(regression_rows)
    print_language_model(language_model_rows)


if __name__ == "__main__":
    main()
    if "--quick" in sys.argv[1:]:
        print(
            "\n(smoke run, --quick: tiny data and a few steps; the figures "
            "above only show that the script runs, not how the method does)"
        )
