"""Pruning that pays: a smaller, faster ResNet from sensitivity to removal.

Pruning usually ends in a model of the same shape with zeros in it: no
faster. This tutorial goes all the way on scikit-learn's 8x8 digits
(offline):

1. train a ResNet20 (16/32/64 filters);
2. `sensitivity_analysis`: prune each coupled channel group alone at 25%,
   50% and 75% of its filters and measure the accuracy drop on a
   validation split (the table and a plot);
3. `sparsity_policy`: per-group sparsities that remove the target share of
   the parameters at the smallest predicted drop (greedy over the table);
4. gradual filter pruning: a few more epochs, after each one zeroing a
   growing share (cubic ramp up to the policy) of the least important
   filters of every group with `zero_units` (L1 norm over the group,
   coupled residual channels together); then `shrink` removes the zeros
   for real (the smaller model computes what the masked one does);
5. fine-tune the smaller model (fine-tuning the masked model with its
   masks held is the same function class; the small one trains faster);
6. compare accuracy, parameters, FLOPs and measured inference latency
   (batch 64, interleaved rounds) side by side.

    KERAS_BACKEND=jax python examples/prune_to_speed.py [--quick]

The sensitivity plot goes to `examples/output/prune_to_speed.png` (or
`--output-dir`).
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

import keras_efficient  # noqa: E402
from keras_efficient.pruning.cost import compare_cost  # noqa: E402
from keras_efficient.pruning.policy import sparsity_policy  # noqa: E402
from keras_efficient.pruning.sensitivity import plot_sensitivity  # noqa: E402
from keras_efficient.pruning.sensitivity import sensitivity_analysis  # noqa: E402
from keras_efficient.pruning.shrink import shrink  # noqa: E402
from keras_efficient.pruning.shrink import zero_units  # noqa: E402

OUTPUT_DIR = os.path.join(os.path.dirname(__file__), "output")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a small run, under a minute")  # fmt: skip
    parser.add_argument("--target", type=float, default=0.7,
                        help="share of the parameters to remove")  # fmt: skip
    parser.add_argument("--output-dir", default=OUTPUT_DIR)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def compile_model(model, learning_rate):
    model.compile(
        keras.optimizers.Adam(learning_rate),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def gradual_pruning(model, x, y, epochs, policy):
    """Trains `epochs` epochs; after epoch `k` zeroes the least important
    units of each group, up to `policy[group] * ramp(k)` (cubic, ending at
    the policy). Zeroed filters may regrow until the last zeroing."""
    for epoch in range(1, epochs + 1):
        model.fit(x, y, epochs=1, batch_size=64, verbose=0)
        ramp = 1.0 - (1.0 - epoch / epochs) ** 3  # as PolynomialDecay
        ratio = {k: s * ramp for k, s in policy.items()}
        model.set_weights(zero_units(model, ratio).get_weights())
    return model


def main():
    args = parse_args()
    keras.utils.set_random_seed(args.seed)
    # --quick: a quarter-width ResNet20 on 512 images, 1 epoch of training,
    # 1 of gradual pruning and no fine-tuning.
    epochs, ramp, finetune, width = (
        (1, 1, 0, 0.25) if args.quick else (20, 6, 4, 1.0)
    )
    (x, y), (x_test, y_test) = keras_efficient.datasets.load_digits()
    x_train, y_train = x[:-300], y[:-300]
    x_val, y_val = x[-300:], y[-300:]
    if args.quick:
        x_train, y_train = x_train[:512], y_train[:512]

    print(f"1. Training a ResNet20 (width x{width}) for {epochs} epochs")
    dense = keras_efficient.applications.ResNet20(
        input_shape=(8, 8, 1), classes=10, width_multiplier=width
    )
    compile_model(dense, 2e-3).fit(
        x_train, y_train, epochs=epochs, batch_size=64, verbose=0
    )

    print("2. Sensitivity of each channel group (accuracy on validation)")
    # A progress bar on a terminal; one line at the end in a log file.
    verbose = 1 if sys.stdout.isatty() else 2
    table = sensitivity_analysis(dense, x_val, y_val, verbose=verbose)
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, "prune_to_speed.png")
    plot_sensitivity(table, path)
    print(f"   plot: {path}")

    print(f"3. Policy: remove {args.target:.0%} of the parameters")
    policy = sparsity_policy(table, args.target, budget="params")
    for name, sparsity in policy.items():
        print(f"   {name:28s} {sparsity:.2f}")

    print(f"4. Gradual filter pruning for {ramp} epochs, then removal")
    masked = keras.models.clone_model(dense)
    masked.set_weights(dense.get_weights())
    compile_model(masked, 2e-3)
    gradual_pruning(masked, x_train, y_train, ramp, policy)
    small = compile_model(shrink(masked), 1e-3)
    if finetune:
        print(f"5. Fine-tuning the smaller model for {finetune} epochs")
        small.fit(x_train, y_train, epochs=finetune, batch_size=64, verbose=0)
    else:
        print("5. No fine-tuning of the smaller model (--quick)")
    # The dense model gets the same extra epochs, for a fair comparison.
    dense.fit(
        x_train, y_train, epochs=ramp + finetune, batch_size=64, verbose=0
    )

    print("6. Dense vs pruned (batch 64, interleaved latency rounds)")
    rounds = 3 if args.quick else 40
    report = compare_cost(dense, small, (8, 8, 1), 64, rounds)
    accuracy = {
        "dense": dense.evaluate(x_test, y_test, verbose=0)[1],
        "pruned": small.evaluate(x_test, y_test, verbose=0)[1],
    }
    print(f"\n{'':22s}{'dense':>12s}{'pruned':>12s}{'ratio':>10s}")
    # (label, key, format): counts as integers, the rest with 2 decimals.
    lines = (
        ("test accuracy (%)", None, "12.2f"),
        ("parameters", "params", "12,.0f"),
        ("FLOPs / example", "flops", "12,.0f"),
        ("latency median (ms)", "latency_median_ms", "12.2f"),
    )
    for label, key, spec in lines:
        if key is None:
            a, b = 100 * accuracy["dense"], 100 * accuracy["pruned"]
        else:
            a, b = report["dense"][key], report["pruned"][key]
        print(f"{label:22s}{a:{spec}}{b:{spec}}{b / a:10.3f}")
    print(f"\nspeed-up: {report['speedup']:.2f}x on "
          f"{keras.backend.backend()} CPU")  # fmt: skip
    return accuracy, report


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
    if "--quick" in sys.argv[1:]:
        print(
            "\n(smoke run, --quick: tiny data and a few steps; the figures "
            "above only show that the script runs, not how the method does)"
        )
