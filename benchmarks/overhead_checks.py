"""Cost of the distillation losses' run-time output checks.

`SLaMLoss` (teacher probabilities) and `KnowledgeDistillationLoss`
(teacher logits) check their outputs on every call and every compiled
step (`keras_efficient/distillation/_output_checks.py`): the teacher's
finiteness and convention, the student's convention. This script times
a whole train step with those checks against the same loss whose
`check_outputs` keeps only the static (shape) checks, in the overhead
benchmark's loss model (an MLP 40 -> d -> d -> 10 at batch 256, plain
SGD, `jit_compile=True` on JAX and TensorFlow), interleaved A/B rounds of
one `fit` epoch each, and reports the median ratio of host CPU time per
step (and of wall time) with its IQR, plus the load average at start and
end.

    KERAS_BACKEND=jax python benchmarks/overhead_checks.py [--quick]
        [--widths 64 256] [--repeats 9]

Writes `benchmarks/results/overhead_checks[.<backend>][.quick].json`.
"""

import os
import statistics
import sys
import time

import keras
import numpy as np
from keras import ops

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import figure  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from benchmarks.overhead import CLASSES  # noqa: E402
from benchmarks.overhead import LOSS_BATCH  # noqa: E402
from benchmarks.overhead import MLP_IN  # noqa: E402
from benchmarks.overhead import _teacher  # noqa: E402
from benchmarks.overhead import spread  # noqa: E402
from keras_efficient.distillation import _output_checks  # noqa: E402
from keras_efficient.losses import KnowledgeDistillationLoss  # noqa: E402
from keras_efficient.losses import SLaMLoss  # noqa: E402

BACKEND = keras.backend.backend()
JIT = BACKEND != "torch"
# A check that costs more than this, of a whole step, is not "cheap".
TARGET = 1.03


def _static_only(loss):
    """`loss` with its in-graph checks off (the shape checks stay)."""

    def check_outputs(y_true, y_pred):
        _output_checks.check_shapes(
            loss, ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred)
        )
        return []

    loss.check_outputs = check_outputs
    return loss


def _losses(name, estimator):
    if name == "slam":
        return SLaMLoss(estimator), _static_only(SLaMLoss(estimator))
    return KnowledgeDistillationLoss(), _static_only(
        KnowledgeDistillationLoss()
    )


def _model(d):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((MLP_IN,)),
            keras.layers.Dense(d, activation="relu"),
            keras.layers.Dense(d, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )


def run(name, d, batch, steps, repeats):
    n = batch * steps
    probs, estimator = _teacher(n)
    # SLaM reads teacher probabilities, KD teacher logits.
    y = probs if name == "slam" else np.log(probs + 1e-6).astype("float32")
    x = np.random.default_rng(2).normal(size=(n, MLP_IN)).astype("float32")
    checked, unchecked = _losses(name, estimator)
    models = {}
    for label, loss in (("unchecked", unchecked), ("checked", checked)):
        model = _model(d)
        model.compile(
            optimizer=keras.optimizers.SGD(1e-3), loss=loss, jit_compile=JIT
        )
        models[label] = model
    res = _interleaved(models, x, y, batch, steps, repeats)
    ratios = res["checked"]["cpu_ratios"]
    fig = figure(
        f"checks/{name}/d{d}",
        statistics.median(ratios),
        target=("<=", TARGET),
        unit="x",
        note=f"median of {repeats} interleaved rounds of {steps} steps, "
        f"batch {batch}",
    )
    fig.update(spread(ratios))
    wall = res["checked"]["wall_ratios"]
    fig.update(
        {
            "cpu_ratios": ratios,
            "wall_ratios": wall,
            "wall_median": statistics.median(wall),
            "wall_spread": spread(wall),
            "cpu_step_seconds": statistics.median(res["checked"]["cpu"]),
            "baseline_cpu_step_seconds": statistics.median(
                res["unchecked"]["cpu"]
            ),
            "wall_step_seconds": statistics.median(res["checked"]["wall"]),
            "baseline_wall_step_seconds": statistics.median(
                res["unchecked"]["wall"]
            ),
        }
    )
    return fig


def _interleaved(models, x, y, batch, steps, repeats):
    """Per-step host CPU time and wall time of one `fit` epoch per model,
    models taking turns (ABBA) for `repeats` rounds (after two warm-up
    epochs);
    ratios per round against "unchecked".

    CPU time (`time.process_time`, all threads of this process) is the
    primary figure: on a machine shared with other jobs, wall time mostly
    measures the scheduler.
    """
    times = {name: {"cpu": [], "wall": []} for name in models}
    for model in models.values():
        for _ in range(2):
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    names = list(models)
    for r in range(repeats):
        # ABBA order, so a systematic penalty on whichever model runs
        # second in a round does not fall on one of them.
        for name in names if r % 2 == 0 else names[::-1]:
            model = models[name]
            cpu, wall = time.process_time(), time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
            times[name]["cpu"].append((time.process_time() - cpu) / steps)
            times[name]["wall"].append((time.perf_counter() - wall) / steps)
    base = times["unchecked"]
    for t in times.values():
        t["cpu_ratios"] = [a / b for a, b in zip(t["cpu"], base["cpu"])]
        t["wall_ratios"] = [a / b for a, b in zip(t["wall"], base["wall"])]
    return times


def loss_gradient_cost(name, batch, calls, repeats):
    """Host CPU time of the loss and its gradient alone, checked minus
    unchecked, in microseconds a call (JAX: `jax.jit(value_and_grad)`;
    other backends: their eager call). Isolates the checks' own cost from
    the rest of the step."""
    probs, estimator = _teacher(batch)
    y = probs if name == "slam" else np.log(probs + 1e-6).astype("float32")
    s = np.random.default_rng(3).normal(size=(batch, CLASSES))
    y, s = ops.convert_to_tensor(y), ops.convert_to_tensor(s.astype("f4"))
    checked, unchecked = _losses(name, estimator)
    fns = {"unchecked": unchecked, "checked": checked}
    if BACKEND == "jax":
        import jax

        fns = {
            k: jax.jit(jax.value_and_grad(lambda p, f=f: f(y, p)))
            for k, f in fns.items()
        }
    else:
        fns = {k: (lambda p, f=f: f(y, p)) for k, f in fns.items()}
    cost = {k: [] for k in fns}
    for _ in range(repeats + 1):
        for k, f in fns.items():
            start = time.process_time()
            for _ in range(calls):
                out = f(s)
            ops.convert_to_numpy(out[0] if isinstance(out, tuple) else out)
            cost[k].append((time.process_time() - start) / calls * 1e6)
    added = [a - b for a, b in zip(cost["checked"][1:], cost["unchecked"][1:])]
    fig = figure(
        f"checks/{name}/loss_and_gradient_added_us",
        statistics.median(added),
        unit="us",
        note=f"checked minus unchecked host CPU time per call, batch "
        f"{batch} x {CLASSES}, median of {repeats} rounds of {calls} calls",
    )
    fig.update(
        {
            "added_us": added,
            "unchecked_us": statistics.median(cost["unchecked"][1:]),
            "checked_us": statistics.median(cost["checked"][1:]),
        }
    )
    return fig


def _arguments(parser):
    parser.add_argument("--widths", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None)


def main():
    args = parse_args(__doc__.splitlines()[0], extra=_arguments)
    widths = args.widths or ((64,) if args.quick else (64, 256))
    repeats = args.repeats or (3 if args.quick else 31)
    batch = 64 if args.quick else LOSS_BATCH
    steps = 3 if args.quick else 20
    load_start = os.getloadavg()
    figures = [
        run(name, d, batch, steps, repeats)
        for d in widths
        for name in ("slam", "kd")
    ]
    figures += [
        loss_gradient_cost(name, batch, 50 if args.quick else 300, repeats)
        for name in ("slam", "kd")
    ]
    load_end = os.getloadavg()
    write_results(
        "overhead_checks",
        figures,
        args,
        extra={
            "load_average_start": list(load_start),
            "load_average_end": list(load_end),
            "note": "checked / unchecked train-step time of the same loss; "
            "the machine was shared, so read the IQR and min-max next to "
            "each median.",
        },
    )
    print_table(figures, title=f"Output-check overhead ({BACKEND})")
    print(f"load average: start {load_start}, end {load_end}")


if __name__ == "__main__":
    main()
