"""Where LAuReL RW's and RW+LR's step time goes in a `TransformerLM`, and
the fused gradients against the `keras.ops` reference.

Models (2 layers, sequence 64, batch 16, head size 32, FFN 4d, vocabulary
256, `laurel_rank = d/8`, plain SGD, `jit_compile=True`), per width d:
`plain`, `rw/reference` and `rw+lr/reference` (the `keras.ops` merges,
autodiff gradients), `rw/fused` and `rw+lr/fused` (`laurel_ops`'s
softmax merges with hand-written gradients). For each it records

- the step-time ratio to `plain`: every model's `model.fit` epochs taken
  in turn for several rounds in one process (`compare_step_times`), the
  median of the per-round ratios with the min and max;
- on JAX, counts from the compiled train step (`jax.jit(step).lower(...)
  .compile()`): the kernels the entry computation launches (fusions and
  library dots), the layout copies among them (fusions named `copy_*` /
  `transpose_*`) and the floats they write, the matmuls, the reductions
  (kernels whose op is a `reduce_*`), and XLA's `cost_analysis()` FLOPs
  and bytes accessed.

With `--hlo-only` it times nothing and writes only the compiled-step
counts (load-independent) to `laurel_profile.hlo.json`: per model and
width, bytes accessed over `plain`'s.

The machine it ran on is recorded with its 1-minute load average at the
start and end; on a shared machine compare ratios, not absolute times.

    KERAS_BACKEND=jax python benchmarks/laurel_profile.py [--quick]
        [--widths 128 512] [--repeats 9] [--steps 10] [--hlo-only]
"""

import os
import re
import statistics
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import compare_step_times  # noqa: E402
from benchmarks.common import compiled_train_step  # noqa: E402
from benchmarks.common import figure  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from keras_efficient.applications import TransformerLM  # noqa: E402
from keras_efficient.layers import LaurelResidual  # noqa: E402

SEQ, BATCH, LAYERS, VOCAB, HEAD_SIZE = 64, 16, 2, 256, 32
# name -> (LAuReL variant, merge implementation)
MODELS = {
    "plain": (None, None),
    "rw/reference": ("rw", "reference"),
    "rw/fused": ("rw", "fused"),
    "rw+lr/reference": ("rw+lr", "reference"),
    "rw+lr/fused": ("rw+lr", "fused"),
}
TARGETS = {"rw": 1.02, "rw+lr": 1.04}


def build(name, d):
    variant, implementation = MODELS[name]
    keras.utils.set_random_seed(0)
    model = TransformerLM(
        vocabulary_size=VOCAB,
        sequence_length=SEQ,
        hidden_dim=d,
        num_layers=LAYERS,
        num_heads=max(1, d // HEAD_SIZE),
        laurel=variant,
        laurel_rank=max(1, d // 8),
    )
    for layer in model._flatten_layers():
        if isinstance(layer, LaurelResidual) and implementation:
            layer.implementation = implementation
    return model


def make_data(n, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (n, SEQ + 1)).astype("int32")
    return ids[:, :-1], ids[:, 1:]


_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = (\w+)\[([\d,]*)\][^ ]* ([a-z][\w\-]*)\("
)


def hlo_counts(text):
    """Kernels launched by the entry computation of compiled HLO text."""
    counts = {
        "kernels": 0,
        "dots": 0,
        "reductions": 0,
        "layout_copies": 0,
        "copy_floats": 0,
    }
    in_entry = False
    for line in text.splitlines():
        if line.startswith("ENTRY"):
            in_entry = True
            continue
        if line and not line[0].isspace():
            in_entry = False
        match = _INSTRUCTION.match(line) if in_entry else None
        if not match:
            continue
        name, _, dims, opcode = match.groups()
        if opcode not in ("fusion", "dot", "custom-call", "copy"):
            continue
        counts["kernels"] += 1
        is_dot = opcode == "dot" or "dot_general" in line.split("op_name")[-1]
        counts["dots"] += is_dot and opcode in ("dot", "fusion")
        op_name = re.search(r'op_name="[^"]*/(\w+)"', line)
        counts["reductions"] += bool(
            op_name and op_name.group(1).startswith("reduce_")
        )
        if opcode == "copy" or name.startswith(("copy", "transpose")):
            counts["layout_copies"] += 1
            sizes = [int(v) for v in dims.split(",") if v]
            counts["copy_floats"] += int(np.prod(sizes))
    return counts


def train_step_counts(model, loss_fn, x, y):
    """`hlo_counts` and XLA's cost of `model`'s jitted SGD train step."""
    compiled, cost = compiled_train_step(model, loss_fn, x, y)
    counts = hlo_counts(compiled.as_text())
    counts["xla_flops"] = float(cost.get("flops", 0.0))
    counts["xla_bytes"] = float(cost.get("bytes accessed", 0.0))
    return counts


def train_step_hlo(name, d):
    """Counts and XLA cost of the jitted stateless SGD train step (JAX)."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x, y = make_data(BATCH)
    return train_step_counts(build(name, d), loss_fn, x, y)


def run_width(d, steps, repeats):
    models = {}
    for name in MODELS:
        model = build(name, d)
        model.compile(
            optimizer=keras.optimizers.SGD(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=keras.backend.backend() != "torch",
        )
        models[name] = model
    x, y = make_data(BATCH * steps)
    res = compare_step_times(models, x, y, BATCH, steps, repeats)
    hlo = {}
    if keras.backend.backend() == "jax":
        hlo = {name: train_step_hlo(name, d) for name in MODELS}
    figures = []
    for name in list(MODELS)[1:]:
        ratios = res[name]["ratios"]
        fig = figure(
            f"laurel_profile/{name}/d{d}",
            statistics.median(ratios),
            target=("<=", TARGETS[name.split("/")[0]]),
            unit="x",
            note=f"median of {repeats} interleaved rounds of {steps} "
            f"steps, batch {BATCH}, sequence {SEQ}",
        )
        fig.update(
            {
                "ratios": ratios,
                "min": min(ratios),
                "max": max(ratios),
                "step_seconds": statistics.median(res[name]["step_seconds"]),
                "plain_step_seconds": statistics.median(
                    res["plain"]["step_seconds"]
                ),
            }
        )
        if hlo:
            fig["hlo"] = hlo[name]
            fig["plain_hlo"] = hlo["plain"]
        figures.append(fig)
    # Each fused merge against its reference, round by round.
    for variant in ("rw", "rw+lr"):
        pairs = zip(
            res[f"{variant}/fused"]["step_seconds"],
            res[f"{variant}/reference"]["step_seconds"],
        )
        fused_vs_reference = [a / b for a, b in pairs]
        fig = figure(
            f"laurel_profile/{variant}/fused_over_reference/d{d}",
            statistics.median(fused_vs_reference),
            unit="x",
            note=f"per-round step time of {variant}/fused over "
            f"{variant}/reference",
        )
        fig["ratios"] = fused_vs_reference
        figures.append(fig)
    return figures


def hlo_width(d):
    """Compiled-step counts of every model at width `d`, as figures of
    bytes accessed over `plain`'s (no timing)."""
    hlo = {name: train_step_hlo(name, d) for name in MODELS}
    plain = hlo["plain"]
    figures = []
    for name in list(MODELS)[1:]:
        flops = hlo[name]["xla_flops"] / plain["xla_flops"]
        fig = figure(
            f"laurel_profile/hlo/{name}/d{d}",
            hlo[name]["xla_bytes"] / plain["xla_bytes"],
            unit="x",
            note="XLA bytes accessed of the compiled JAX train step over "
            f"plain's; FLOPs {flops:.3f}x",
        )
        fig["hlo"] = hlo[name]
        fig["plain_hlo"] = plain
        figures.append(fig)
    return figures


def _arguments(parser):
    parser.add_argument("--widths", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument(
        "--hlo-only",
        action="store_true",
        help="only the compiled-step counts (JAX), no timing",
    )


def main():
    args = parse_args(__doc__.splitlines()[0], extra=_arguments)
    widths = args.widths or ((64,) if args.quick else (128, 512))
    repeats = args.repeats or (3 if args.quick else 9)
    steps = args.steps or (3 if args.quick else 10)
    if args.hlo_only:
        figures = [fig for d in widths for fig in hlo_width(d)]
        write_results("laurel_profile.hlo", figures, args)
        for fig in figures:
            print(f"  {fig['name']}: {fig['mean']:.4f}x bytes {fig['hlo']}")
        return
    load_start = os.getloadavg()[0]
    figures = []
    for d in widths:
        figures += run_width(d, steps, repeats)
    load_end = os.getloadavg()[0]
    note = (
        f"1-minute load average {load_start:.2f} at the start, "
        f"{load_end:.2f} at the end, on {os.cpu_count()} cores shared with "
        "other jobs: compare ratios, not absolute times."
    )
    write_results(
        "laurel_profile",
        figures,
        args,
        extra={"note": note, "load_average": [load_start, load_end]},
    )
    print_table(figures, title=f"LAuReL step time ({keras.backend.backend()})")
    print(note)
    for fig in figures:
        if "hlo" in fig:
            print(f"  {fig['name']}: {fig['hlo']}")
    if figures and "plain_hlo" in figures[0]:
        print(f"  plain: {figures[0]['plain_hlo']}")


if __name__ == "__main__":
    main()
