"""MoE router choices side by side: dropless vs capacity, z-loss, shared.

Three paired comparisons of `MixtureOfExperts` settings against one
baseline (softmax router, top-2 of 8 experts, dropless, Switch
load-balancing loss 0.01, no z-loss, no shared expert), each trained from
the same seed and data as the baseline:

- `dropless_vs_capacity_1.0`: the baseline against the same layer with
  `capacity_factor=1.0` (tokens beyond an even split are dropped; the
  fraction dropped in the last training batch is recorded).
- `z_loss_vs_none`: `z_loss_weight=1e-3` (ST-MoE) against none.
- `shared_expert_vs_none`: one shared expert plus top-1 routing against
  top-2 routing: the same active expert FLOPs per token (DeepSeekMoE).

on two tasks:

1. The DSM paper's polynomial task (`moe_tasks.polynomial_task`): a random
   degree-4 polynomial on [-1, 1]^8, target at unit variance; the model is
   one `MixtureOfExperts` from the 8 inputs to the scalar output. Figure:
   test MSE (lower is better).
2. Byte-level language modelling of the standard library's source: a
   two-block `TransformerLM` whose feed-forward networks are the
   `MixtureOfExperts` (its `moe_*` flags). Figure: validation cross-entropy
   in bits per byte (lower is better).

Each comparison is a paired difference over seeds (method - baseline)
with its 95% interval and a verdict (`common.paired_difference`).

    KERAS_BACKEND=jax python benchmarks/moe_quality.py           # full
    KERAS_BACKEND=jax python benchmarks/moe_quality.py --quick   # smoke
"""

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import Progress  # noqa: E402
from benchmarks.common import figure  # noqa: E402
from benchmarks.common import paired_difference  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from benchmarks.moe_tasks import POLY_DIM  # noqa: E402
from benchmarks.moe_tasks import jit_compile  # noqa: E402
from benchmarks.moe_tasks import polynomial_task  # noqa: E402
from benchmarks.moe_tasks import train_regression  # noqa: E402
from keras_efficient.applications import TransformerLM  # noqa: E402
from keras_efficient.datasets import lm_windows  # noqa: E402
from keras_efficient.datasets import load_stdlib_text  # noqa: E402
from keras_efficient.layers import MixtureOfExperts  # noqa: E402

# Sized to run in about 25 minutes on one shared CPU core (JAX); with so
# few steps the LM is far from converged (about 3.9 bits per byte).
FULL = dict(
    poly_train=4096,
    poly_test=4096,
    poly_epochs=8,
    poly_hidden=32,
    lm_sequence_length=64,
    lm_width=48,
    lm_train_windows=1536,
    lm_eval_windows=256,
    lm_epochs=2,
    seeds=3,
)
QUICK = dict(
    poly_train=2048,
    poly_test=1024,
    poly_epochs=3,
    poly_hidden=16,
    lm_sequence_length=32,
    lm_width=32,
    lm_train_windows=256,
    lm_eval_windows=64,
    lm_epochs=1,
    seeds=1,
)
NUM_EXPERTS = 8
BASELINE = dict(router="softmax", top_k=2, load_balance_weight=0.01)
# variant -> MixtureOfExperts arguments over BASELINE.
VARIANTS = {
    "baseline": {},
    "capacity_1.0": {"capacity_factor": 1.0},
    "z_loss": {"z_loss_weight": 1e-3},
    "shared_expert": {"top_k": 1, "num_shared_experts": 1},
}
# comparison -> (method, baseline): paired difference method - baseline.
COMPARISONS = {
    "dropless_vs_capacity_1.0": ("baseline", "capacity_1.0"),
    "z_loss_vs_none": ("z_loss", "baseline"),
    "shared_expert_vs_none": ("shared_expert", "baseline"),
}


def moe_options(variant):
    return {**BASELINE, **VARIANTS[variant]}


def dropped(model):
    """Mean `dropped_fraction` of the model's MoE layers (last call)."""
    values = [
        float(layer.dropped_fraction)
        for layer in model._flatten_layers()
        if isinstance(layer, MixtureOfExperts)
    ]
    return float(np.mean(values))


def poly_run(config, variant, data, seed):
    """Test MSE and dropped fraction of one polynomial-task MoE."""

    def builder():
        x = keras.Input((POLY_DIM,))
        y = MixtureOfExperts(
            NUM_EXPERTS,
            config["poly_hidden"],
            output_dim=1,
            **moe_options(variant),
        )(x)
        return keras.Model(x, y)

    mse, params, model = train_regression(
        builder, data, config["poly_epochs"], seed
    )
    return mse, dropped(model), params


def lm_run(config, variant, data, seed):
    """Validation bits per byte and dropped fraction of one MoE LM."""
    (x, y), (x_val, y_val) = data
    keras.utils.set_random_seed(seed)
    options = moe_options(variant)
    d = config["lm_width"]
    model = TransformerLM(
        vocabulary_size=256,
        sequence_length=config["lm_sequence_length"],
        hidden_dim=d,
        num_layers=2,
        num_heads=2,
        intermediate_dim=2 * d,
        moe={"num_experts": NUM_EXPERTS, "router": "softmax"},
        moe_top_k=options["top_k"],
        moe_load_balance_weight=options["load_balance_weight"],
        moe_z_loss_weight=options.get("z_loss_weight", 0.0),
        moe_num_shared_experts=options.get("num_shared_experts", 0),
        moe_capacity_factor=options.get("capacity_factor"),
    )
    batch, epochs = 32, config["lm_epochs"]
    schedule = keras.optimizers.schedules.CosineDecay(
        3e-3, decay_steps=epochs * math.ceil(len(x) / batch)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile(),
    )
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
    fraction = dropped(model)
    # Called directly (no second compiled function to build), in batches
    # of the training size so a capacity is per the same token count.
    logits = np.concatenate(
        [
            keras.ops.convert_to_numpy(model(x_val[i : i + batch]))
            for i in range(0, len(x_val), batch)
        ]
    ).astype("float64")
    logits -= logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(logits).sum(axis=-1))
    picked = np.take_along_axis(logits, y_val[..., None], axis=-1)[..., 0]
    bits = float(np.mean(log_z - picked) / math.log(2))
    return bits, fraction, model.count_params()


def lm_data(config):
    train, val = load_stdlib_text(max_bytes=2_000_000)
    s = config["lm_sequence_length"]
    return (
        lm_windows(train, s, config["lm_train_windows"], seed=0),
        lm_windows(val, s, config["lm_eval_windows"], seed=1),
    )


def run_task(task, config, runner, make_data):
    """Every variant on every seed; returns (values, dropped, params)."""
    values = {v: [] for v in VARIANTS}
    drops = {v: [] for v in VARIANTS}
    params = {}
    runs = Progress(
        [(s, v) for s in range(config["seeds"]) for v in VARIANTS], "run"
    )
    data = None
    for seed, variant in runs:
        if data is None or data[0] != seed:
            data = (seed, make_data(seed))
        start = time.perf_counter()
        value, fraction, params[variant] = runner(
            config, variant, data[1], seed
        )
        values[variant].append(value)
        drops[variant].append(fraction)
        runs.log(
            f"{task} seed {seed} {variant}: {value:.4f} "
            f"(dropped {fraction:.3f}, {time.perf_counter() - start:.0f} s)"
        )
    return values, drops, params


def task_figures(task, unit, values, drops, params):
    figures = []
    for variant in VARIANTS:
        figures.append(
            figure(
                f"{task}/{variant}",
                values[variant],
                unit=unit,
                note=f"{params[variant]:,} params; dropped fraction in the "
                f"last training batch {np.round(drops[variant], 3).tolist()}",
            )
        )
    for name, (method, baseline) in COMPARISONS.items():
        figures.append(
            paired_difference(
                f"{task}/{name}/diff",
                values[method],
                values[baseline],
                higher_is_better=False,
                unit=unit,
            )
        )
    return figures


def main():
    args = parse_args(__doc__.splitlines()[0])
    config = dict(QUICK if args.quick else FULL)
    if args.seeds:
        config["seeds"] = args.seeds
    start = time.perf_counter()
    n_train, n_test = config["poly_train"], config["poly_test"]
    poly = run_task(
        "poly_mse",
        config,
        poly_run,
        lambda seed: polynomial_task(n_train, n_test, seed),
    )
    figures = task_figures("poly_mse", "", *poly)
    print_table(figures, "polynomial task: test MSE")
    shared = lm_data(config)
    lm = run_task("lm_bits_per_byte", config, lm_run, lambda seed: shared)
    figures += task_figures("lm_bits_per_byte", "", *lm)
    print_table(figures, f"MoE quality ({keras.backend.backend()})")
    write_results(
        "moe_quality",
        figures,
        args,
        extra={
            "config": config,
            "baseline": {"num_experts": NUM_EXPERTS, **BASELINE},
            "variants": VARIANTS,
            "comparisons": {k: list(v) for k, v in COMPARISONS.items()},
            "seconds": round(time.perf_counter() - start, 1),
        },
    )


if __name__ == "__main__":
    main()
