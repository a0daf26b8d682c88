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
The ResNet's and the MLP's batch is chosen per width so that one step
costs ~2 GFLOP (at least 4 images); the Transformer runs 16 sequences of
64 tokens at every width. The number of steps per timed epoch is chosen
so that an epoch takes ~0.5 s (fit's per-epoch overhead stays small).
Each round records wall and process CPU time (`ratios`, `cpu_ratios`).

glibc's mmap threshold is pinned and its mmap switched off first
(`allocator.pin_mmap_threshold`; on TensorFlow also its BFC allocator,
`allocator.use_tensorflow_bfc`; `--allocator default` keeps glibc's
own): XLA CPU mallocs a step's temporary buffer at every call, and at
some sizes glibc maps it afresh each time, so that every page faults
(AltUp K=2 at d = 128 read 1.57x for that alone; docs/methods/altup.md).
A buffer of 32 MiB or more (the Transformer at 16 sequences) is mapped
afresh at any threshold: 39,000 faults and 75 ms of a 416 ms JAX step
at d = 512, for the model and its baseline alike, which pulled every
ratio toward 1. Minor page faults per step are recorded beside each
figure.

floor = 1 + max(extra_flops / base_flops, extra_bytes / base_bytes), the
ratio the step would have if it were bound by whichever resource the method
loads most; 1 + min(...) is the strict lower bound and is reported too.

The floor model's counts are in `overhead_floor.py`. On JAX the script
also counts the compiled train step's HLO instructions and reads XLA's
cost analysis (`overhead_hlo.py`; the `hlo` section gives method minus
baseline). On TensorFlow and torch only the ratios are measured.

The parts: `overhead_floor.py` (each family's configuration and floor),
`overhead_models.py` (the models, losses and data), `overhead_hlo.py`,
`overhead_targets.py` (targets per backend), `overhead_measure.py` (one
family at one width: timing and figures); this file runs the families and
widths asked for and writes the JSON.

    KERAS_BACKEND=jax python benchmarks/overhead.py [--quick]
        [--widths 64 128] [--families resnet transformer loss]
        [--hlo auto|on|off] [--allocator pinned|default] [--note TEXT]

Writes `benchmarks/results/overhead.<backend>[.quick].json`.
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.allocator import pin_mmap_threshold  # noqa: E402
from benchmarks.allocator import use_tensorflow_bfc  # noqa: E402

# TensorFlow reads its allocator setting when it loads, which `keras`
# does: `--allocator` is read here, before the other arguments.
_pre_parser = argparse.ArgumentParser(add_help=False)
_pre_parser.add_argument("--allocator", default="pinned")
TF_BFC = (
    _pre_parser.parse_known_args()[0].allocator != "default"
    and use_tensorflow_bfc()
)

import keras  # noqa: E402

from benchmarks.common import RESULTS_DIR  # noqa: E402
from benchmarks.common import Progress  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from benchmarks.overhead_measure import run_width  # noqa: E402
from benchmarks.overhead_models import FAMILIES  # noqa: E402
from benchmarks.overhead_models import METHODS  # noqa: E402
from benchmarks.step_timing import load_average  # noqa: E402

BACKEND = keras.backend.backend()
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
    parser.add_argument(
        "--allocator",
        choices=("pinned", "default"),
        default="pinned",
        help="pin glibc's mmap threshold and give TensorFlow its BFC "
        "allocator (default), or keep glibc's own",
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
    allocator = "glibc default"
    if args.allocator == "pinned":
        allocator = (
            "mmap threshold pinned, mmap off"
            if pin_mmap_threshold(mmap_max=0)
            else "glibc default (no mallopt here)"
        )
        if BACKEND == "tensorflow" and TF_BFC:
            allocator += "; TensorFlow's BFC allocator on CPU"
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
            "allocator": allocator,
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
            f"target {fig.get('target', '-')} {fig['overhead_verdict']}, "
            f"page faults a step {fig['minor_faults_per_step']:.0f} "
            f"(baseline {fig['baseline_minor_faults_per_step']:.0f})"
            + (f"  hlo: {fig['hlo_summary']}" if "hlo_summary" in fig else "")
        )


if __name__ == "__main__":
    main()
