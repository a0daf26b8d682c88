"""What AltUp K=2 adds to a `TransformerLM` train step, op by op, on the
backend in use; load-independent counts first.

Models (2 layers, sequence 64, batch 16, head size 32, FFN 4d, vocabulary
256, plain SGD), per width d: `plain` (`altup=1`) and `altup2` (`altup=2`,
static coefficients, the overhead benchmark's AltUp: on torch its
predict and correct take the fast path of `layers/altup/block_ops.py`).
On torch also `altup2/reference`: the same model on the `keras.ops`
reference of predict and correct. Recorded:

- JAX: the jitted stateless SGD step (`common.compiled_train_step`):
  kernels of the entry computation, dots, layout copies, and XLA's cost
  analysis (FLOPs, bytes accessed).
- TensorFlow: the same step as a `tf.function(jit_compile=True)` (tape
  gradient, SGD update): the TensorFlow ops of its traced graph and the
  kernels of XLA's optimized HLO (`experimental_get_compiler_ir`).
- torch (eager): one step (forward, backward, SGD update) under a
  `TorchDispatchMode` counting aten calls by op and the elements the
  non-view ops read and write; then `torch.profiler` self CPU time per op
  over `--steps` steps (load-dependent; the 1-minute load average is
  recorded beside it).

Each figure is `altup2` minus `plain` (on torch also the reference minus
`plain`).

    KERAS_BACKEND=torch python benchmarks/altup_profile.py [--quick]
        [--widths 128 512] [--steps 5]

Writes `benchmarks/results/altup_profile[.<backend>].json`.
"""

import functools
import os
import sys
from collections import Counter

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import figure  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from benchmarks.laurel_profile import hlo_counts  # noqa: E402
from benchmarks.laurel_profile import train_step_counts  # noqa: E402
from keras_efficient.applications import TransformerLM  # noqa: E402
from keras_efficient.layers import AltUp  # noqa: E402
from keras_efficient.layers.altup import block_ops  # noqa: E402

SEQ, BATCH, LAYERS, VOCAB, HEAD_SIZE = 64, 16, 2, 256, 32
BACKEND = keras.backend.backend()
# aten ops that only make views (no element is read or written).
VIEW_OPS = {
    "view", "_unsafe_view", "reshape", "select", "slice", "unsqueeze",
    "squeeze", "expand", "as_strided", "unbind", "t", "transpose",
    "permute", "detach", "alias", "lift_fresh", "split", "split_with_sizes",
}  # fmt: skip


def build(name, d):
    keras.utils.set_random_seed(0)
    model = TransformerLM(
        vocabulary_size=VOCAB,
        sequence_length=SEQ,
        hidden_dim=d,
        num_layers=LAYERS,
        num_heads=max(1, d // HEAD_SIZE),
        altup=1 if name == "plain" else 2,
    )
    if name == "altup2/reference":
        for layer in model._flatten_layers():
            if isinstance(layer, AltUp):
                layer.predict = functools.partial(
                    block_ops.predict_reference, num_blocks=2
                )
                layer.correct = functools.partial(
                    block_ops.correct_reference,
                    active_block=layer.active_block,
                )
    return model


def make_data(n, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (n, SEQ + 1)).astype("int32")
    return ids[:, :-1], ids[:, 1:]


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# ---------------------------------------------------------------- JAX


def jax_counts(model, x, y):
    return train_step_counts(model, LOSS, x, y)


# ---------------------------------------------------------------- TF


def tensorflow_counts(model, x, y):
    import tensorflow as tf

    model(x[:1])
    weights = model.trainable_variables

    @tf.function(jit_compile=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=True))
        grads = tape.gradient(loss, [w.value for w in weights])
        for w, g in zip(weights, grads):
            w.assign_sub(1e-3 * tf.convert_to_tensor(g))
        return loss

    x, y = tf.constant(x), tf.constant(y)
    graph = step.get_concrete_function(x, y).graph
    types = Counter(op.type for op in graph.get_operations())
    counts = hlo_counts(
        step.experimental_get_compiler_ir(x, y)(stage="optimized_hlo")
    )
    counts["graph_ops"] = sum(types.values())
    counts["graph_ops_by_type"] = dict(types.most_common())
    return counts


# ---------------------------------------------------------------- torch


def _torch_step(model, x, y):
    import torch

    loss = LOSS(y, model(x, training=True))
    loss.backward()
    with torch.no_grad():
        for w in model.trainable_variables:
            w.value.sub_(1e-3 * w.value.grad)
            w.value.grad = None


def torch_counts(model, x, y, steps):
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile
    from torch.utils._python_dispatch import TorchDispatchMode

    calls, elements = Counter(), Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            calls[name] += 1
            if name not in VIEW_OPS:
                tensors = [*args, *(kwargs or {}).values()]
                outs = out if isinstance(out, (list, tuple)) else [out]
                tensors += list(outs)
                elements[name] += sum(
                    t.numel() for t in tensors if isinstance(t, torch.Tensor)
                )
            return out

    x, y = torch.tensor(x), torch.tensor(y, dtype=torch.long)
    for _ in range(2):
        _torch_step(model, x, y)
    with Count():
        _torch_step(model, x, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            _torch_step(model, x, y)
    self_us = {
        e.key: e.self_cpu_time_total / steps
        for e in prof.key_averages()
        if e.key.startswith("aten::")
    }
    return {
        "aten_calls": sum(calls.values()),
        "elements": sum(elements.values()),
        "calls_by_op": dict(calls),
        "elements_by_op": dict(elements),
        "self_cpu_us": sum(self_us.values()),
        "self_cpu_us_by_op": self_us,
        "load_1min": os.getloadavg()[0],
    }


# ---------------------------------------------------------------- report


def _difference(a, b):
    """`b - a` for numbers and for dicts of numbers (by key)."""
    out = {}
    for key, value in b.items():
        if isinstance(value, dict):
            keys = set(value) | set(a.get(key, {}))
            diff = {k: value.get(k, 0) - a[key].get(k, 0) for k in keys}
            out[key] = {k: v for k, v in diff.items() if v}
        elif isinstance(value, (int, float)) and key != "load_1min":
            out[key] = value - a.get(key, 0)
    return out


def profile_width(d, steps):
    x, y = make_data(BATCH)
    names = ["plain", "altup2"]
    if BACKEND == "torch":
        names.append("altup2/reference")
    counts = {}
    for name in names:
        model = build(name, d)
        if BACKEND == "jax":
            counts[name] = jax_counts(model, x, y)
        elif BACKEND == "tensorflow":
            counts[name] = tensorflow_counts(model, x, y)
        else:
            counts[name] = torch_counts(model, x, y, steps)
    figures = []
    for name, base in (("altup2", "plain"), ("altup2/reference", "plain")):
        if name not in counts:
            continue
        diff = _difference(counts[base], counts[name])
        headline = {"jax": "xla_bytes", "tensorflow": "kernels"}
        key = headline.get(BACKEND, "elements")
        fig = figure(
            f"altup_profile/{name}-{base}/d{d}/{key}",
            diff[key],
            note=f"{name} minus {base}, one train step, batch {BATCH}, "
            f"sequence {SEQ}",
        )
        fig.update({"difference": diff, base: counts[base], name: counts[name]})
        figures.append(fig)
    return figures


def main():
    def extra(parser):
        parser.add_argument("--widths", type=int, nargs="+", default=None)
        parser.add_argument("--steps", type=int, default=5)

    args = parse_args(__doc__.splitlines()[0], extra=extra)
    if BACKEND == "torch":
        import torch

        torch.set_num_threads(1)  # shared machine: one core for the timer
    widths = args.widths or ((64,) if args.quick else (128, 512))
    load = os.getloadavg()[0]
    figures = []
    for d in widths:
        figures += profile_width(d, args.steps)
    note = (
        f"1-minute load average {load:.2f} at the start on "
        f"{os.cpu_count()} shared cores; only the torch self CPU times "
        "depend on load (counts and XLA figures do not)."
    )
    write_results("altup_profile", figures, args, extra={"note": note})
    for fig in figures:
        diff = fig["difference"]
        small = {k: v for k, v in diff.items() if not isinstance(v, dict)}
        print(fig["name"], small)
        for key in ("calls_by_op", "self_cpu_us_by_op", "graph_ops_by_type"):
            if key in diff:
                top = sorted(diff[key].items(), key=lambda kv: -abs(kv[1]))
                print("  ", key, dict(top[:12]))


if __name__ == "__main__":
    main()
