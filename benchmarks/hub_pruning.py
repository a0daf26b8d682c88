"""Pruning overhead on a keras-hub GPT-2: step time with and without.

A random-init `keras_hub.models.GPT2CausalLM` (no preset, nothing
downloaded; `preprocessor=None`, token ids in) is trained with Adam
(`jit_compile=True` on JAX and TensorFlow) with and without
`MagnitudePruning(ConstantSparsity(0.5, 0, frequency=f))` for f = 100
(tfmot's default) and f = 1. `compare_step_times` interleaves the models
round by round (so a drift of the machine hits all alike) after a warm-up
epoch each; the figure is the median of the per-round ratios pruned / plain
with their min and max. The train-step compilations during the timed
rounds are counted (0 expected: the masks are updated inside the step).
The 1-minute load average before and after is recorded, since a loaded
machine widens the spread.

    KERAS_BACKEND=jax python benchmarks/hub_pruning.py [--quick]
"""

import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import compare_step_times  # noqa: E402
from benchmarks.common import figure  # noqa: E402
from benchmarks.common import median  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from benchmarks.pruning import _with_callback  # noqa: E402
from benchmarks.step_timing import CompileCounter  # noqa: E402
from benchmarks.step_timing import load_average  # noqa: E402
from keras_efficient.callbacks import MagnitudePruning  # noqa: E402
from keras_efficient.pruning import ConstantSparsity  # noqa: E402
from keras_efficient.pruning.targets import find_target_weights  # noqa: E402

JIT = keras.backend.backend() != "torch"
FREQUENCIES = (100, 1)


def make_gpt2(quick):
    """A small random-init GPT-2 language model (same seed each call)."""
    import keras_hub

    keras.utils.set_random_seed(0)
    width = 64 if quick else 128
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=512, num_layers=2, num_heads=4, hidden_dim=width,
        intermediate_dim=4 * width, max_sequence_length=64,
    )  # fmt: skip
    model = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=JIT,
    )
    return model


def data(n, length=32):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 512, (n, length + 1)).astype("int32")
    x = {
        "token_ids": ids[:, :-1],
        "padding_mask": np.ones((n, length), "int32"),
    }
    return x, ids[:, 1:]


def run(quick):
    batch, steps = 8, (10 if quick else 30)
    repeats = 3 if quick else 9
    x, y = data(batch * steps)
    models = {"off": make_gpt2(quick)}
    kernels = len(find_target_weights(models["off"]))
    for f in FREQUENCIES:
        callback = MagnitudePruning(ConstantSparsity(0.5, 0, frequency=f))
        models[f"frequency_{f}"] = _with_callback(make_gpt2(quick), callback)
    for model in models.values():  # compile outside the counted rounds
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    load_before = load_average()
    with CompileCounter(models) as counted:
        res = compare_step_times(
            models, x, y, batch, steps=steps, repeats=repeats, baseline="off"
        )
    load_after = load_average()
    figures = []
    for f in FREQUENCIES:
        ratios = res[f"frequency_{f}"]["ratios"]
        figures.append(
            figure(
                f"gpt2_step_time_ratio/frequency_{f}",
                median(ratios),
                target=("<=", 1.03) if f == 100 else None,
                unit="x",
                note=(
                    f"pruned/plain fit of a keras-hub GPT2CausalLM "
                    f"({kernels} kernels pruned), {steps}-step epochs, "
                    f"median of {repeats} interleaved rounds (min "
                    f"{min(ratios):.3f}, max {max(ratios):.3f}); 1-min load "
                    f"average {load_before:.1f} before, {load_after:.1f} "
                    f"after; train-step compiles while timing: "
                    f"{counted.train_step} (JAX), train-function rebuilds: "
                    f"{counted.rebuilds}"
                ),
            )
        )
    extra = {
        "step_seconds": {k: v["step_seconds"] for k, v in res.items()},
        "ratios": {k: v["ratios"] for k, v in res.items()},
        "load_average_1min": {"before": load_before, "after": load_after},
        "compiles_while_timing": {
            "jax_train_step_compiles": counted.train_step,
            "train_function_rebuilds": counted.rebuilds,
        },
    }
    return figures, extra


def main():
    args = parse_args(__doc__.splitlines()[0])
    figures, extra = run(args.quick)
    print_table(figures, "MagnitudePruning overhead on keras-hub GPT-2")
    write_results("hub_pruning", figures, args, extra)


if __name__ == "__main__":
    main()
