"""Prune, then distil: a half-width byte LM recovered from its teacher.

Per seed: train a `TransformerLM` teacher on stdlib bytes; cut it to half
its feed-forward width and half its heads (the hidden width follows the
heads on `TransformerLM`) with `keras_efficient.compress.compress`; then
spend the same student steps three ways: distilled from the teacher,
fine-tuned on labels, and the small config trained from scratch.

Figures (bits per byte on held-out bytes, paired by seed):

- pruned + distilled vs from scratch, and vs pruned + fine-tuned;
- the share of the pruned-only -> teacher gap that distillation closes
  (target >= 0.8);
- activation vs magnitude vs Taylor importance (pruned-only quality at
  the same widths);
- parameters (target <= 0.55x) and forward latency of the shrunk model vs
  the teacher at batch 1 and 32 (target >= 1.7x at batch 32 on JAX CPU).

    KERAS_BACKEND=jax python benchmarks/compress.py [--quick | --full]
"""

import time

import common
import keras
import numpy as np

from keras_efficient.applications import TransformerLM
from keras_efficient.compress import compress
from keras_efficient.compress import distill
from keras_efficient.datasets import lm_windows
from keras_efficient.datasets import load_stdlib_text

SIZES = {
    "quick": dict(hidden=32, layers=1, length=32, batch=8, teacher=8,
                  student=4, eval=32, seeds=2, rounds=3),
    "default": dict(hidden=128, layers=2, length=64, batch=16, teacher=300,
                    student=100, eval=128, seeds=5, rounds=15),
    "full": dict(hidden=512, layers=6, length=256, batch=32, teacher=4000,
                 student=1500, eval=512, seeds=5, rounds=30),
}  # fmt: skip
LM_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
RATIOS = dict(ffn_ratio=0.5, head_ratio=0.5, hidden_ratio=0.5)
IMPORTANCES = ("activation", "magnitude", "taylor")


def _jit():
    return keras.backend.backend() != "torch"


def _bpb(model, x, y):
    model.compile(loss=LM_LOSS, jit_compile=_jit())
    return model.evaluate(x, y, batch_size=64, verbose=0) / np.log(2)


def _fit(model, x, y, batch):
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3, global_clipnorm=1.0),
        loss=LM_LOSS,
        jit_compile=_jit(),
    )
    model.fit(x, y, batch_size=batch, verbose=0, shuffle=False)


def _latency(models, x, rounds):
    """Median ms of `predict_on_batch(x)` per model, interleaved."""
    for model in models:
        model.predict_on_batch(x)
    times = [[] for _ in models]
    for _ in range(rounds):
        for t, model in zip(times, models):
            begin = time.perf_counter()
            model.predict_on_batch(x)
            t.append(time.perf_counter() - begin)
    return [float(np.median(t)) for t in times]


def run_seed(seed, size, data):
    train, validation = data
    keras.utils.set_random_seed(seed)
    n, b = size["length"], size["batch"]
    x_t, y_t = lm_windows(train, n, size["teacher"] * b, seed=seed)
    x_s, y_s = lm_windows(train, n, size["student"] * b, seed=seed + 1000)
    x_e, y_e = lm_windows(validation, n, size["eval"], seed=99)
    teacher = TransformerLM(
        vocabulary_size=256, sequence_length=n, hidden_dim=size["hidden"],
        num_layers=size["layers"], num_heads=4,
    )  # fmt: skip
    _fit(teacher, x_t, y_t, b)
    out = {"teacher": _bpb(teacher, x_e, y_e)}
    calibration = (x_t[: 8 * b], y_t[: 8 * b])
    for importance in IMPORTANCES:
        pruned = compress(
            teacher, calibration, importance=importance, batch_size=b, **RATIOS
        )
        out[f"pruned/{importance}"] = _bpb(pruned, x_e, y_e)
    finetuned = compress(teacher, calibration, batch_size=b, **RATIOS)
    _fit(finetuned, x_s, y_s, b)
    out["finetuned"] = _bpb(finetuned, x_e, y_e)
    distilled = compress(teacher, calibration, batch_size=b, **RATIOS)
    distill(
        teacher, distilled, (x_s, y_s), batch_size=b, temperature=1.0,
        optimizer=keras.optimizers.Adam(2e-3, global_clipnorm=1.0),
        verbose=0,
    )  # fmt: skip
    out["distilled"] = _bpb(distilled, x_e, y_e)
    keras.utils.set_random_seed(seed)
    scratch = TransformerLM.from_config(distilled.get_config())
    _fit(scratch, x_s, y_s, b)
    out["scratch"] = _bpb(scratch, x_e, y_e)
    out["params"] = distilled.count_params() / teacher.count_params()
    for batch in (1, 32):
        t_ms, s_ms = _latency([teacher, distilled], x_e[:batch], size["rounds"])
        out[f"speedup/b{batch}"] = t_ms / s_ms
    return out


def main():
    args = common.parse_args(
        __doc__.splitlines()[0],
        full_help="GPU-sized run: width 512, 6 layers, 4000 + 1500 steps",
    )
    mode = "quick" if args.quick else ("full" if args.full else "default")
    size = SIZES[mode]
    seeds = args.seeds or size["seeds"]
    data = load_stdlib_text(max_bytes=300_000 if args.quick else 3_000_000)
    runs = []
    for seed in common.Progress(range(seeds), "seed"):
        runs.append(run_seed(seed, size, data))
    col = {key: [r[key] for r in runs] for key in runs[0]}
    closed = [
        (p - d) / (p - t) if p > t else float("nan")
        for p, d, t in zip(
            col["pruned/activation"], col["distilled"], col["teacher"]
        )
    ]
    figures = [
        common.figure("bpb/teacher", col["teacher"]),
        common.figure("bpb/pruned_only", col["pruned/activation"]),
        common.figure("bpb/pruned_finetuned", col["finetuned"]),
        common.figure("bpb/pruned_distilled", col["distilled"]),
        common.figure("bpb/scratch", col["scratch"]),
        common.paired_difference(
            "bpb_gain/distilled_vs_scratch", col["scratch"], col["distilled"]
        ),
        common.paired_difference(
            "bpb_gain/distilled_vs_finetuned",
            col["finetuned"],
            col["distilled"],
        ),
        common.figure(
            "gap_closed/distilled",
            closed,
            target=(">=", 0.8),
            note="(pruned - distilled) / (pruned - teacher)",
        ),  # fmt: skip
        common.paired_difference(
            "bpb_gain/activation_vs_magnitude",
            col["pruned/magnitude"],
            col["pruned/activation"],
        ),
        common.paired_difference(
            "bpb_gain/activation_vs_taylor",
            col["pruned/taylor"],
            col["pruned/activation"],
        ),
        common.figure("params_ratio", col["params"], target=("<=", 0.55)),
        common.figure("speedup/batch1", col["speedup/b1"], unit="x"),
        common.figure(
            "speedup/batch32",
            col["speedup/b32"],
            target=(">=", 1.7),
            unit="x",
        ),  # fmt: skip
    ]
    common.print_table(figures, title="compress: prune, then distil")
    common.write_results(
        "compress", figures, args, extra={"size": size, "runs": runs}
    )


if __name__ == "__main__":
    main()
