"""Magnitude pruning tutorial: a Conv1D net on MNIST-1D.

Trains a dense CNN, then prunes copies of it one-shot (ConstantSparsity,
prune once then fine-tune), gradually (PolynomialDecay) and iteratively
(IterativePruning, geometric cycles) to 50-97% sparsity; a 2:4 (N:M) run;
evaluation beyond test accuracy; strip and report. Plots accuracy vs
sparsity to examples/output/pruning.png.

Every pruned copy gets the same fine-tuning budget (`--finetune-epochs`):
the gradual and iterative schedules prune during its first 5/8 and
retrain for the rest. Magnitudes are compared across all kernels
(`scope="global"`): per-layer pruning at 90% leaves the 160-weight first
convolution with 16 weights and costs far more accuracy.

    KERAS_BACKEND=jax python examples/pruning.py [--epochs 20]
"""

import argparse
import logging
import os
import sys

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

from keras_efficient.callbacks import MagnitudePruning  # noqa: E402
from keras_efficient.datasets import load_mnist1d  # noqa: E402
from keras_efficient.pruning import ConstantSparsity  # noqa: E402
from keras_efficient.pruning import IterativePruning  # noqa: E402
from keras_efficient.pruning import PolynomialDecay  # noqa: E402
from keras_efficient.pruning import compare_to_dense  # noqa: E402
from keras_efficient.pruning import prune_potential  # noqa: E402
from keras_efficient.pruning import sparsity_report  # noqa: E402
from keras_efficient.pruning import strip_pruning  # noqa: E402

BATCH = 100
OUTPUT_DIR = os.path.join(os.path.dirname(__file__), "output")


def make_model():
    return keras.Sequential(
        [
            keras.Input((40, 1)),
            keras.layers.Conv1D(32, 5, padding="same", activation="relu"),
            keras.layers.MaxPooling1D(2),
            keras.layers.Conv1D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling1D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def compile_(model, lr=3e-3):
    model.compile(
        keras.optimizers.Adam(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def finetune(dense, callback, data, epochs):
    (x, y), _ = data
    model = compile_(keras.models.clone_model(dense), lr=1e-3)
    model.set_weights(dense.get_weights())
    model.fit(
        x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=[callback]
    )
    return strip_pruning(model)


def accuracy(model, data):
    _, (xt, yt) = data
    p = keras.ops.convert_to_numpy(model.predict(xt, verbose=0))
    return float((p.argmax(-1) == yt).mean())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run (what CI runs)"
    )
    args = parser.parse_args()
    sparsities = [0.5, 0.8, 0.9, 0.95, 0.97]
    if args.quick:  # 1,000 / 250 examples, one sparsity, few epochs
        args.epochs, args.finetune_epochs, args.draws = 1, 2, 1
        sparsities = [0.9]
    keras.utils.set_random_seed(0)
    if args.quick:
        data = load_mnist1d(num_train=1000, num_test=250)
    else:
        data = load_mnist1d()
    (x, y), (xt, yt) = data
    steps = len(x) // BATCH

    dense = compile_(make_model())
    dense.fit(x, y, batch_size=BATCH, epochs=args.epochs, verbose=0)
    acc_dense = accuracy(dense, data)
    print(f"dense accuracy {acc_dense:.3f}")

    fe = args.finetune_epochs
    curves = {"one-shot": [], "polynomial": [], "iterative": []}
    models = {}
    prune_steps = steps * fe * 5 // 8
    for s in sparsities:
        one = finetune(
            dense,
            MagnitudePruning(ConstantSparsity(s, 1, 1), scope="global"),
            data,
            fe,
        )
        # On JAX each pruning step that changes a mask recompiles the train
        # step, so prune every prune_steps / 5 steps rather than every few.
        poly = finetune(
            dense,
            MagnitudePruning(
                PolynomialDecay(
                    0.0, s, 0, prune_steps, frequency=prune_steps // 5
                ),
                scope="global",
            ),
            data,
            fe,
        )
        cycles = IterativePruning.geometric_sparsities(s, prune_fraction=0.4)
        sched = IterativePruning(cycles, prune_steps // len(cycles))
        it = finetune(dense, MagnitudePruning(sched, scope="global"), data, fe)
        for name, m in [
            ("one-shot", one),
            ("polynomial", poly),
            ("iterative", it),
        ]:
            curves[name].append(accuracy(m, data))
        models[s] = poly
        print(
            f"sparsity {s:.2f}: "
            + ", ".join(f"{k} {v[-1]:.3f}" for k, v in curves.items())
        )

    # 2:4 groups run along the input axis; the first convolution has 5
    # inputs per output (kernel 5 x 1), so it stays dense.
    nm = finetune(
        dense,
        MagnitudePruning(
            ConstantSparsity(0.5, 1, 1),
            n_m=(2, 4),
            targets=lambda layer: np.prod(layer.kernel.shape[:-1]) % 4 == 0,
        ),
        data,
        fe,
    )
    exact = True
    for layer in nm.layers[1:]:  # every 2:4-pruned kernel
        if getattr(layer, "kernel", None) is None:
            continue
        w = keras.ops.convert_to_numpy(layer.kernel)
        w = w.reshape(-1, w.shape[-1])
        if w.shape[0] % 4:
            continue  # not pruned (the first convolution)
        exact &= bool(((w.reshape(-1, 4, w.shape[-1]) != 0).sum(1) == 2).all())
    acc_nm = accuracy(nm, data)
    print(f"2:4 accuracy {acc_nm:.3f} (pattern exact: {exact})")

    stats = compare_to_dense(
        dense,
        models[0.9],
        xt,
        yt,
        eps=(0.0, 0.1, 0.3, 0.5, 0.7),
        draws=args.draws,
    )
    print(
        f"90% (polynomial) vs dense: top-1 agreement "
        f"{stats['top1_agreement']:.3f}, softmax L2 {stats['softmax_l2']:.3f}"
    )
    for row in stats["noise"]:
        print(
            f"  eps {row['eps']:.1f}: dense {row['dense_accuracy']:.3f} "
            f"pruned {row['pruned_accuracy']:.3f}"
        )
    pot = prune_potential(acc_dense, zip(sparsities, curves["polynomial"]))
    print(f"prune potential (clean, polynomial, delta 0.5 pts): {pot}")

    report = sparsity_report(models[0.9])
    print(
        f"report: sparsity {report['sparsity']:.3f}, nonzero "
        f"{report['nonzero']}/{report['params']}, bytes "
        f"{report['compressed_bytes']} vs dense {report['dense_bytes']}"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(OUTPUT_DIR, exist_ok=True)
    plt.figure(figsize=(5, 3.5))
    for name, accs in curves.items():
        plt.plot(sparsities, accs, "o-", label=name)
    plt.axhline(acc_dense, color="k", ls="--", label="dense")
    plt.xlabel("sparsity")
    plt.ylabel("test accuracy")
    plt.legend()
    plt.tight_layout()
    path = os.path.join(OUTPUT_DIR, "pruning.png")
    plt.savefig(path, dpi=120)
    print(f"saved {path}")

    print(f"\ntest accuracy (dense {acc_dense:.3f}; 2:4 {acc_nm:.3f})")
    print(f"{'sparsity':<10}" + "".join(f"{k:>12}" for k in curves))
    for i, s in enumerate(sparsities):
        print(
            f"{s:<10.2f}" + "".join(f"{v[i]:>12.3f}" for v in curves.values())
        )


if __name__ == "__main__":
    main()
    if "--quick" in sys.argv[1:]:
        print(
            "\n(smoke run, --quick: tiny data and a few steps; the figures "
            "above only show that the script runs, not how the method does)"
        )
