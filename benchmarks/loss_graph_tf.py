"""The TensorFlow train step of the distillation losses: graph and XLA
counts (load-independent) and interleaved step times.

At the overhead benchmark's loss setting (`benchmarks/overhead.py`'s loss
family: an MLP 40 -> d -> d -> 10, batch 256, SGD, `jit_compile=True`)
Keras runs each step as a plain `tf.function` (`multi_step_on_iterator`:
the iterator read, the call of the step, the data checks' reads) around
one XLA-compiled function (`one_step_on_data`: forward, loss, gradient,
update). For cross-entropy, `SLaMLoss` and `DebiasedDistillationLoss`
this script counts:

- the ops of the calling graph (total, `If`, `ReadVariableOp`) and the
  resource variables the XLA call reads or writes;
- the XLA step's optimized HLO: instructions and kernels (fusions,
  copies, dots, custom calls, conditionals: what XLA CPU runs one by one).

With `--time-rounds N` it also times, interleaved over N rounds,
`train_function` on a fixed iterator (what `fit` calls a step) and the
XLA step alone on a fixed batch, in wall and in process CPU time, with
the 1-minute load average.

    KERAS_BACKEND=tensorflow python benchmarks/loss_graph_tf.py
        [--width 256] [--label after] [--time-rounds 15]
        [--output benchmarks/results/loss_graph.tensorflow.json]
"""

import argparse
import collections
import json
import os
import re
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import write_run  # noqa: E402
from benchmarks.overhead_floor import LOSS_BATCH  # noqa: E402
from benchmarks.overhead_floor import loss_config  # noqa: E402
from benchmarks.overhead_models import build  # noqa: E402
from benchmarks.overhead_models import make_data  # noqa: E402
from benchmarks.overhead_models import make_teacher  # noqa: E402

METHODS = ("cross_entropy", "slam", "debiased")
RESULTS = os.path.join(os.path.dirname(__file__), "results")
KERNELS = ("fusion", "copy", "dot", "custom-call", "conditional", "while")


def compiled_model(method, width, teacher):
    import tensorflow as tf

    cfg = loss_config(width)
    x, y = make_data("loss", cfg, LOSS_BATCH * 4)
    model, loss = build("loss", method, cfg, teacher)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01), loss=loss, jit_compile=True
    )
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(LOSS_BATCH)
    iterator = iter(data.repeat())
    model.make_train_function()
    model.train_function(iterator)
    batch = (tf.constant(x[:LOSS_BATCH]), tf.constant(y[:LOSS_BATCH]))
    return model, iterator, batch


def _functions(train_function):
    """Keras's `multi_step_on_iterator` and `one_step_on_data` (XLA)."""
    import tensorflow as tf

    found, seen, todo = {}, set(), [train_function]
    while todo:
        fn = todo.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        if isinstance(fn, tf.types.experimental.PolymorphicFunction):
            key = "xla" if getattr(fn, "_jit_compile", False) else "outer"
            found.setdefault(key, fn)
        todo += [
            getattr(fn, a, None) for a in ("python_function", "__wrapped__")
        ]
        todo = [f for f in todo if f is not None]
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if callable(value):
                todo.append(value)
    return found["outer"], found["xla"]


def counts(model, iterator, batch):
    outer, step = _functions(model.train_function)
    graph = outer.get_concrete_function(iterator).graph
    ops = collections.Counter(op.type for op in graph.get_operations())
    calls = [
        op
        for op in graph.get_operations()
        if op.type in ("StatefulPartitionedCall", "PartitionedCall")
    ]
    resources = sum(
        t.dtype.name == "resource" for op in calls for t in op.inputs
    )
    hlo = step.experimental_get_compiler_ir(batch)(stage="optimized_hlo")
    entry = hlo.split("ENTRY")[1]
    kinds = collections.Counter(
        m.group(1) for m in re.finditer(r"= \S+ ([\w-]+)\(", entry)
    )
    return {
        "outer_graph_ops": sum(ops.values()),
        "outer_if": ops["If"],
        "outer_read_variable": ops["ReadVariableOp"],
        "xla_call_resource_inputs": resources,
        "hlo_instructions": len(re.findall(r"^\s*\S+ = ", hlo, re.M)),
        "hlo_kernels": sum(kinds[k] for k in KERNELS),
        "hlo_fusions": kinds["fusion"],
        "hlo_bytes": len(hlo),
    }


def step_times(models, rounds, steps=40):
    """Per round and model: ms per step of `train_function` (a fixed
    iterator) and of the XLA step alone (a fixed batch), wall and CPU."""
    times = collections.defaultdict(list)
    for _ in range(rounds):
        for method, (model, iterator, batch) in models.items():
            _, step = _functions(model.train_function)
            calls = {
                "train_function": (model.train_function, iterator),
                "xla_step": (step, batch),
            }
            for part, (call, arg) in calls.items():
                call(arg)
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(steps):
                    out = call(arg)
                float(out["loss"])
                wall = (time.perf_counter() - wall) / steps * 1e3
                cpu = (time.process_time() - cpu) / steps * 1e3
                times[(method, part, "wall")].append(wall)
                times[(method, part, "cpu")].append(cpu)
    out = {}
    for (method, part, clock), values in times.items():
        base = np.asarray(times[("cross_entropy", part, clock)])
        ratios = np.asarray(values) / base
        out.setdefault(method, {}).setdefault(part, {})[clock] = {
            "median_ms": round(float(np.median(values)), 3),
            "ratio_median": round(float(np.median(ratios)), 3),
            "ratio_iqr": [
                round(float(q), 3) for q in np.percentile(ratios, [25, 75])
            ],
        }
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--label", default="current")
    parser.add_argument("--note", default="", help="stored with the run")
    parser.add_argument("--time-rounds", type=int, default=0)
    parser.add_argument(
        "--output",
        default=os.path.join(RESULTS, "loss_graph.tensorflow.json"),
    )
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("Run with KERAS_BACKEND=tensorflow.")
    import tensorflow as tf

    teacher = make_teacher(1024)
    models = {m: compiled_model(m, args.width, teacher) for m in METHODS}
    run = {
        "width": args.width,
        "tensorflow": tf.__version__,
        "note": args.note,
        "counts": {m: counts(*models[m]) for m in METHODS},
    }
    if args.time_rounds:
        run["load_1min_at_start"] = os.getloadavg()[0]
        run["step_ms"] = step_times(models, args.time_rounds)
        run["load_1min_at_end"] = os.getloadavg()[0]
    write_run(
        args.output,
        args.label,
        run,
        what="The TensorFlow jit_compile=True train step of the overhead "
        "benchmark's loss MLP (40 -> d -> d -> 10, batch "
        f"{LOSS_BATCH}, SGD): ops of Keras's calling graph, resource "
        "variables of the XLA call, the XLA step's optimized HLO "
        "(kernels: fusions, copies, dots, custom calls, conditionals); "
        "counts are load-independent. step_ms: interleaved, wall and "
        "process CPU time, ratios to cross-entropy per round.",
        command="KERAS_BACKEND=tensorflow python benchmarks/loss_graph_tf.py "
        f"--width {args.width} --label {args.label}"
        + (f" --time-rounds {args.time_rounds}" if args.time_rounds else ""),
    )
    print(json.dumps(run, indent=1))


if __name__ == "__main__":
    main()
