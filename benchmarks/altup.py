"""AltUp benchmark: eval loss of a byte-level LM over widths.

The quality claim of AltUp (Baykal et al., NeurIPS 2023) is that widening
the token representation to K blocks of width d while every Transformer
block still computes at width d recovers part of the gain of a dense model
of width K * d, at a fraction of its cost. This script measures it on
byte-level language modelling of the Python standard library's source
(`load_stdlib_text`, 3 MB; offline).

For every width d (`--widths`) it trains, with the same windows, steps and
seeds: the `baseline` TransformerLM of width d, `altup2` (AltUp K = 2, a
2x-wide embedding), `recycled2` (Recycled-AltUp K = 2) and the strong
baseline `dense2x`, the dense model of width 2d (trained once and reused
where 2d is also a swept width). It writes the per-seed eval loss in nats
per byte (`eval_loss/VARIANT/dD`), the paired differences
`paired/METHOD-baseline/dD` (mean, 95% interval and verdict via
`paired_difference`; lower is better) and the per-seed fraction of the
baseline-to-dense2x gap each method closes (`gap_closed/METHOD/dD`).
`dense2x` must be clearly ahead of `baseline` for the comparison to mean
anything; its paired difference says whether it is. The JSON is
rewritten after every completed seed, so a run stopped early keeps its
complete seeds (`seeds_completed`).

Training: Adam with global norm clipping 1.0, peak learning rate 2e-3,
5% linear warm-up, cosine decay to 10% of the peak; random windows of
the training text (a fresh draw per seed, the same for every variant).

Modes:

- default: the CPU run behind `benchmarks/results/altup.json` (d = 64
  and 128, 2 layers, 250 steps of 16 x 64 bytes, 3 seeds; ~15 minutes on
  one core; small and short because one shared core is what we had);
- `--quick`: a smoke run (tiny model, one width, one seed);
- `--full`: d = 64, 128 and 256 (dense up to 512), 4 layers, 2,000 steps,
  5 seeds, meant for one GPU in under 10 minutes (written without a GPU to
  try it on: untested there);
- `--timing-only`: step-time ratios of every variant (also AltUp K = 4 and
  Sequence-AltUp) at `--hidden-dim`, no training to equal steps;
  `benchmarks/overhead.py` is the reference for step time.

    KERAS_BACKEND=jax python benchmarks/altup.py [--quick | --full]
        [--widths 64 128] [--steps N] [--seeds N]
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
from benchmarks.common import paired_difference  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from keras_efficient.applications import TransformerLM  # noqa: E402
from keras_efficient.datasets import dataset_fingerprint  # noqa: E402
from keras_efficient.datasets import lm_windows  # noqa: E402
from keras_efficient.datasets import load_stdlib_text  # noqa: E402

SCALES = {
    "quick": dict(
        widths=[32],
        num_layers=2,
        num_heads=2,
        sequence_length=32,
        batch_size=8,
        steps=30,
        eval_windows=32,
        seeds=1,
    ),
    "default": dict(
        widths=[64, 128],
        num_layers=2,
        num_heads=4,
        sequence_length=64,
        batch_size=16,
        steps=250,
        eval_windows=512,
        seeds=3,
    ),
    "full": dict(
        widths=[64, 128, 256],
        num_layers=4,
        num_heads=4,
        sequence_length=128,
        batch_size=32,
        steps=2000,
        eval_windows=1024,
        seeds=5,
    ),
}
TIMING = dict(
    hidden_dim=64,
    num_layers=4,
    num_heads=4,
    sequence_length=64,
    batch_size=16,
    timing_steps=10,
    timing_repeats=5,
)
LEARNING_RATE = 2e-3
METHODS = ("altup2", "recycled2")


def variant_options(name, d):
    """TransformerLM options of a variant of base width d."""
    return {
        "baseline": dict(hidden_dim=d),
        "altup2": dict(hidden_dim=d, altup=2),
        "altup4": dict(hidden_dim=d, altup=4),
        "recycled2": dict(hidden_dim=d, altup=2, recycled=True),
        "sequence_altup2": dict(hidden_dim=d, sequence_altup=2),
        "dense2x": dict(hidden_dim=2 * d),
    }[name]


def build(config, options, seed, steps=None):
    """A compiled TransformerLM; with `steps`, the warm-up cosine schedule."""
    keras.utils.set_random_seed(seed)
    model = TransformerLM(
        vocabulary_size=256,
        sequence_length=config["sequence_length"],
        num_layers=config["num_layers"],
        num_heads=config["num_heads"],
        **options,
    )
    learning_rate = LEARNING_RATE
    if steps:
        warmup = max(1, steps // 20)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0,
            steps - warmup,
            alpha=0.1,
            warmup_target=LEARNING_RATE,
            warmup_steps=warmup,
        )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=keras.backend.backend() in ("jax", "tensorflow"),
    )
    return model


def restart(model, fresh):
    """Gives `model` the initial weights of `fresh` and a new optimizer.

    Each seed's run reuses the model compiled for the first seed (XLA
    compilation is a large share of a CPU run): weights from a freshly
    built model, optimizer slots and step counter (hence the schedule)
    zeroed.
    """
    model.set_weights(fresh.get_weights())
    for variable in model.optimizer.variables:
        if variable.name != "learning_rate":
            variable.assign(np.zeros(variable.shape, variable.dtype))


def quality(config, on_seed=None):
    """Per-seed eval losses of every (variant, width) run, and the figures.

    `on_seed(figures, extra)` is called after every completed seed with the
    summary of the seeds so far, so an interrupted run keeps them.
    """
    t, b, steps = (
        config["sequence_length"],
        config["batch_size"],
        config["steps"],
    )
    train, validation = load_stdlib_text(max_bytes=3_000_000)
    x_eval, y_eval = lm_windows(validation, t, config["eval_windows"], seed=99)
    runs = []
    for d in config["widths"]:
        runs += [("baseline", d)] + [(m, d) for m in METHODS]
        runs.append(("baseline", 2 * d))
    runs = list(dict.fromkeys(runs))
    losses = {run: [] for run in runs}
    params, models = {}, {}
    progress = Progress(
        [(s, r) for s in range(config["seeds"]) for r in runs], "run"
    )
    windows = {}
    for seed, (name, d) in progress:
        if seed not in windows:
            windows = {seed: lm_windows(train, t, b * steps, seed=seed)}
        x, y = windows[seed]
        start = time.perf_counter()
        options = variant_options(name, d)
        fresh = build(config, options, seed)
        fresh(x[:1])
        if (name, d) not in models:
            models[(name, d)] = build(config, options, seed, steps)
            models[(name, d)](x[:1])
        model = models[(name, d)]
        restart(model, fresh)
        keras.utils.set_random_seed(seed)
        model.fit(x, y, batch_size=b, epochs=1, verbose=0, shuffle=False)
        loss = float(model.evaluate(x_eval, y_eval, batch_size=64, verbose=0))
        losses[(name, d)].append(loss)
        params[(name, d)] = model.count_params()
        progress.log(
            f"seed {seed} {name:<9} d={d:<4} eval loss {loss:.4f} "
            f"({loss / np.log(2):.3f} bpb) "
            f"[{time.perf_counter() - start:.0f} s]"
        )
        if (name, d) == runs[-1] and on_seed is not None:
            on_seed(*summary(config, runs, losses, params, x_eval, y_eval))
    return summary(config, runs, losses, params, x_eval, y_eval)


def summary(config, runs, losses, params, x_eval, y_eval):
    """Figures and extra fields of the seeds completed so far."""
    figures = []
    for name, d in runs:
        figures.append(
            figure(
                f"eval_loss/{name}/d{d}",
                losses[(name, d)],
                note=f"nats per byte; {params[(name, d)]:,} parameters",
            )
        )
    for d in config["widths"]:
        base = np.array(losses[("baseline", d)])
        dense = np.array(losses[("baseline", 2 * d)])
        for method in METHODS + ("dense2x",):
            values = dense if method == "dense2x" else losses[(method, d)]
            figures.append(
                paired_difference(
                    f"paired/{method}-baseline/d{d}",
                    list(values),
                    list(base),
                    higher_is_better=False,
                )
            )
        for method in METHODS:
            gap = base - dense
            figures.append(
                figure(
                    f"gap_closed/{method}/d{d}",
                    list(
                        (base - np.array(losses[(method, d)]))
                        / np.where(gap == 0, np.nan, gap)
                    ),
                    note="(loss_base - loss) / (loss_base - loss_dense2x) "
                    "per seed; unstable where the gap is small",
                )
            )
    extra = {
        "config": config,
        "variants": {
            "baseline": "TransformerLM(hidden_dim=d)",
            "altup2": "TransformerLM(hidden_dim=d, altup=2)",
            "recycled2": "TransformerLM(hidden_dim=d, altup=2, recycled=True)",
            "dense2x": "TransformerLM(hidden_dim=2d) (baseline at 2d)",
        },
        "optimizer": f"Adam(global_clipnorm=1), peak lr {LEARNING_RATE}, "
        "5% warm-up, cosine to 10%",
        "params": {f"{n}/d{d}": p for (n, d), p in params.items()},
        "data": {
            "source": "stdlib text, load_stdlib_text(3_000_000)",
            "eval_fingerprint": dataset_fingerprint(x_eval, y_eval),
        },
    }
    return figures, extra


def timing(config, quick):
    """Step-time ratios of every variant to the baseline (no training)."""
    d, t, b = (
        config["hidden_dim"],
        config["sequence_length"],
        config["batch_size"],
    )
    if quick:
        config.update(timing_steps=5, timing_repeats=3)
    train, _ = load_stdlib_text(max_bytes=3_000_000)
    names = (
        "baseline",
        "altup2",
        "altup4",
        "recycled2",
        "sequence_altup2",
        "dense2x",
    )
    models = {n: build(config, variant_options(n, d), 0) for n in names}
    x, y = lm_windows(train, t, b * config["timing_steps"], seed=123)
    result = compare_step_times(
        models,
        x,
        y,
        batch_size=b,
        steps=config["timing_steps"],
        repeats=config["timing_repeats"],
        baseline="baseline",
    )
    figures = []
    for name in names[1:]:
        figures.append(
            figure(
                f"step_time_ratio/{name}",
                result[name]["ratios"],
                unit="x",
                note="one ratio per interleaved round; median "
                f"{np.median(result[name]['ratios']):.3f}",
            )
        )
    for name in names:
        figures.append(
            figure(
                f"step_seconds/{name}", result[name]["step_seconds"], unit="s"
            )
        )
        figures.append(figure(f"params/{name}", models[name].count_params()))
    return figures, {"config": config}


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
        help="width d of the timing run (default 64); in a quality run, "
        "the same as --widths D",
    )
    parser.add_argument(
        "--widths", type=int, nargs="+", default=None, help="base widths d"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps per run"
    )


def main():
    args = parse_args(
        __doc__.splitlines()[0],
        extra=_extra_arguments,
        full_help="GPU-sized quality run (d 64 128 256, 2,000 steps, 5 seeds)",
    )
    if args.timing_only:
        config = dict(TIMING)
        if args.hidden_dim:
            config["hidden_dim"] = args.hidden_dim
        figures, extra = timing(config, args.quick)
        print_table(figures, title="AltUp byte-level LM: step time")
        write_results("altup", figures, args, extra=extra)
        return
    scale = "quick" if args.quick else "full" if args.full else "default"
    config = dict(SCALES[scale], scale=scale)
    if args.hidden_dim:
        config["widths"] = [args.hidden_dim]
    for key in ("widths", "steps", "seeds"):
        if getattr(args, key):
            config[key] = getattr(args, key)
    print(f"backend={keras.backend.backend()} {config}")
    start = time.perf_counter()

    def write(figures, extra):
        extra["wall_seconds"] = time.perf_counter() - start
        extra["seeds_completed"] = figures[0]["n"]
        write_results("altup", figures, args, extra=extra)

    figures, extra = quality(config, on_seed=write)
    print_table(figures, title="AltUp byte-level LM: eval loss")
    for f in figures:
        if "verdict" in f:
            low, high = f["ci95"]
            print(
                f"{f['name']}: {f['mean']:+.4f} [{low:+.4f}, {high:+.4f}] "
                f"{f['verdict']}"
            )


if __name__ == "__main__":
    main()
