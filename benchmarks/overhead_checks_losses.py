"""`overhead_checks.py`'s family `losses`: the cost of the distillation
losses' output checks.

`SLaMLoss` (teacher probabilities) and `KnowledgeDistillationLoss`
(teacher logits) check their outputs on every call and every compiled
step (`keras_efficient/distillation/_output_checks.py`): the teacher's
finiteness and convention, the student's convention. This module times
a whole train step with those checks against the same loss whose
`check_outputs` keeps only the static (shape) checks, in the overhead
benchmark's loss model (an MLP 40 -> d -> d -> 10 at batch 256, plain
SGD, `jit_compile=True` on JAX and TensorFlow), interleaved A/B rounds of
one `fit` epoch each, and reports the median ratio of host CPU time per
step (and of wall time) with its IQR, plus the load average at start and
end.

`loss_gradient_cost` isolates the checks' own cost: the host CPU time of
the loss and its gradient alone, checked minus unchecked.
"""

import statistics
import time

import keras
import numpy as np
from keras import ops

from benchmarks.common import figure
from benchmarks.common import spread
from benchmarks.overhead_floor import CLASSES
from benchmarks.overhead_floor import MLP_IN
from benchmarks.overhead_models import loss_mlp
from benchmarks.overhead_models import make_teacher
from benchmarks.overhead_targets import CHECKS_TARGET
from benchmarks.step_timing import interleaved_cpu_times
from keras_efficient.distillation import _output_checks
from keras_efficient.losses import KnowledgeDistillationLoss
from keras_efficient.losses import SLaMLoss

BACKEND = keras.backend.backend()
JIT = BACKEND != "torch"


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


def run_loss(name, d, batch, steps, repeats):
    n = batch * steps
    probs, estimator = make_teacher(n)
    # SLaM reads teacher probabilities, KD teacher logits.
    y = probs if name == "slam" else np.log(probs + 1e-6).astype("float32")
    x = np.random.default_rng(2).normal(size=(n, MLP_IN)).astype("float32")
    checked, unchecked = _losses(name, estimator)
    models = {}
    for label, loss in (("unchecked", unchecked), ("checked", checked)):
        keras.utils.set_random_seed(0)
        model = loss_mlp(d)
        model.compile(
            optimizer=keras.optimizers.SGD(1e-3), loss=loss, jit_compile=JIT
        )
        models[label] = model
    res = interleaved_cpu_times(
        models, x, y, batch, steps, repeats, baseline="unchecked"
    )
    ratios = res["checked"]["cpu_ratios"]
    fig = figure(
        f"checks/{name}/d{d}",
        statistics.median(ratios),
        target=("<=", CHECKS_TARGET),
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


def loss_gradient_cost(name, batch, calls, repeats):
    """Host CPU time of the loss and its gradient alone, checked minus
    unchecked, in microseconds a call (JAX: `jax.jit(value_and_grad)`;
    other backends: their eager call). Isolates the checks' own cost from
    the rest of the step."""
    probs, estimator = make_teacher(batch)
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
