"""aten calls of the distillation losses on torch (load-independent).

Eager torch pays a fixed host cost for every aten call (a few us on a CPU),
so at the overhead benchmark's loss setting (student logits and teacher
probabilities of shape (256, 10), `benchmarks/overhead.py`'s loss family)
`SLaMLoss` and `DebiasedDistillationLoss` cost what their *number* of calls
costs, not their FLOPs. This script counts, with `torch.profiler`, every
`aten::` event (nested ones included) of:

- one loss call (forward) and one loss call plus its backward to the
  student logits, for cross-entropy, SLaM and debiased;
- the parts of each loss call: the output-convention checks
  (`check_outputs`), the margin, the knot interpolation(s) (debiased's
  alpha(x) whole, `estimate`, where its torch fast path takes both),
  SLaM's k(x) and alpha(x) (`example_k`, `alpha`), its k-hot mask (or,
  where its torch fast path runs, SLaM's whole teacher side,
  `teacher_side`, in place of those five), its per-example
  cross-entropy (`_cross_entropies`) and the rest (r(x), the weights,
  Keras' `Loss.__call__` around it with its reduction); the backward's
  aten calls are `forward_backward - forward`;
- one whole train step (`model.train_on_batch`) of the overhead
  benchmark's MLP (40 -> d -> d -> 10, batch 256) with each loss.

With `--time-rounds N` it also times that train step, the three losses
and SLaM and debiased with their torch fast paths off (`LOSS_FAST_PATHS`:
the `keras.ops` references run), interleaved step by step (20 N steps of
each), and reports each one's median and 10th-percentile ratio to
cross-entropy and each loss's to its reference, in wall and in process CPU
time, with the load average (a timing, unlike the counts, depends on what
else runs; the 10th percentile is the least disturbed by it).

    KERAS_BACKEND=torch python benchmarks/loss_ops.py [--width 256]
        [--output benchmarks/results/loss_ops.torch.json] [--label after]
        [--time-rounds 15] [--note TEXT]

`--label` names the run in the JSON (`runs[label]`), so a before / after
pair lives in one file.
"""

import argparse
import json
import os
import sys
from unittest import mock

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import write_run  # noqa: E402
from benchmarks.overhead_floor import CLASSES  # noqa: E402
from benchmarks.overhead_floor import LOSS_BATCH  # noqa: E402
from benchmarks.overhead_floor import loss_config  # noqa: E402
from benchmarks.overhead_models import build  # noqa: E402
from benchmarks.overhead_models import make_loss  # noqa: E402
from benchmarks.overhead_models import make_teacher  # noqa: E402
from keras_efficient import _backend  # noqa: E402
from keras_efficient.distillation import _common  # noqa: E402
from keras_efficient.distillation import _cross_entropies  # noqa: E402
from keras_efficient.distillation import _interpolation  # noqa: E402
from keras_efficient.distillation import _slam_teacher  # noqa: E402
from keras_efficient.distillation import _teacher_loss  # noqa: E402
from keras_efficient.distillation import teacher_accuracy  # noqa: E402
from keras_efficient.losses import SLaMLoss  # noqa: E402

METHODS = ("cross_entropy", "slam", "debiased")
RESULTS = os.path.join(os.path.dirname(__file__), "results")


def count_aten(fn):
    """aten events (nested included) of one call of `fn`, after a warm-up
    call (caches filled, as in every step after the first)."""
    import torch

    fn()
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU]
    ) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name.startswith("aten::"))


class _PartCounter:
    """Counts the aten calls made inside the wrapped functions of one loss
    call, by name: each wrapper brackets its call with a profiler range."""

    PARTS = {
        "checks": (_teacher_loss.TeacherOutputsLoss, "check_outputs"),
        "margin": (_common, "margin"),
        # The estimator's own name for it (debiased's alpha(x)).
        "margin ": (teacher_accuracy, "teacher_margin"),
        "interpolation": (_interpolation, "interpolate_tables"),
        # Debiased's alpha(x) whole (margin and interpolation), where the
        # torch fast paths of the estimator take it.
        "alpha": (teacher_accuracy, "estimate"),
        "k_and_alpha": (SLaMLoss, "example_k"),
        "k_and_alpha ": (SLaMLoss, "alpha"),
        "khot": (_common, "khot"),
        # SLaM's whole teacher side where its torch path takes it (the
        # parts above, inside it, where the reference runs).
        "teacher_side": (_slam_teacher, "teacher_side"),
        "cross_entropy": (_cross_entropies, "mixture_cross_entropy"),
    }

    def __enter__(self):
        import torch

        self._patches = []
        for part, (owner, attr) in self.PARTS.items():
            original = getattr(owner, attr)

            def wrapped(*args, _original=original, _part=part, **kwargs):
                with torch.profiler.record_function(f"part::{_part}"):
                    return _original(*args, **kwargs)

            patch = mock.patch.object(owner, attr, wrapped)
            patch.start()
            self._patches.append(patch)
        return self

    def __exit__(self, *exc):
        for patch in self._patches:
            patch.stop()


def count_parts(fn):
    """{part: aten calls inside it, "total": all} for one call of `fn`."""
    import torch

    with _PartCounter():
        fn()
        with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU]
        ) as prof:
            fn()
    events = list(prof.events())
    ranges = {}
    for e in events:
        if e.name.startswith("part::"):
            part = e.name[len("part::") :].strip()
            ranges.setdefault(part, []).append(
                (e.time_range.start, e.time_range.end)
            )
    counts = {part.strip(): 0 for part in _PartCounter.PARTS}
    total = 0
    for e in events:
        if not e.name.startswith("aten::"):
            continue
        total += 1
        start = e.time_range.start
        # The innermost part around the call (the parts may nest).
        around = [
            (hi - lo, part)
            for part, spans in ranges.items()
            for lo, hi in spans
            if lo <= start <= hi
        ]
        if around:
            counts[min(around)[1]] += 1
    counts["loss_math_and_call"] = total - sum(counts.values())
    counts["total"] = total
    return counts


def measure(width):
    import torch

    cfg = loss_config(width)
    probs, estimator = make_teacher(1024)
    rng = np.random.default_rng(0)
    teacher = torch.from_numpy(probs[:LOSS_BATCH])
    logits = torch.from_numpy(
        rng.normal(size=(LOSS_BATCH, CLASSES)).astype("float32")
    )
    x = rng.normal(size=(LOSS_BATCH, 40)).astype("float32")
    out = {}
    for method in METHODS:
        loss = make_loss(method, probs, estimator)

        def forward(loss=loss):
            return loss(teacher, logits)

        def forward_backward(loss=loss):
            student = logits.clone().requires_grad_(True)
            loss(teacher, student).backward()

        row = {
            "forward": count_aten(forward),
            "forward_backward": count_aten(forward_backward),
        }
        row["backward"] = row["forward_backward"] - row["forward"]
        if method != "cross_entropy":
            row["forward_parts"] = count_parts(forward)
        model, step_loss = build("loss", method, cfg, (probs, estimator))
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=step_loss)
        row["train_step"] = count_aten(
            lambda model=model: model.train_on_batch(x, teacher.numpy())
        )
        out[method] = row
    return out


# The torch fast paths of the losses' own math, switched off for the
# `*_reference` variants of the timing (their `keras.ops` references run).
LOSS_FAST_PATHS = (
    "mixture_cross_entropy",
    "count_leading_below",
    "slam_teacher_side",
    "teacher_accuracy",
    "debiased_weights",
    "soft_ce",
)


class _References:
    """Inside the block, the `keras.ops` references of `LOSS_FAST_PATHS`."""

    def __enter__(self):
        registry = _backend._REGISTERED
        self._saved = {
            n: registry.pop(n) for n in LOSS_FAST_PATHS if n in registry
        }

    def __exit__(self, *exc):
        _backend._REGISTERED.update(self._saved)


def step_times(width, rounds, steps=20):
    """Interleaved train steps (`train_on_batch`) of the MLP with each loss,
    SLaM and debiased also with `LOSS_FAST_PATHS` off (`*_reference`):
    `rounds * steps` rounds of one step of every variant in turn (a burst
    of other jobs then hits every variant alike), each step's wall and
    process CPU time kept. Returns per variant the median and the 10th
    percentile step time and their ratios to cross-entropy's, and each
    loss's ratios to its reference."""
    import contextlib
    import statistics
    import time

    cfg = loss_config(width)
    probs, estimator = make_teacher(1024)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(LOSS_BATCH, 40)).astype("float32")
    y = probs[:LOSS_BATCH]
    variants = {}
    for method in METHODS:
        model, loss = build("loss", method, cfg, (probs, estimator))
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=loss)
        for _ in range(3):
            model.train_on_batch(x, y)
        variants[method] = (model, contextlib.nullcontext)
        if method != "cross_entropy":
            with _References():
                model.train_on_batch(x, y)
            variants[f"{method}_reference"] = (model, _References)
    times = {v: {"wall": [], "cpu": []} for v in variants}
    for _ in range(rounds * steps):
        for variant, (model, context) in variants.items():
            with context():
                w0, c0 = time.perf_counter(), time.process_time()
                model.train_on_batch(x, y)
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            times[variant]["wall"].append(wall)
            times[variant]["cpu"].append(cpu)

    def summary(variant, base):
        row = {}
        for clock in ("wall", "cpu"):
            mine = sorted(times[variant][clock])
            theirs = sorted(times[base][clock])
            p10 = len(mine) // 10
            row[clock] = {
                "median_ratio": statistics.median(mine)
                / statistics.median(theirs),
                "p10_ratio": mine[p10] / theirs[p10],
                "median_step_ms": 1e3 * statistics.median(mine),
                "p10_step_ms": 1e3 * mine[p10],
            }
        return row

    out = {"steps_per_variant": rounds * steps, "interleaved": "per step"}
    for variant in variants:
        out[variant] = summary(variant, "cross_entropy")
    out["fast_paths_vs_reference"] = {
        method: summary(method, f"{method}_reference")
        for method in METHODS
        if method != "cross_entropy"
    }
    out["load_1min"] = os.getloadavg()[0]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--label", default="current")
    parser.add_argument("--note", default="", help="stored with the run")
    parser.add_argument(
        "--time-rounds",
        type=int,
        default=0,
        help="also time interleaved train steps (this many rounds)",
    )
    parser.add_argument(
        "--output", default=os.path.join(RESULTS, "loss_ops.torch.json")
    )
    args = parser.parse_args()
    if _backend.backend() != "torch":
        raise SystemExit("Run with KERAS_BACKEND=torch.")
    counts = measure(args.width)
    timing = None
    if args.time_rounds:
        load = os.getloadavg()[0]
        timing = step_times(args.width, args.time_rounds)
        timing["load_1min_at_start"] = load
    run = {
        "width": args.width,
        "torch": __import__("torch").__version__,
        "note": args.note,
        "counts": counts,
    }
    if timing is not None:
        run["step_time_vs_cross_entropy"] = timing
    write_run(
        args.output,
        args.label,
        run,
        what="aten:: events (nested included) counted with torch.profiler, "
        f"loss inputs ({LOSS_BATCH}, {CLASSES}), after one warm-up call; "
        "train_step: one `train_on_batch` of the overhead benchmark's MLP "
        "(40 -> d -> d -> 10) with that loss. Load-independent.",
        command="KERAS_BACKEND=torch python benchmarks/loss_ops.py "
        f"--width {args.width} --label {args.label}"
        + (f" --time-rounds {args.time_rounds}" if args.time_rounds else ""),
    )
    print(json.dumps(run, indent=1))


if __name__ == "__main__":
    main()
