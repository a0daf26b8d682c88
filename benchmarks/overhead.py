"""Overhead benchmark: measured step-time ratios next to their floors.

For each method and width d, the train-step time of the method over its
baseline, measured in one process (`compare_step_times`: warm-up, then
interleaved A/B rounds of `model.fit` epochs; median of the per-round
ratios, with IQR and min-max), next to the FLOOR the model's shapes allow:

- LAuReL `rw` and `rw+lr` in `ResNet20` (width_multiplier d/64, so the
  stages have d/4, d/2, d filters; 8x8x3 inputs; `laurel_rank = d/32`,
  i.e. r <= c/8 in every block) and in a `TransformerLM` (2 layers, width
  d, head size 32, FFN 4d, vocabulary 256, `laurel_rank = d/8`);
- AltUp K=2 and Recycled-AltUp K=2 in the same `TransformerLM`;
- `SLaMLoss` and `DebiasedDistillationLoss` vs soft cross-entropy on the
  teacher's probabilities, in a whole train step of an MLP 40 -> d -> d ->
  10 at batch 256.

Every model trains with plain SGD (so the optimizer adds nothing that
hides the method's cost) and `jit_compile=True` on JAX and TensorFlow.
The batch is chosen per width so that one step costs ~2 GFLOP (at least 4
images / 2 sequences), and the number of steps per timed epoch so that an
epoch takes ~0.5 s (fit's per-epoch overhead stays small).

The floor model (all counts per train step, float32, F = 4 bytes):

- base FLOPs = 6 x multiply-accumulates of the matmuls / convolutions x
  examples (forward 2 flops per MAC, backward twice the forward), plus the
  attention's QK^T and AV at full length S (dense attention computes the
  masked half too). Elementwise work (norms, activations) is left out,
  which makes the base smaller and the floor higher (conservative).
- base bytes = F x (4 x activation elements + 6 x parameters): every
  activation tensor (conv/BN outputs, residual sums; in the Transformer
  17d + 2HS elements a token a layer: norms, q/k/v, scores and probs,
  attention output, projections, FFN hidden before and after the
  activation, residual sums) is written and read once forward, read once
  backward and its gradient written once; every weight is read forward and
  backward, its gradient written, and SGD reads both and writes the weight.
- LAuReL RW on a residual of E elements: forward `alpha f + beta x` is 3
  flops an element instead of the plain add's 1 (+2), backward scales two
  gradients (+2) and reduces `sum(g f)`, `sum(g x)` (+4): 8E flops; the
  reductions read x and f(x) once more: 2E F bytes.
- LAuReL LR (rank r, width c, N positions, E = N c): `B(A x)` is 4 N c r
  flops forward, x3 for the step, plus the add (x3): 12 N c r + 3E flops;
  one more read of x forward, and backward a read of x and of the
  gradient for dA, dB plus the extra dx write: 3E + 4 N r elements.
- AltUp K (T tokens, L layers): predict `sum_j p_ij x_j` is 2K^2 d flops
  a token a layer, correct `xhat_i + g_i (y - xhat_a)` 3K d, x3 for the
  step; the (K-1) extra blocks of the residual stream are read and written
  once forward and twice backward: 6 (K-1) d elements a token a layer, plus
  the K-wide embedding and the readout (3 K d a token). Non-recycled AltUp
  also trains a K-times wider embedding table (its gradient is a scatter
  of T K d elements).
- SLaM: log-space mixture and the exactly-k top-k mask, taken as 30 flops
  per logit (B x C) and 6 extra passes over B x C floats (teacher
  probabilities, mask, mixture forward and backward); debiased: the
  margin and the isotonic interpolation of alpha, 2C + 40 flops an example,
  and one extra pass over B x C plus B weights. These constants are
  assumptions (the loss cost is small next to the MLP's matmuls).

floor = 1 + max(extra_flops / base_flops, extra_bytes / base_bytes), the
ratio the step would have if it were bound by whichever resource the method
loads most; 1 + min(...) is the strict lower bound and is reported too.

On JAX the script also lowers each model's train step
(`model.stateless_call` + `jax.value_and_grad` + an SGD update, jitted)
and counts, in `jax.jit(step).lower(...).compile().as_text()`, the HLO
instructions of the entry computation (one per kernel: fusions, copies,
converts, transposes, reduces, dots, convolutions) and module-wide (inside
the fusions too), plus XLA's own cost analysis (flops, bytes accessed); the
`hlo` section gives method minus baseline. On TensorFlow and torch only the
ratios are measured. JAX compilations are counted while timing (0 expected).

    KERAS_BACKEND=jax python benchmarks/overhead.py [--quick]
        [--widths 64 128] [--families resnet transformer loss]
        [--hlo auto|on|off] [--note TEXT]

Writes `benchmarks/results/overhead.<backend>[.quick].json`.
"""

import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import RESULTS_DIR  # noqa: E402
from benchmarks.common import Progress  # noqa: E402
from benchmarks.common import compare_step_times  # noqa: E402
from benchmarks.common import compiled_train_step  # noqa: E402
from benchmarks.common import figure  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402

BACKEND = keras.backend.backend()
JIT = BACKEND != "torch"
F = 4  # bytes per float32
ACT_PASSES = 4
WEIGHT_PASSES = 6
STEP_FLOPS = 2e9  # batch chosen so that one step costs about this much
# The widths each family is measured at: the Transformer at a narrow and a
# wide width (the targets are set at d = 512, where the matmuls dominate as
# in the models LAuReL and AltUp were made for), ResNet20 at its own width
# (width_multiplier 1), the losses at d = 256 (their target width).
FAMILY_WIDTHS = {
    "resnet": (64,),
    "transformer": (128, 512),
    "loss": (256,),
    "checks": (128,),
}
QUICK_WIDTHS = {"resnet": (64,), "transformer": (64,), "loss": (64,)}
FAMILIES = ("resnet", "transformer", "loss", "checks")
METHODS = {
    "resnet": ("plain", "rw", "rw+lr"),
    "transformer": ("plain", "rw", "rw+lr", "altup2", "recycled2"),
    "loss": ("cross_entropy", "slam", "debiased"),
    "checks": ("unchecked", "id_check"),
}
# Targets on JAX, by (family, method, width); None: any width. A figure
# without a target is reported beside its floor and FLOP share only.
TARGETS = {
    ("transformer", "rw", 512): 1.02,
    ("transformer", "rw+lr", 512): 1.04,
    ("transformer", "altup2", 512): 1.05,
    ("transformer", "recycled2", 512): 1.05,
    ("loss", "slam", None): 1.05,
    ("loss", "debiased", None): 1.05,
    ("checks", "id_check", None): 1.01,
}
# TensorFlow and torch: within this much of the JAX ratio (the losses keep
# their own target on every backend).
BACKEND_SLACK = 0.05
ABSOLUTE_FAMILIES = ("loss", "checks")
RESNET_INPUT = 8
SEQ, LAYERS, VOCAB, HEAD_SIZE = 64, 2, 256, 32
MLP_IN, CLASSES, LOSS_BATCH = 40, 10, 256


def floor_ratio(base_flops, base_bytes, extra_flops, extra_bytes):
    """The floor model's figures for one method (see the module docstring)."""
    flop_frac = extra_flops / base_flops
    byte_frac = extra_bytes / base_bytes
    return {
        "base_flops": base_flops,
        "base_bytes": base_bytes,
        "extra_flops": extra_flops,
        "extra_bytes": extra_bytes,
        "flop_fraction": flop_frac,
        "byte_fraction": byte_frac,
        "floor": 1.0 + max(flop_frac, byte_frac),
        "strict_floor": 1.0 + min(flop_frac, byte_frac),
    }


# ---------------------------------------------------------------- shapes


def resnet_layout(d, size=RESNET_INPUT):
    """ResNet20 at width_multiplier d/64: the convolutions as
    `(cin, cout, kernel, pixels)` and the residual blocks as
    `(channels, pixels)`, per example."""
    widths = [max(1, round(f * d / 64)) for f in (16, 32, 64)]
    convs, blocks = [(3, widths[0], 3, size * size)], []
    cin, side = widths[0], size
    for stage, c in enumerate(widths):
        for b in range(3):
            stride = 2 if stage > 0 and b == 0 else 1
            side = -(-side // stride)
            hw = side * side
            convs += [(cin, c, 3, hw), (c, c, 3, hw)]
            if stride > 1 or cin != c:
                convs.append((cin, c, 1, hw))
            blocks.append((c, hw))
            cin = c
    return convs, blocks, widths[-1]


def resnet_config(d, quick=False):
    convs, blocks, last = resnet_layout(d)
    macs = sum(k * k * a * b * hw for a, b, k, hw in convs) + last * CLASSES
    batch = int(min(256, max(4, STEP_FLOPS / (6 * macs))))
    return {
        "width": d,
        "batch": 16 if quick else batch,
        "rank": max(1, d // 32),
    }


def resnet_floor(method, cfg):
    convs, blocks, last = resnet_layout(cfg["width"])
    b, r = cfg["batch"], cfg["rank"]
    macs = sum(k * k * a * c * hw for a, c, k, hw in convs) + last * CLASSES
    params = sum(k * k * a * c for a, c, k, _ in convs) + last * CLASSES
    acts = sum(2 * c * hw for _, c, _, hw in convs)
    acts += sum(2 * c * hw for c, hw in blocks)
    base_flops = 6.0 * macs * b
    base_bytes = F * (ACT_PASSES * acts * b + WEIGHT_PASSES * params)
    ef = eb = 0.0
    for c, hw in blocks:
        e, n, rank = b * c * hw, b * hw, min(r, c)
        if method in ("rw", "rw+lr"):
            ef, eb = ef + 8 * e, eb + F * 2 * e
        if method == "rw+lr":
            ef += 12 * n * c * rank + 3 * e
            eb += F * (3 * e + 4 * n * rank + WEIGHT_PASSES * 2 * c * rank)
    return floor_ratio(base_flops, base_bytes, ef, eb)


def transformer_config(d, quick=False):
    seq = 32 if quick else SEQ
    per_token = 6 * (LAYERS * (12 * d * d + 2 * seq * d) + VOCAB * d)
    batch = int(min(64, max(2, STEP_FLOPS / (per_token * seq))))
    return {
        "width": d,
        "seq": seq,
        "batch": 8 if quick else batch,
        "heads": max(1, d // HEAD_SIZE),
        "rank": max(1, d // 8),
    }


def transformer_floor(method, cfg):
    d, s, h = cfg["width"], cfg["seq"], cfg["heads"]
    t, r, L = cfg["batch"] * s, cfg["rank"], LAYERS
    macs = L * (12 * d * d + 2 * s * d) + VOCAB * d
    params = L * 12 * d * d + 2 * VOCAB * d
    acts = L * (17 * d + 2 * h * s) + 2 * VOCAB + d
    base_flops = 6.0 * macs * t
    base_bytes = F * (ACT_PASSES * acts * t + WEIGHT_PASSES * params)
    e, n_res = t * d, 2 * L  # two residuals a layer
    ef = eb = 0.0
    if method in ("rw", "rw+lr"):
        ef, eb = 8 * e * n_res, F * 2 * e * n_res
    if method == "rw+lr":
        ef += n_res * (12 * t * d * r + 3 * e)
        eb += F * n_res * (3 * e + 4 * t * r + WEIGHT_PASSES * 2 * d * r)
    if method in ("altup2", "recycled2"):
        k = 2
        ef = 3 * L * t * (2 * k * k * d + 3 * k * d) + 3 * t * k * d
        eb = F * (L * t * 6 * (k - 1) * d + 3 * t * k * d)
        if method == "altup2":  # K-wide table: params and a wider scatter
            eb += F * (WEIGHT_PASSES * (k - 1) * VOCAB * d + t * (k - 1) * d)
    return floor_ratio(base_flops, base_bytes, ef, eb)


def loss_config(d, quick=False):
    return {"width": d, "batch": 64 if quick else LOSS_BATCH}


def loss_floor(method, cfg):
    d, b, c = cfg["width"], cfg["batch"], CLASSES
    params = MLP_IN * d + d * d + d * c
    base_flops = 6.0 * params * b
    base_bytes = F * (ACT_PASSES * b * (4 * d + 2 * c) + WEIGHT_PASSES * params)
    ef = eb = 0.0
    if method == "slam":
        ef, eb = 30.0 * b * c, F * 6 * b * c
    if method == "debiased":
        ef, eb = (2 * c + 40.0) * b, F * (b * c + b)
    return floor_ratio(base_flops, base_bytes, ef, eb)


def checks_floor(method, cfg):
    """The token-id range check of `TransformerLM`: two compares, an
    `and`, a reduction and min / max over the B x T ids (5 flops an id),
    the ids read once (int32); its error branch is never taken."""
    t = cfg["batch"] * cfg["seq"]
    plain = transformer_floor("plain", cfg)
    return floor_ratio(plain["base_flops"], plain["base_bytes"], 5 * t, F * t)


CONFIGS = {
    "resnet": (resnet_config, resnet_floor),
    "transformer": (transformer_config, transformer_floor),
    "loss": (loss_config, loss_floor),
    "checks": (transformer_config, checks_floor),
}


# ---------------------------------------------------------------- models


def _teacher_probs(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(CLASSES, 0.3), size=n).astype("float32")


def _teacher(n, seed=0):
    """Teacher probabilities (n, C) and a fitted TeacherAccuracy."""
    from keras_efficient.losses import TeacherAccuracy

    probs = _teacher_probs(n, seed)
    rng = np.random.default_rng(seed + 1)
    val = rng.dirichlet(np.full(CLASSES, 0.3), size=500)
    labels = np.where(rng.random(500) < 0.7, val.argmax(-1), 0)
    return probs, TeacherAccuracy().fit(val, labels)


def make_loss(method, probs=None, estimator=None):
    from keras_efficient.losses import DebiasedDistillationLoss
    from keras_efficient.losses import SLaMLoss

    if method == "slam":
        return SLaMLoss(teacher_accuracy=estimator)
    if method == "debiased":
        return DebiasedDistillationLoss(estimator, pool_teacher_outputs=probs)
    return keras.losses.CategoricalCrossentropy(from_logits=True)


def build(family, method, cfg, teacher=None):
    """The uncompiled model and its loss for one family / method / width."""
    from keras_efficient.applications import ResNet20
    from keras_efficient.applications import TransformerLM

    keras.utils.set_random_seed(0)
    d = cfg["width"]
    sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    laurel = None if method in ("plain", "altup2", "recycled2") else method
    if family == "resnet":
        model = ResNet20(
            input_shape=(RESNET_INPUT, RESNET_INPUT, 3),
            laurel=laurel,
            laurel_rank=cfg["rank"],
            width_multiplier=d / 64,
            classifier_activation=None,
        )
        return model, sparse
    if family == "checks":
        cls = TransformerLM if method == "id_check" else _UncheckedLM
        model = cls(
            vocabulary_size=VOCAB,
            sequence_length=cfg["seq"],
            hidden_dim=d,
            num_layers=LAYERS,
            num_heads=cfg["heads"],
        )
        return model, sparse
    if family == "transformer":
        model = TransformerLM(
            vocabulary_size=VOCAB,
            sequence_length=cfg["seq"],
            hidden_dim=d,
            num_layers=LAYERS,
            num_heads=cfg["heads"],
            altup=2 if method in ("altup2", "recycled2") else 1,
            recycled=method == "recycled2",
            laurel=laurel,
            laurel_rank=cfg["rank"],
        )
        return model, sparse
    model = keras.Sequential(
        [
            keras.Input((MLP_IN,)),
            keras.layers.Dense(d, activation="relu"),
            keras.layers.Dense(d, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )
    probs, estimator = teacher or _teacher(1024)
    return model, make_loss(method, probs, estimator)


class _UncheckedLM:
    """`TransformerLM` without its input checks (the baseline of the
    `checks` family), made on first use: `keras_efficient` is imported
    lazily here."""

    def __new__(cls, **kwargs):
        from keras_efficient.applications import TransformerLM

        class UncheckedLM(TransformerLM):
            def call(self, inputs, training=None, mask=None, **kw):
                # The functional graph without TransformerLM.call's
                # dtype, length and id-range checks.
                return super(TransformerLM, self).call(
                    inputs, training=training, mask=mask, **kw
                )

        return UncheckedLM(**kwargs)


def make_data(family, cfg, n, seed=0):
    rng = np.random.default_rng(seed)
    if family == "resnet":
        x = rng.normal(size=(n, RESNET_INPUT, RESNET_INPUT, 3))
        return x.astype("float32"), rng.integers(0, CLASSES, n)
    if family in ("transformer", "checks"):
        ids = rng.integers(0, VOCAB, (n, cfg["seq"] + 1)).astype("int32")
        return ids[:, :-1], ids[:, 1:]
    x = rng.normal(size=(n, MLP_IN)).astype("float32")
    return x, _teacher_probs(n, seed + 2)


# ---------------------------------------------------------------- timing


class CompileCounter:
    """Counts JAX "Compiling ..." log records (all, and of train_step)."""

    def __init__(self):
        self.all = self.train_step = 0

    def __enter__(self):
        if BACKEND == "jax":
            import jax

            counter = self

            class Handler(logging.Handler):
                def emit(self, record):
                    message = record.getMessage()
                    if message.startswith("Compiling"):
                        counter.all += 1
                        counter.train_step += "train_step" in message

            self.handler = Handler()
            logging.getLogger("jax").addHandler(self.handler)
            jax.config.update("jax_log_compiles", True)
        return self

    def __exit__(self, *exc):
        if BACKEND == "jax":
            import jax

            jax.config.update("jax_log_compiles", False)
            logging.getLogger("jax").removeHandler(self.handler)


def spread(values):
    q = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return {
        "median": statistics.median(values),
        "iqr": [q[0], q[2]],
        "min": min(values),
        "max": max(values),
    }


def time_family(family, cfg, steps, repeats, teacher=None):
    """Interleaved step-time ratios of every method of a family to the
    first; returns (per-method timing dict, compile counts)."""
    methods = METHODS[family]
    models = {}
    for method in methods:
        model, loss = build(family, method, cfg, teacher)
        model.compile(
            optimizer=keras.optimizers.SGD(1e-3), loss=loss, jit_compile=JIT
        )
        models[method] = model
    x, y = make_data(family, cfg, cfg["batch"] * steps)
    for model in models.values():  # compile outside the counted rounds
        model.fit(x, y, batch_size=cfg["batch"], epochs=1, verbose=0)
    with CompileCounter() as counted:
        # Progress per (width, family) run in `main`, not per round.
        res = compare_step_times(
            models,
            x,
            y,
            cfg["batch"],
            steps,
            repeats,
            baseline=methods[0],
            verbose=0,
        )
    counts = {"all": counted.all, "train_step": counted.train_step}
    params = {m: model.count_params() for m, model in models.items()}
    return res, counts, params


def steps_for(family, cfg, floor, quick):
    if quick:
        return 3
    per_step = floor["base_flops"] / 5e9 + 2e-3  # ~5 GFLOP/s, loaded CPU
    return int(min(100, max(5, 0.5 / per_step)))


# ---------------------------------------------------------------- HLO

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


# ---------------------------------------------------------------- verdicts


def jax_target(family, method, d):
    """The JAX target of one figure, or None."""
    return TARGETS.get((family, method, d), TARGETS.get((family, method, None)))


def jax_medians(path=None):
    """name -> median of the recorded JAX figures (for the other backends'
    "within 0.05 of JAX" targets); empty if JAX has not been run."""
    path = path or os.path.join(RESULTS_DIR, "overhead.jax.json")
    try:
        with open(path) as f:
            return {g["name"]: g["median"] for g in json.load(f)["figures"]}
    except (OSError, ValueError, KeyError):
        return {}


def target_for(family, method, d, backend=BACKEND, jax_figures=None):
    """`(threshold, basis)` of one figure on `backend`, or `(None, why)`.

    JAX: the issue's targets. TensorFlow and torch: the losses keep their
    target; the models must come within `BACKEND_SLACK` of the JAX ratio
    (the recorded one, else the JAX target), where JAX has a target.
    """
    base = jax_target(family, method, d)
    if base is None:
        return None, "no target at this width: read the floor"
    if backend == "jax" or family in ABSOLUTE_FAMILIES:
        return base, "target"
    name = f"{family}/{method}/d{d}"
    jax_ratio = (jax_figures or {}).get(name)
    if jax_ratio is None:
        return base + BACKEND_SLACK, "JAX target + 0.05 (no JAX run recorded)"
    return jax_ratio + BACKEND_SLACK, f"JAX's {jax_ratio:.3f} + 0.05"


def load_average():
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


# ---------------------------------------------------------------- driver


def run_width(family, d, quick, repeats, do_hlo):
    config_fn, floor_fn = CONFIGS[family]
    cfg = config_fn(d, quick)
    methods = METHODS[family]
    floors = {m: floor_fn(m, cfg) for m in methods[1:]}
    steps = steps_for(family, cfg, floors[methods[1]], quick)
    teacher = _teacher(1024) if family == "loss" else None
    start = time.perf_counter()
    res, compiles, params = time_family(family, cfg, steps, repeats, teacher)
    load = load_average()
    figures, hlo = [], {}
    if do_hlo:
        counts = {m: train_step_hlo(family, m, cfg, teacher) for m in methods}
        for m in methods[1:]:
            diff = hlo_diff(counts[m], counts[methods[0]])
            hlo[f"{family}/{m}/d{d}"] = {
                "method": counts[m],
                "baseline": counts[methods[0]],
                "diff": diff,
                "summary": describe_diff(diff),
            }
    jax_figures = jax_medians() if BACKEND != "jax" else {}
    for m in methods[1:]:
        ratios = res[m]["ratios"]
        s = spread(ratios)
        threshold, basis = target_for(family, m, d, jax_figures=jax_figures)
        step = statistics.median(res[m]["step_seconds"])
        base_step = statistics.median(res[methods[0]]["step_seconds"])
        fig = figure(
            f"{family}/{m}/d{d}",
            s["median"],
            target=None if threshold is None else ("<=", threshold),
            unit="x",
            note=f"median of {len(ratios)} interleaved rounds of {steps} "
            f"steps, batch {cfg['batch']}",
        )
        fig.update(s)
        fig.update(
            {
                "ratios": ratios,
                "target_basis": basis,
                "floor": floors[m]["floor"],
                # What the method's FLOPs alone would cost.
                "flop_share": 1.0 + floors[m]["flop_fraction"],
                "floor_model": floors[m],
                "config": cfg,
                "params": params[m],
                "baseline_params": params[methods[0]],
                "step_seconds": step,
                "baseline_step_seconds": base_step,
                # The extra time a step in absolute terms: where a ratio
                # misses, this is the per-op cost to explain.
                "extra_us_per_step": (step - base_step) * 1e6,
                "load_1min": load,
                "compiles_while_timing": compiles,
            }
        )
        fig["overhead_verdict"] = (
            "no target"
            if threshold is None
            else ("met" if fig["met"] else "missed")
        )
        if hlo:
            fig["hlo_summary"] = hlo[f"{family}/{m}/d{d}"]["summary"]
        figures.append(fig)
    print(
        f"{family} d={d}: {time.perf_counter() - start:.0f}s, "
        f"compiles while timing {compiles}",
        flush=True,
    )
    return figures, hlo


def _tree_state():
    """Commit and files modified in the shared tree (others edit it)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "keras_efficient"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
        return {"commit": head, "modified": [s[3:] for s in dirty if s]}
    except (OSError, subprocess.CalledProcessError):
        return {}


def _arguments(parser):
    parser.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=None,
        help="widths of every family (default: FAMILY_WIDTHS)",
    )
    parser.add_argument(
        "--keep-others",
        action="store_true",
        help="keep the output file's figures this run does not measure",
    )
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--hlo",
        choices=("auto", "on", "off"),
        default="auto",
        help="compiled-graph counts (JAX only); auto: on in full mode",
    )
    parser.add_argument("--note", default="", help="appended to the note")


def _kept_figures(path, measured):
    """Figures (and HLO entries) of an earlier run at `path` whose names
    this run does not measure (`--keep-others`)."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return [], {}
    figures = [g for g in old.get("figures", []) if g["name"] not in measured]
    hlo = {k: h for k, h in old.get("hlo", {}).items() if k not in measured}
    return figures, hlo


def main():
    args = parse_args(__doc__.splitlines()[0], extra=_arguments)
    table = QUICK_WIDTHS if args.quick else FAMILY_WIDTHS
    runs = [
        (d, family)
        for family in args.families
        for d in (args.widths or table.get(family, (64,)))
    ]
    repeats = args.repeats or (3 if args.quick else 9)
    do_hlo = BACKEND == "jax" and (
        args.hlo == "on" or (args.hlo == "auto" and not args.quick)
    )
    if args.output is None:
        suffix = ".quick" if args.quick else ""
        args.output = os.path.join(
            RESULTS_DIR, f"overhead.{BACKEND}{suffix}.json"
        )
    kept, hlo = [], {}
    if args.keep_others:
        measured = {
            f"{family}/{m}/d{d}"
            for d, family in runs
            for m in METHODS[family][1:]
        }
        kept, hlo = _kept_figures(args.output, measured)
    load = load_average()
    figures = []
    for d, family in Progress(runs, "run"):
        f, h = run_width(family, d, args.quick, repeats, do_hlo)
        figures += f
        hlo.update(h)
        extra = {
            "note": (
                f"1-minute load average {load} at start (each figure holds "
                "its own, `load_1min`, read after its rounds); the machine "
                "is shared, so ratios are noisy: read the IQR and min-max "
                "next to each median. " + args.note
            ),
            "tree": _tree_state(),
            "widths_done": sorted(
                {fig["config"]["width"] for fig in kept + figures}
            ),
        }
        if hlo:
            extra["hlo"] = hlo
        write_results("overhead", kept + figures, args, extra=extra)
    print_table(figures, title=f"Step-time overhead ({BACKEND})")
    print("\nfloors:")
    for fig in figures:
        print(
            f"  {fig['name']:<28} median {fig['median']:.3f} "
            f"[{fig['iqr'][0]:.3f}, {fig['iqr'][1]:.3f}] "
            f"of {1e3 * fig['baseline_step_seconds']:.3g} ms "
            f"({fig['extra_us_per_step']:+.0f} us), "
            f"FLOP share {fig['flop_share']:.4f} floor {fig['floor']:.4f} "
            f"target {fig.get('target', '-')} {fig['overhead_verdict']}"
            + (f"  hlo: {fig['hlo_summary']}" if "hlo_summary" in fig else "")
        )


if __name__ == "__main__":
    main()
