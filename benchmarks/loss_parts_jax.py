"""What the distillation losses cost on JAX CPU, in isolation: each loss's
value and gradient to the student logits (jitted), and SLaM's teacher-side
parts, at the overhead benchmark's loss setting (256 x 10 teacher
probabilities, the estimator `overhead_models.make_teacher` fits).

For each function: the kernels its compiled entry computation launches
(load-independent) and its time per call, the functions taking turns in
rounds of `--calls` calls (the minimum and the 25th percentile over
rounds: the least disturbed by other jobs).

    KERAS_BACKEND=jax python benchmarks/loss_parts_jax.py [--rounds 40]
        [--label NAME] [--note TEXT]

Writes (adds the run `--label` to) `benchmarks/results/loss_parts.jax.json`.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import RESULTS_DIR  # noqa: E402
from benchmarks.common import write_run  # noqa: E402
from benchmarks.overhead_models import make_loss  # noqa: E402
from benchmarks.overhead_models import make_teacher  # noqa: E402
from benchmarks.step_timing import load_average  # noqa: E402
from keras_efficient.distillation import _common  # noqa: E402
from keras_efficient.distillation import _interpolation  # noqa: E402

BATCH = 256
_SKIP = ("parameter(", "constant(", "get-tuple-element(", " tuple(")


def entry_kernels(compiled):
    """Instructions of the compiled entry computation that launch work."""
    text = compiled.as_text()
    entry = text[text.index("ENTRY") :].splitlines()[1:]
    return sum(
        1 for s in entry if " = " in s and not any(k in s for k in _SKIP)
    )


def functions():
    """name -> f(t, z) of the timed functions."""
    probs, est = make_teacher(1024)
    losses = {m: make_loss(m, probs, est) for m in ("cross_entropy", "slam")}
    losses["debiased"] = make_loss("debiased", probs, est)
    slam = losses["slam"]
    k = jnp.full((BATCH,), 3, "int32")

    def value_and_grad(loss):
        return jax.value_and_grad(lambda t, z: loss(t, z), argnums=1)

    fns = {m: value_and_grad(loss) for m, loss in losses.items()}
    fns["slam: margin"] = lambda t, z: _common.margin(t)
    fns["slam: alpha(x) table"] = lambda t, z: _interpolation.interpolate(
        est.knots_x, est.knots_y, _common.margin(t)
    )
    fns["slam: k(x)"] = lambda t, z: slam.example_k(t)
    fns["slam: k-hot"] = lambda t, z: _common.khot(t, k, 9)
    return fns, probs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--label", default="run")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    fns, probs = functions()
    t = jnp.asarray(probs[:BATCH])
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(BATCH, 10)).astype("float32"))
    jitted = {n: jax.jit(f) for n, f in fns.items()}
    kernels = {
        n: entry_kernels(f.lower(t, z).compile()) for n, f in jitted.items()
    }
    for f in jitted.values():
        jax.block_until_ready(f(t, z))
    times = {n: [] for n in jitted}
    load_start = load_average()
    for r in range(args.rounds):
        names = list(jitted) if r % 2 == 0 else list(jitted)[::-1]
        for n in names:
            start = time.perf_counter()
            for _ in range(args.calls):
                out = jitted[n](t, z)
            jax.block_until_ready(out)
            times[n].append((time.perf_counter() - start) / args.calls)
    figures = {
        n: {
            "kernels": kernels[n],
            "min_us": 1e6 * min(times[n]),
            "p25_us": 1e6 * float(np.percentile(times[n], 25)),
        }
        for n in jitted
    }
    for n, f in figures.items():
        print(
            f"{n:24s} kernels {f['kernels']:3d}  min {f['min_us']:7.1f} us"
            f"  p25 {f['p25_us']:7.1f} us"
        )
    run = {
        "note": args.note,
        "rounds": args.rounds,
        "calls_per_round": args.calls,
        "jax": jax.__version__,
        "load_1min_at_start": load_start,
        "load_1min": load_average(),
        "figures": figures,
    }
    write_run(
        os.path.join(RESULTS_DIR, "loss_parts.jax.json"),
        args.label,
        run,
        what=__doc__.splitlines()[0],
        command="KERAS_BACKEND=jax python benchmarks/loss_parts_jax.py",
    )


if __name__ == "__main__":
    main()
