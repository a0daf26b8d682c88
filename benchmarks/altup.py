"""AltUp benchmark: byte-level LM on the standard library's source.

Compares, in one process, a baseline `TransformerLM` of width d with AltUp
K = 2 and K = 4 (widened embedding), Recycled-AltUp K = 2, Sequence-AltUp
(stride 2 on every other block) and a dense model of width 2d:

- step-time ratios to the baseline (compiled train steps, `jit_compile=True`
  on JAX and TensorFlow, interleaved rounds, median);
- eval loss (nats per byte) and bits per byte at equal steps, over seeds,
  for the baseline, AltUp K = 2, Recycled-AltUp K = 2 and the 2x-wide model
  (AltUp K = 4 and Sequence-AltUp are timed only, to keep the full run
  within ~15 minutes on a shared 2-core CPU);
- the fraction of the baseline-to-2x-dense loss gap that AltUp closes,
  `(loss_base - loss_altup) / (loss_base - loss_dense2x)`, paired by seed.

    KERAS_BACKEND=jax python benchmarks/altup.py            # full
    KERAS_BACKEND=jax python benchmarks/altup.py --quick    # CI smoke
    KERAS_BACKEND=tensorflow python benchmarks/altup.py --timing-only
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import Progress  # noqa: E402
from benchmarks.common import compare_step_times  # noqa: E402
from benchmarks.common import figure  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from keras_efficient.applications import TransformerLM  # noqa: E402
from keras_efficient.datasets import dataset_fingerprint  # noqa: E402
from keras_efficient.datasets import lm_windows  # noqa: E402
from keras_efficient.datasets import load_stdlib_text  # noqa: E402

FULL = dict(
    hidden_dim=64,
    num_layers=4,
    num_heads=4,
    sequence_length=64,
    batch_size=16,
    steps=200,
    eval_windows=256,
    seeds=3,
    timing_steps=10,
    timing_repeats=5,
)
QUICK = dict(
    hidden_dim=32,
    num_layers=2,
    num_heads=2,
    sequence_length=32,
    batch_size=8,
    steps=30,
    eval_windows=32,
    seeds=1,
    timing_steps=5,
    timing_repeats=3,
)
LEARNING_RATE = 2e-3
# Trained to equal steps over seeds (the quality claim is AltUp K = 2 against
# the baseline and the 2x-wide model); all variants are timed.
QUALITY_VARIANTS = ("baseline", "altup2", "recycled2", "dense2x")


def variants(d):
    """name -> TransformerLM options on top of the shared ones."""
    return {
        "baseline": dict(hidden_dim=d),
        "altup2": dict(hidden_dim=d, altup=2),
        "altup4": dict(hidden_dim=d, altup=4),
        "recycled2": dict(hidden_dim=d, altup=2, recycled=True),
        "sequence_altup2": dict(hidden_dim=d, sequence_altup=2),
        "dense2x": dict(hidden_dim=2 * d),
    }


def build(config, options, seed):
    keras.utils.set_random_seed(seed)
    model = TransformerLM(
        vocabulary_size=256,
        sequence_length=config["sequence_length"],
        num_layers=config["num_layers"],
        num_heads=config["num_heads"],
        **options,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=keras.backend.backend() in ("jax", "tensorflow"),
    )
    return model


def _extra_arguments(parser):
    parser.add_argument(
        "--timing-only",
        action="store_true",
        help="measure step-time ratios only (no training to equal steps)",
    )
    parser.add_argument(
        "--hidden-dim",
        type=int,
        default=None,
        help="width d of the baseline (default 64; 32 with --quick)",
    )


def main():
    args = parse_args(
        __doc__.splitlines()[0],
        extra=_extra_arguments,
    )
    config = dict(QUICK if args.quick else FULL)
    if args.hidden_dim:
        config["hidden_dim"] = args.hidden_dim
    if args.seeds:
        config["seeds"] = args.seeds
    d, t, b = (
        config["hidden_dim"],
        config["sequence_length"],
        config["batch_size"],
    )
    train, validation = load_stdlib_text(max_bytes=3_000_000)
    x_eval, y_eval = lm_windows(validation, t, config["eval_windows"], seed=99)
    specs = variants(d)
    print(
        f"backend={keras.backend.backend()} d={d} layers="
        f"{config['num_layers']} T={t} batch={b} steps={config['steps']} "
        f"seeds={config['seeds']}"
    )

    losses = {name: [] for name in QUALITY_VARIANTS}
    params = {}
    timing_models = {}
    seeds = [] if args.timing_only else list(range(config["seeds"]))
    runs = Progress(seeds, "seed")
    for seed in runs:
        x, y = lm_windows(train, t, b * config["steps"], seed=seed)
        for name in QUALITY_VARIANTS:
            model = build(config, specs[name], seed)
            start = time.perf_counter()
            model.fit(x, y, batch_size=b, epochs=1, verbose=0, shuffle=False)
            loss = model.evaluate(x_eval, y_eval, batch_size=64, verbose=0)
            losses[name].append(float(loss))
            params[name] = model.count_params()
            runs.log(
                f"seed {seed} {name:16s} eval loss {loss:.4f} "
                f"({loss / np.log(2):.3f} bpb) params {params[name]:,} "
                f"[{time.perf_counter() - start:.0f} s]"
            )
            if seed == 0:
                timing_models[name] = model

    for name, options in specs.items():
        if name not in timing_models:
            timing_models[name] = build(config, options, 0)
            params[name] = timing_models[name].count_params()
    timing_models = {name: timing_models[name] for name in specs}
    n = b * config["timing_steps"]
    x_time, y_time = lm_windows(train, t, n, seed=123)
    timing = compare_step_times(
        timing_models,
        x_time,
        y_time,
        batch_size=b,
        steps=config["timing_steps"],
        repeats=config["timing_repeats"],
        baseline="baseline",
    )

    figures = []
    for name in specs:
        if name == "baseline":
            continue
        target = ("<=", 1.10) if name == "altup2" else None
        figures.append(
            figure(
                f"step_time_ratio/{name}",
                timing[name]["ratios"],
                target=target,
                unit="x",
                note="one ratio per interleaved round; median "
                f"{np.median(timing[name]['ratios']):.3f}",
            )
        )
    for name in specs:
        figures.append(
            figure(
                f"step_seconds/{name}",
                timing[name]["step_seconds"],
                unit="s",
            )
        )
    for name in specs:
        figures.append(figure(f"params/{name}", params[name]))
    if seeds:
        for name in QUALITY_VARIANTS:
            figures.append(figure(f"eval_loss/{name}", losses[name]))
            figures.append(
                figure(
                    f"bits_per_byte/{name}",
                    [v / np.log(2) for v in losses[name]],
                )
            )
        base = np.array(losses["baseline"])
        dense = np.array(losses["dense2x"])
        for name in ("altup2", "recycled2"):
            method = np.array(losses[name])
            figures.append(
                figure(
                    f"eval_loss_minus_baseline/{name}",
                    list(method - base),
                    target=("<", 0.0) if name == "altup2" else None,
                )
            )
            figures.append(
                figure(
                    f"gap_closed/{name}",
                    list((base - method) / (base - dense)),
                    target=(">=", 0.4) if name == "altup2" else None,
                    note="(loss_base - loss) / (loss_base - loss_dense2x)",
                )
            )
    print_table(figures, title="AltUp byte-level LM")
    write_results(
        "altup",
        figures,
        args,
        extra={
            "config": config,
            "variants": specs,
            "quality_variants": list(QUALITY_VARIANTS),
            "learning_rate": LEARNING_RATE,
            "data": {
                "source": "stdlib text, load_stdlib_text(3_000_000)",
                "eval_fingerprint": dataset_fingerprint(x_eval, y_eval),
            },
        },
    )


if __name__ == "__main__":
    main()
