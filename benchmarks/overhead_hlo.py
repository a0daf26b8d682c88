"""The overhead benchmark's compiled-graph counts (JAX).

Each model's train step (`model.stateless_call` + `jax.value_and_grad` +
an SGD update, jitted: `step_timing.compiled_train_step`) is lowered and
compiled; `hlo_counts` counts, in the compiled HLO text, the instructions
of the entry computation (one per kernel: fusions, copies, converts,
transposes, reduces, dots, convolutions) and module-wide (inside the
fusions too), and XLA's own cost analysis adds flops and bytes accessed.
`hlo_diff` gives method minus baseline.
"""

import re

from benchmarks.overhead_models import build
from benchmarks.overhead_models import make_data
from benchmarks.step_timing import compiled_train_step

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+ = .*? ([a-z][\w\-]*)\(")
KINDS = (
    "fusion",
    "copy",
    "convert",
    "transpose",
    "reduce",
    "dot",
    "convolution",
    "custom-call",
    "sort",
    "gather",
    "scatter",
    "while",
)


def hlo_counts(text):
    """Opcode counts of compiled HLO text: `entry` (the kernels the entry
    computation launches) and `all` (every computation, fusion bodies
    included)."""
    entry, total = {}, {}
    in_entry = False
    for line in text.splitlines():
        if line.startswith("ENTRY"):
            in_entry = True
        elif line and not line[0].isspace():
            in_entry = False
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        op = match.group(1)
        total[op] = total.get(op, 0) + 1
        if in_entry:
            entry[op] = entry.get(op, 0) + 1

    def summary(counts):
        out = {k: counts.get(k, 0) for k in KINDS}
        out["instructions"] = sum(
            v for k, v in counts.items() if k not in ("parameter", "constant")
        )
        return out

    return {"entry": summary(entry), "all": summary(total), "ops": total}


def train_step_hlo(family, method, cfg, teacher=None):
    """Counts and XLA cost of the jitted stateless SGD train step (JAX)."""
    model, loss_fn = build(family, method, cfg, teacher)
    x, y = make_data(family, cfg, cfg["batch"])
    compiled, cost = compiled_train_step(model, loss_fn, x, y)
    counts = hlo_counts(compiled.as_text())
    counts["xla_flops"] = float(cost.get("flops", 0.0))
    counts["xla_bytes_accessed"] = float(cost.get("bytes accessed", 0.0))
    return counts


def hlo_diff(method_counts, base_counts):
    out = {}
    for key, value in method_counts.items():
        if key == "ops":  # the opcodes that changed most, module-wide
            ops = set(value) | set(base_counts[key])
            delta = {
                o: value.get(o, 0) - base_counts[key].get(o, 0) for o in ops
            }
            top = sorted(delta.items(), key=lambda kv: -abs(kv[1]))[:10]
            out["top_ops"] = {o: v for o, v in top if v}
        elif isinstance(value, dict):
            out[key] = {k: v - base_counts[key][k] for k, v in value.items()}
        else:
            out[key + "_ratio"] = value / max(base_counts[key], 1.0)
    return out


def describe_diff(diff):
    """e.g. "+6 fusions, +2 copies" from the entry-computation diff."""
    parts = [
        f"{v:+d} {k}" for k, v in diff["entry"].items() if v and k != "fusion"
    ]
    fusions = diff["entry"]["fusion"]
    return ", ".join([f"{fusions:+d} fusion"] + parts)
