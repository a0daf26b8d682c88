"""The overhead benchmark's measurement: one family at one width, every
method timed against the family's baseline in one process
(`compare_step_times`: interleaved rounds of `model.fit` epochs; the
median of the per-round ratios, with IQR and min-max), each figure next to
its floor (`overhead_floor`), its target (`overhead_targets`) and, on JAX
with `do_hlo`, the compiled-graph counts (`overhead_hlo`).

Every model trains with plain SGD (so the optimizer adds nothing that
hides the method's cost) and `jit_compile=True` on JAX and TensorFlow.
The number of steps per timed epoch is chosen from the baseline's measured
step time so that an epoch takes ~0.5 s: `fit`'s fixed cost per epoch
(~2 ms on JAX, ~7 ms on torch) would otherwise dilute the ratios of fast
steps toward 1. JAX compilations are
counted while timing (0 expected).
"""

import statistics
import time

import keras

from benchmarks.allocator import minor_page_faults
from benchmarks.common import figure
from benchmarks.common import spread
from benchmarks.overhead_floor import CONFIGS
from benchmarks.overhead_hlo import describe_diff
from benchmarks.overhead_hlo import hlo_diff
from benchmarks.overhead_hlo import train_step_hlo
from benchmarks.overhead_models import METHODS
from benchmarks.overhead_models import build
from benchmarks.overhead_models import make_data
from benchmarks.overhead_models import make_teacher
from benchmarks.overhead_targets import jax_medians
from benchmarks.overhead_targets import target_for
from benchmarks.step_timing import CompileCounter
from benchmarks.step_timing import compare_step_times
from benchmarks.step_timing import fit_time_per_step
from benchmarks.step_timing import load_average

BACKEND = keras.backend.backend()
JIT = BACKEND != "torch"


# Timed epochs last about this long, within [MIN_STEPS, MAX_STEPS] steps.
EPOCH_SECONDS = 0.5
MIN_STEPS, MAX_STEPS = 5, 200


def time_family(family, cfg, steps, repeats, teacher=None):
    """Interleaved step-time ratios of every method of a family to the
    first; returns (per-method timing dict, compile counts, parameter
    counts, steps per timed epoch).

    `steps`: the steps of the compiling epoch; the timed epochs have as
    many steps as make the baseline's epoch last `EPOCH_SECONDS`."""
    methods = METHODS[family]
    models = {}
    for method in methods:
        model, loss = build(family, method, cfg, teacher)
        model.compile(
            optimizer=keras.optimizers.SGD(1e-3), loss=loss, jit_compile=JIT
        )
        models[method] = model
    x, y = make_data(family, cfg, cfg["batch"] * max(steps, MAX_STEPS))
    for model in models.values():  # compile outside the counted rounds
        fit_time_per_step(model, x, y, cfg["batch"], steps)
    if steps > 3:  # not in --quick
        per_step = fit_time_per_step(
            models[methods[0]], x, y, cfg["batch"], steps
        )
        steps = int(min(MAX_STEPS, max(MIN_STEPS, EPOCH_SECONDS / per_step)))
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
    for name, model in models.items():  # after timing: load-independent
        before = minor_page_faults()
        fit_time_per_step(model, x, y, cfg["batch"], steps)
        res[name]["minor_faults_per_step"] = (
            minor_page_faults() - before
        ) / steps
    counts = {"all": counted.all, "train_step": counted.train_step}
    params = {m: model.count_params() for m, model in models.items()}
    return res, counts, params, steps


def steps_for(family, cfg, floor, quick):
    if quick:
        return 3
    per_step = floor["base_flops"] / 5e9 + 2e-3  # ~5 GFLOP/s, loaded CPU
    return int(min(100, max(5, 0.5 / per_step)))


def run_width(family, d, quick, repeats, do_hlo):
    config_fn, floor_fn = CONFIGS[family]
    cfg = config_fn(d, quick)
    methods = METHODS[family]
    floors = {m: floor_fn(m, cfg) for m in methods[1:]}
    steps = steps_for(family, cfg, floors[methods[1]], quick)
    teacher = make_teacher(1024) if family == "loss" else None
    start = time.perf_counter()
    res, compiles, params, steps = time_family(
        family, cfg, steps, repeats, teacher
    )
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
                # Process CPU time: the steadier figure where wall times
                # are bimodal (TensorFlow here; docs/benchmarks.md).
                "cpu_ratios": res[m]["cpu_ratios"],
                "cpu": spread(res[m]["cpu_ratios"]),
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
                # The allocator's share (see overhead.py): pages the OS
                # zeroed a step.
                "minor_faults_per_step": res[m]["minor_faults_per_step"],
                "baseline_minor_faults_per_step": res[methods[0]][
                    "minor_faults_per_step"
                ],
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
