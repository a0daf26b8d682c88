"""Where LAuReL's step time goes, kernel by kernel, in the overhead
benchmark's `TransformerLM` (JAX, CPU).

The models are `overhead_models.build("transformer", method, cfg)` at
the overhead benchmark's configuration
(`overhead_floor.transformer_config`) with `--batch` sequences of 64
tokens (default 2: the 128-token step of docs/methods/laurel.md; the
overhead benchmark runs 16). Each one's jitted stateless SGD step runs
`--steps` times under `jax.profiler.trace`, the models taking turns for
`--rounds` rounds. Per kernel (matched across models by its HLO op name,
shape and fused ops, since fusion numbers differ between compilations)
it takes the 20th percentile of its durations times its launches a step:
a duration that other jobs on a shared machine lengthen by preempting it
mostly drops out. It reports, per method over the baseline and by kind
(matmul, reduction, layout copy, elementwise), the kernels it adds and
removes with their time, and the step's idle time (wall time of a step
minus the time at least one kernel runs: what each extra launch costs
the scheduler).

With `--time R` it also times the Keras-compiled models (SGD,
`jit_compile=True`) with `compare_step_times`, R interleaved rounds of
`model.fit` epochs, and with `--old-ops FILE` adds `rw+lr/old`: the same
model whose RW+LR merge takes its gradient from another version of
`layers/laurel_ops.py` (`git show REV:keras_efficient/layers/
laurel_ops.py > FILE`), for a before/after in one process.

    KERAS_BACKEND=jax python benchmarks/laurel_kernels.py [--width 512]
        [--batch 2] [--steps 30] [--rounds 3] [--time 21] [--old-ops FILE]

writes `benchmarks/results/laurel_kernels.json`.
"""

import argparse
import collections
import glob
import importlib.util
import json
import os
import re
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.overhead_floor import transformer_config  # noqa: E402
from benchmarks.overhead_models import build  # noqa: E402
from benchmarks.overhead_models import make_data  # noqa: E402
from benchmarks.step_timing import compare_step_times  # noqa: E402
from benchmarks.step_timing import fit_time_per_step  # noqa: E402
from benchmarks.step_timing import jitted_train_step  # noqa: E402
from benchmarks.step_timing import load_average  # noqa: E402
from keras_efficient.layers import laurel_ops  # noqa: E402

METHODS = ("plain", "rw", "rw+lr")
_LINE = re.compile(r"\s*(?:ROOT\s+)?%?([\w.\-]+) = (\S+) ([a-z][\w\-]*)\(")
_SKIP = ("parameter", "constant", "bitcast", "broadcast")


def jitted_step(method, cfg):
    """The jitted SGD step of one model and its arguments."""
    model, loss_fn = build("transformer", method, cfg)
    x, y = make_data("transformer", cfg, cfg["batch"])
    return jitted_train_step(model, loss_fn, x, y)


def kernel_keys(hlo_text):
    """Kernel name -> (shape, opcode, fused ops, op name) from compiled
    HLO text; the key names the same kernel in another compilation."""
    bodies, current = {}, None
    for line in hlo_text.splitlines():
        if line and not line[0].isspace() and "{" in line:
            match = re.match(r"^(?:ENTRY )?%?([\w.\-]+) ", line)
            current = match.group(1) if match else None
            bodies[current] = []
        elif current and line.strip() == "}":
            current = None
        elif current:
            bodies[current].append(line)
    keys = {}
    for line in hlo_text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        calls = re.search(r"calls=%?([\w.\-]+)", line)
        fused = set()
        for inner in bodies.get(calls.group(1), []) if calls else []:
            op = _LINE.match(inner)
            if op and op.group(3) not in _SKIP:
                fused.add(op.group(3))
        op_name = re.search(r'op_name="([^"]*)"', line)
        # The LAuReL merges' ops carry the layer's name; drop it so that
        # the enclosing block's kernels match across models.
        op_name = op_name.group(1).replace("_laurel", "") if op_name else ""
        shape = match.group(2).split("{")[0]
        keys[match.group(1)] = (shape, match.group(3), tuple(sorted(fused)))
        keys[match.group(1)] += (op_name,)
    return keys


def kind(key):
    _, opcode, fused, _ = key
    if opcode == "dot" or "dot" in fused:
        return "matmul"
    if "reduce" in fused:
        return "reduction"
    if opcode == "copy" or {"copy", "transpose"} & set(fused):
        return "layout copy"
    return "elementwise"


def profile(fn, args, steps, directory, kernels):
    """Kernel durations (name -> [ns]) and per-step (wall, busy) ns of
    `steps` runs of the jitted step under the profiler; `kernels`: the
    HLO names of the step's kernels (they run on the worker threads and
    on the calling one)."""
    import jax
    from jax.profiler import ProfileData

    with jax.profiler.trace(directory):
        for _ in range(steps):
            out = fn(*args)
            args[0] = out[0]
        jax.block_until_ready(out)
    path = sorted(glob.glob(f"{directory}/**/*.xplane.pb", recursive=True))
    durations = collections.defaultdict(list)
    walls, spans = [], []
    for plane in ProfileData.from_file(path[-1]).planes:
        for line in plane.lines:
            for event in line.events:
                end = event.start_ns + event.duration_ns
                if line.name == "python" and event.name.startswith(
                    "ThunkExecutor::Execute (wait"
                ):
                    walls.append((event.start_ns, end))
                elif event.name in kernels:
                    durations[event.name].append(event.duration_ns)
                    spans.append((event.start_ns, end))
    return durations, [(b - a, _busy(spans, a, b)) for a, b in walls]


def _busy(spans, start, end):
    """Nanoseconds in [start, end] during which some kernel runs."""
    busy, open_start, open_end = 0, None, None
    for s, e in sorted((max(s, start), min(e, end)) for s, e in spans):
        if e <= s:
            continue
        if open_end is None or s > open_end:
            busy += 0 if open_end is None else open_end - open_start
            open_start, open_end = s, e
        else:
            open_end = max(open_end, e)
    return busy + (0 if open_end is None else open_end - open_start)


def estimates(durations, keys, runs):
    """Key -> sorted list of per-launch quiet estimates (us a step)."""
    out = collections.defaultdict(list)
    for name, values in durations.items():
        if name in keys:
            per_step = len(values) / runs
            out[keys[name]].append(np.percentile(values, 20) * per_step / 1e3)
    return out


def compare(method, base):
    """Per kind, the kernels only `method` runs (`added`: launches a step
    and us a step), those only `base` runs (`removed`), and the change in
    the time of the kernels both run (`shared_us`: mostly the noise of
    the big matmuls on a loaded machine)."""
    out = collections.defaultdict(
        lambda: {"added": [0, 0.0], "removed": [0, 0.0], "shared_us": 0.0}
    )
    for key in set(method) | set(base):
        row = out[kind(key)]
        if key not in base:
            row["added"][0] += len(method[key])
            row["added"][1] += sum(method[key])
        elif key not in method:
            row["removed"][0] += len(base[key])
            row["removed"][1] += sum(base[key])
        else:
            row["shared_us"] += sum(method[key]) - sum(base[key])
    return {
        k: {
            "added": {"kernels": v["added"][0], "us": round(v["added"][1])},
            "removed": {
                "kernels": v["removed"][0],
                "us": round(v["removed"][1]),
            },
            "shared_us": round(v["shared_us"]),
        }
        for k, v in out.items()
    }


def time_models(cfg, rounds, old_ops=None, steps=11):
    """Interleaved `fit` step times of plain, rw and rw+lr (and
    `rw+lr/old` with `old_ops`' `_lr_grads`): median ratio to plain with
    its IQR, and rw+lr over rw+lr/old round by round."""
    import keras

    models = {}
    x, y = make_data("transformer", cfg, cfg["batch"] * steps)
    grads = {m: laurel_ops._lr_grads for m in METHODS}
    if old_ops:
        spec = importlib.util.spec_from_file_location("old_ops", old_ops)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        grads["rw+lr/old"] = old._lr_grads
    current = laurel_ops._lr_grads
    for name, lr_grads in grads.items():
        model, loss = build("transformer", name.split("/")[0], cfg)
        model.compile(
            optimizer=keras.optimizers.SGD(1e-3), loss=loss, jit_compile=True
        )
        # The merge's gradient is traced on the first step.
        laurel_ops._lr_grads = lr_grads
        fit_time_per_step(model, x, y, cfg["batch"], steps)
        models[name] = model
    laurel_ops._lr_grads = current
    load_start = load_average()
    res = compare_step_times(
        models, x, y, cfg["batch"], steps, rounds, verbose=0
    )
    out = {"load_1min": [load_start, load_average()], "rounds": rounds}
    out["steps_per_epoch"] = steps
    for name in list(models)[1:]:
        q = statistics.quantiles(res[name]["ratios"], n=4)
        out[name] = {
            "ratio": round(statistics.median(res[name]["ratios"]), 3),
            "iqr": [round(q[0], 3), round(q[2], 3)],
            "step_ms": round(
                statistics.median(res[name]["step_seconds"]) * 1e3, 2
            ),
        }
    if old_ops:
        pairs = zip(
            res["rw+lr"]["step_seconds"], res["rw+lr/old"]["step_seconds"]
        )
        new_over_old = [a / b for a, b in pairs]
        q = statistics.quantiles(new_over_old, n=4)
        out["rw+lr_over_old"] = {
            "ratio": round(statistics.median(new_over_old), 3),
            "iqr": [round(q[0], 3), round(q[2], 3)],
        }
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--time", type=int, default=0)
    parser.add_argument("--old-ops", default=None)
    args = parser.parse_args()
    cfg = {**transformer_config(args.width), "batch": args.batch}
    steps = {m: jitted_step(m, cfg) for m in METHODS}
    keys = {}
    for method, (fn, fn_args) in steps.items():
        keys[method] = kernel_keys(fn.lower(*fn_args).compile().as_text())
        out = fn(*fn_args)  # compiles
        fn_args[0] = out[0]
    load_start = load_average()
    durations = {m: collections.defaultdict(list) for m in METHODS}
    idle = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for method in METHODS if r % 2 == 0 else METHODS[::-1]:
                fn, fn_args = steps[method]
                found, per_step = profile(
                    fn, fn_args, args.steps, f"{tmp}/{method}{r}", keys[method]
                )
                for name, values in found.items():
                    durations[method][name] += values
                idle[method] += [(w - b) / 1e6 for w, b in per_step]
    runs = args.steps * args.rounds
    quiet = {m: estimates(durations[m], keys[m], runs) for m in durations}
    result = {
        "config": cfg,
        "load_1min": [load_start, load_average()],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "steps_profiled": runs,
        "kernel_ms": {
            m: round(sum(map(sum, q.values())) / 1e3, 2)
            for m, q in quiet.items()
        },
        "idle_ms": {m: round(statistics.median(v), 2) for m, v in idle.items()},
        "over_plain": {
            m: compare(quiet[m], quiet["plain"]) for m in METHODS[1:]
        },
    }
    if args.time:
        result["timing"] = time_models(cfg, args.time, args.old_ops)
    path = os.path.join(os.path.dirname(__file__), "results")
    with open(os.path.join(path, "laurel_kernels.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
