"""Minor page faults per JAX CPU train step of the overhead benchmark's
`transformer` models, with glibc's default and a fixed mmap threshold.

Each model (`overhead_models.build`, SGD, `jit_compile=True`) trains a
few `fit` epochs; recorded per method and width d:

- `faults_per_step`: minor page faults of the process per step
  (load-independent; `allocator.minor_page_faults`);
- `temp_mib`: XLA's temporary buffer of the jitted train step, the
  block malloc'd and freed at every call;
- `step_ms` and `ratio`: interleaved `fit` step times
  (`compare_step_times`, median over rounds) and their ratio to `plain`
  (load-dependent: the 1-minute load average is recorded beside them).

The same is measured again in a child process that first fixes glibc's
mmap threshold (`allocator.pin_mmap_threshold`), so the two runs differ
only in whether the temporary buffer comes from fresh pages at every
call. See "What AltUp costs on each backend" in docs/methods/altup.md.

    KERAS_BACKEND=jax python benchmarks/page_faults.py [--quick]
        [--widths 128 512] [--steps 10] [--repeats 5]

Writes `benchmarks/results/page_faults.json`.
"""

import json
import os
import subprocess
import sys

import keras

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.allocator import minor_page_faults  # noqa: E402
from benchmarks.allocator import pin_mmap_threshold  # noqa: E402
from benchmarks.overhead_floor import transformer_config  # noqa: E402
from benchmarks.overhead_models import METHODS  # noqa: E402
from benchmarks.overhead_models import build  # noqa: E402
from benchmarks.overhead_models import make_data  # noqa: E402
from benchmarks.step_timing import load_average  # noqa: E402


def temp_bytes(model, x, y):
    """XLA's temporary buffer of `model`'s jitted train step, in bytes."""
    import jax

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    step = jax.jit(model.train_step, donate_argnums=0)
    compiled = step.lower(state, (x, y)).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def measure(d, quick, steps, repeats):
    """{method: {faults_per_step, temp_mib, step_ms, ratio}} at width d."""
    cfg = transformer_config(d, quick=quick)
    batch = cfg["batch"]
    x, y = make_data("transformer", cfg, batch * steps)
    models, rows = {}, {}
    for method in METHODS["transformer"]:
        model, loss = build("transformer", method, cfg)
        model.compile(
            optimizer=keras.optimizers.SGD(1e-3), loss=loss, jit_compile=True
        )
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        before = minor_page_faults()
        model.fit(x, y, batch_size=batch, epochs=2, verbose=0)
        faults = (minor_page_faults() - before) / (2 * steps)
        temp = temp_bytes(model, x[:batch], y[:batch])
        models[method] = model
        rows[method] = {"faults_per_step": faults, "temp_mib": temp / 2**20}
    timing = common.compare_step_times(
        models, x, y, batch, steps=steps, repeats=repeats
    )
    for method, row in rows.items():
        row["step_ms"] = 1e3 * common.median(timing[method]["step_seconds"])
        row["ratio"] = common.median(timing[method]["ratios"])
    return {"config": cfg, "methods": rows, "load_1min": load_average()}


def run_all(args):
    return {
        str(d): measure(d, args.quick, args.steps, args.repeats)
        for d in args.widths
    }


def pinned_child(args):
    """The same measurement in a child process with the threshold fixed."""
    command = [sys.executable, os.path.abspath(__file__), "--pinned-child"]
    command += ["--widths", *map(str, args.widths)]
    command += ["--steps", str(args.steps), "--repeats", str(args.repeats)]
    command += ["--verbose", "0"] + (["--quick"] if args.quick else [])
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def extra_args(parser):
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pinned-child", action="store_true")


def figures_of(results, mode):
    figures = []
    for d, result in results.items():
        for method, row in result["methods"].items():
            for key, unit in (("faults_per_step", ""), ("ratio", "x")):
                figures.append(
                    common.figure(
                        f"{key}/{mode}/{method}/d{d}",
                        row[key],
                        unit=unit,
                        note=f"temp {row['temp_mib']:.2f} MiB, step "
                        f"{row['step_ms']:.1f} ms, load "
                        f"{result['load_1min']:.2f}",
                    )
                )
    return figures


def main():
    args = common.parse_args(__doc__.splitlines()[0], extra=extra_args)
    if keras.backend.backend() != "jax":
        raise SystemExit("page_faults.py measures the JAX CPU step only.")
    if args.pinned_child:
        if not pin_mmap_threshold():
            raise SystemExit("could not fix the mmap threshold (not glibc?)")
        print(json.dumps(run_all(args)))
        return
    default = run_all(args)
    pinned = pinned_child(args)
    figures = figures_of(default, "default") + figures_of(pinned, "pinned")
    common.print_table(figures, "minor page faults and step-time ratios")
    common.write_results(
        "page_faults",
        figures,
        args,
        extra={
            "default": default,
            "pinned": pinned,
            "note": "pinned: glibc mmap threshold fixed at 32 MiB, trim "
            "threshold 1 GiB (benchmarks/allocator.py). faults_per_step is "
            "load-independent; step times and ratios are not.",
        },
    )


if __name__ == "__main__":
    main()
