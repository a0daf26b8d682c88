"""tfmot as the test oracle: train with `prune_low_magnitude`, record masks.

Run by `tests/test_tfmot_parity.py` in a subprocess, because tfmot needs the
legacy Keras (tf-keras), which TensorFlow picks only when
`TF_USE_LEGACY_KERAS=1` is set before it is imported:

    TF_USE_LEGACY_KERAS=1 KERAS_BACKEND=tensorflow \
        python tests/tfmot_oracle.py OUT.npz [CASE ...]

For every case of `CASES` it builds the model in tf-keras from NumPy
initial weights, wraps it with `tfmot.sparsity.keras.prune_low_magnitude`,
trains it with plain SGD on fixed data (no shuffling) and writes to
`OUT.npz`, under `<case>/`: the data (`x`, `y`), the initial weights
(`init/<layer>/kernel`, `init/<layer>/bias`) and, per pruned kernel,
`mask/<layer>` (the mask each batch ran with, stacked over batches) and
`score/<layer>` (the kernel as the batch found it: what tfmot's in-call
mask update reads) and `updated/<layer>` (the kernel as the batch left it,
before any re-masking at the epoch's end).

This module imports neither TensorFlow nor Keras at import time, so the
test process (Keras 3) reads `CASES`, `build_spec` and `make_arrays` from
it.
"""

import os
import sys

import numpy as np

BATCH_SIZE = 4
SAMPLES = 32  # 8 batches an epoch
EPOCHS = 2  # 16 steps; step 9 opens the second epoch
LEARNING_RATE = 0.15

# Layers of the two models: (kind, name, config). "dense" and "conv" are
# pruned; "flatten" has no weights.
MODELS = {
    "dense": {
        "input_shape": (12,),
        "layers": [
            ("dense", "hidden", {"units": 16, "activation": "tanh"}),
            ("dense", "out", {"units": 4}),
        ],
        "outputs": 4,
    },
    "conv": {
        "input_shape": (6, 6, 4),
        "layers": [
            (
                "conv",
                "conv",
                {"filters": 8, "kernel_size": 3, "activation": "tanh"},
            ),
            ("flatten", "flatten", {}),
            ("dense", "out", {"units": 3}),
        ],
        "outputs": 3,
    },
}

# 1 - 0.4921875 = 0.5078125 = 65 / 128 exactly: the Dense model's kernels
# (192 and 64 weights) keep n * 0.5078125 = 97.5 and 32.5, so both sides
# must round half to even (98 and 32) to agree.
CONSTANT = (
    "ConstantSparsity",
    {"target_sparsity": 0.4921875, "begin_step": 2, "end_step": -1,
     "frequency": 3},
)  # fmt: skip
# Prunes at steps 2, 4, ..., 14: not at step 9, which opens the second
# epoch (see EPOCH_START).
POLYNOMIAL = (
    "PolynomialDecay",
    {"initial_sparsity": 0.1, "final_sparsity": 0.8, "begin_step": 2,
     "end_step": 14, "power": 3, "frequency": 2},
)  # fmt: skip
# Prunes at steps 1, 3, ..., 13, so at step 9, the second epoch's first.
EPOCH_START = (
    "PolynomialDecay",
    {"initial_sparsity": 0.1, "final_sparsity": 0.8, "begin_step": 1,
     "end_step": 13, "power": 3, "frequency": 2},
)  # fmt: skip
# tfmot applies N:M once, at step 1, whatever the schedule says; this
# schedule says the same, so our callback can be compared batch by batch.
ONCE_AT_STEP_1 = (
    "ConstantSparsity",
    {"target_sparsity": 0.5, "begin_step": 1, "end_step": 1, "frequency": 1},
)
EVERY_THIRD = (
    "ConstantSparsity",
    {"target_sparsity": 0.5, "begin_step": 0, "end_step": -1, "frequency": 3},
)

CASES = {
    "dense-constant": {"model": "dense", "schedule": CONSTANT},
    "dense-polynomial": {"model": "dense", "schedule": POLYNOMIAL},
    "dense-2:4": {
        "model": "dense",
        "schedule": ONCE_AT_STEP_1,
        "sparsity_m_by_n": (2, 4),
    },
    "conv-constant": {"model": "conv", "schedule": CONSTANT},
    "conv-polynomial": {"model": "conv", "schedule": POLYNOMIAL},
    "conv-2:4": {
        "model": "conv",
        "schedule": ONCE_AT_STEP_1,
        "sparsity_m_by_n": (2, 4),
    },
    # Differences on purpose (see docs/methods/pruning.md).
    # N:M with a schedule that does not prune at step 1: tfmot still
    # applies it once, at step 1, and never again.
    "dense-2:4-every-third": {
        "model": "dense",
        "schedule": EVERY_THIRD,
        "sparsity_m_by_n": (2, 4),
    },
    # A pruning step opens the second epoch: tfmot scores the kernel that
    # UpdatePruningStep re-masked at the epoch's end.
    "conv-polynomial-epoch-start": {"model": "conv", "schedule": EPOCH_START},
    # Exact ties at the threshold: every weight has magnitude 0.5 and the
    # learning rate is 0, so the mask of step 1 is computed from ties only.
    "dense-ties": {
        "model": "dense",
        "schedule": ONCE_AT_STEP_1,
        "ties": True,
        "steps": 1,
        "learning_rate": 0.0,
    },
}


def build_spec(case):
    """`(model spec, steps, learning rate)` of a case."""
    spec = CASES[case]
    steps = spec.get("steps", EPOCHS * SAMPLES // BATCH_SIZE)
    return (
        MODELS[spec["model"]],
        steps,
        spec.get("learning_rate", LEARNING_RATE),
    )


def kernel_shapes(model_spec):
    """`{layer name: (kernel shape, bias shape)}` of the layers with weights."""
    shape = list(model_spec["input_shape"])
    out = {}
    for kind, name, config in model_spec["layers"]:
        if kind == "dense":
            out[name] = ((shape[-1], config["units"]), (config["units"],))
            shape = shape[:-1] + [config["units"]]
        elif kind == "conv":
            k, f = config["kernel_size"], config["filters"]
            out[name] = ((k, k, shape[-1], f), (f,))
            shape = [shape[0] - k + 1, shape[1] - k + 1, f]  # "valid"
        else:  # flatten
            shape = [int(np.prod(shape))]
    return out


def make_arrays(case):
    """`{key: array}`: the data and initial weights of a case (seeded)."""
    model_spec, _, _ = build_spec(case)
    rng = np.random.default_rng(sorted(CASES).index(case))
    n = SAMPLES
    arrays = {
        "x": rng.normal(size=(n, *model_spec["input_shape"])),
        "y": rng.normal(size=(n, model_spec["outputs"])),
    }
    for name, (k_shape, b_shape) in kernel_shapes(model_spec).items():
        fan_in = int(np.prod(k_shape[:-1]))
        if CASES[case].get("ties"):
            kernel = 0.5 * np.where(rng.random(k_shape) < 0.5, -1.0, 1.0)
        else:
            kernel = rng.normal(size=k_shape) / np.sqrt(fan_in)
        arrays[f"init/{name}/kernel"] = kernel
        arrays[f"init/{name}/bias"] = 0.1 * rng.normal(size=b_shape)
    return {k: np.asarray(v, "float32") for k, v in arrays.items()}


def _run_case(case):
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    keras = tf.keras  # tf-keras under TF_USE_LEGACY_KERAS=1
    sparsity = tfmot.sparsity.keras
    model_spec, steps, learning_rate = build_spec(case)
    arrays = make_arrays(case)
    layers = [keras.Input(model_spec["input_shape"])]
    for kind, name, config in model_spec["layers"]:
        cls = {
            "dense": keras.layers.Dense,
            "conv": keras.layers.Conv2D,
            "flatten": keras.layers.Flatten,
        }[kind]
        layers.append(cls(name=name, **config))
    model = keras.Sequential(layers)
    name, config = CASES[case]["schedule"]
    schedule = getattr(sparsity, name)(**config)
    kwargs = {}
    if CASES[case].get("sparsity_m_by_n"):
        kwargs["sparsity_m_by_n"] = CASES[case]["sparsity_m_by_n"]
    pruned = sparsity.prune_low_magnitude(
        model, pruning_schedule=schedule, **kwargs
    )
    wrappers = {}
    for layer in pruned.layers:
        # PruneLowMagnitude wraps every layer; Flatten has nothing to prune.
        if getattr(layer, "pruning_vars", None):
            wrappers[layer.layer.name] = layer
            layer.layer.kernel.assign(arrays[f"init/{layer.layer.name}/kernel"])
            layer.layer.bias.assign(arrays[f"init/{layer.layer.name}/bias"])
    pruned.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    record = {f"mask/{n}": [] for n in wrappers}
    record.update({f"score/{n}": [] for n in wrappers})
    record.update({f"updated/{n}": [] for n in wrappers})

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            # The kernel the batch's mask update reads (after the previous
            # update and, at an epoch's start, after UpdatePruningStep's
            # re-masking).
            for n, w in wrappers.items():
                record[f"score/{n}"].append(w.layer.kernel.numpy())

        def on_train_batch_end(self, batch, logs=None):
            for n, w in wrappers.items():
                (_, mask, _) = w.pruning_vars[0]
                record[f"mask/{n}"].append(mask.numpy())
                record[f"updated/{n}"].append(w.layer.kernel.numpy())

    epochs = max(1, steps // (SAMPLES // BATCH_SIZE))
    samples = min(SAMPLES, steps * BATCH_SIZE)
    pruned.fit(
        arrays["x"][:samples],
        arrays["y"][:samples],
        batch_size=BATCH_SIZE,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[sparsity.UpdatePruningStep(), Record()],
    )
    out = {f"{case}/{k}": v for k, v in arrays.items()}
    out.update({f"{case}/{k}": np.stack(v) for k, v in record.items()})
    return out


def main(argv):
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise SystemExit(
            "Run with TF_USE_LEGACY_KERAS=1 (tfmot needs tf-keras)"
        )
    path, cases = argv[0], argv[1:] or sorted(CASES)
    out = {}
    for case in cases:
        out.update(_run_case(case))
    np.savez(path, **out)


if __name__ == "__main__":
    main(sys.argv[1:])
