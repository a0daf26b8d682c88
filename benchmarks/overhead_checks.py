"""Cost of the run-time data checks.

Family `losses`:

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

Family `ids`: a token-id check (`check_ids_in_range`) before an
`Embedding(1000, d)` -> mean over 16 positions -> Dense(d) -> Dense(10)
classifier, batch 256, against the same model unchecked. On JAX two
places to tie the check (a `lax.cond` whose failing branch calls
`jax.pure_callback`): `ids_tied`, what `check_ids_in_range` does (a zero
from the check added to the ids), and `output_tied` (added to the
embedding output instead), plus the host CPU time each adds to one call
of a jitted function; on TensorFlow with `jit_compile=True`, `ids_tied` is
the status write in the step and the check after it.

    KERAS_BACKEND=jax python benchmarks/overhead_checks.py [--quick]
        [--widths 64 256] [--repeats 9] [--families losses ids]

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
from keras_efficient import _data_checks  # noqa: E402
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


IDS_VOCABULARY, IDS_LENGTH = 1000, 16


def _ids_problem(ids, size):
    """`check_ids_in_range`'s check, as a `Problem` for `raise_with`."""
    valid = ops.logical_and(ops.greater_equal(ids, 0), ops.less(ids, size))
    return _data_checks.Problem(
        ops.logical_not(ops.all(valid)),
        f"`token_ids` must be in [0, {size}). Received: token_ids with min "
        "{0} and max {1}",
        (ops.min(ids), ops.max(ids)),
    )


class CheckedEmbedding(keras.layers.Layer):
    """An `Embedding` whose ids are checked by `mechanism`: "none",
    "ids_tied" (`check_ids_in_range`) or "output_tied" (the same check
    tied to the embedding output)."""

    def __init__(self, size, dim, mechanism, **kwargs):
        super().__init__(**kwargs)
        self.size, self.mechanism = size, mechanism
        self.embedding = keras.layers.Embedding(size, dim)

    def call(self, ids):
        if self.mechanism == "ids_tied":
            ids = _data_checks.check_ids_in_range(ids, self.size)
        out = self.embedding(ids)
        if self.mechanism == "output_tied":
            out = _data_checks.raise_with(out, [_ids_problem(ids, self.size)])
        return out


def _ids_mechanisms():
    return ("ids_tied", "output_tied") if BACKEND == "jax" else ("ids_tied",)


def run_ids(d, batch, steps, repeats):
    n = batch * steps
    rng = np.random.default_rng(4)
    x = rng.integers(0, IDS_VOCABULARY, (n, IDS_LENGTH)).astype("int32")
    y = rng.integers(0, CLASSES, (n,)).astype("int32")
    models = {}
    for mechanism in ("none", *_ids_mechanisms()):
        keras.utils.set_random_seed(0)
        ids = keras.Input((IDS_LENGTH,), dtype="int32")
        h = CheckedEmbedding(IDS_VOCABULARY, d, mechanism)(ids)
        h = keras.layers.GlobalAveragePooling1D()(h)
        h = keras.layers.Dense(d, activation="relu")(h)
        model = keras.Model(ids, keras.layers.Dense(CLASSES)(h))
        model.compile(
            optimizer=keras.optimizers.SGD(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=JIT,
        )
        models["unchecked" if mechanism == "none" else mechanism] = model
    res = _interleaved(models, x, y, batch, steps, repeats)
    figures = []
    for mechanism in _ids_mechanisms():
        ratios = res[mechanism]["cpu_ratios"]
        fig = figure(
            f"checks/ids/{mechanism}/d{d}",
            statistics.median(ratios),
            target=("<=", TARGET),
            unit="x",
            note=f"checked / unchecked host CPU time a fit step, median of "
            f"{repeats} interleaved rounds of {steps} steps, batch {batch}",
        )
        fig.update(spread(ratios))
        fig.update(
            {
                "cpu_ratios": ratios,
                "wall_median": statistics.median(res[mechanism]["wall_ratios"]),
                "cpu_step_seconds": statistics.median(res[mechanism]["cpu"]),
                "baseline_cpu_step_seconds": statistics.median(
                    res["unchecked"]["cpu"]
                ),
            }
        )
        figures.append(fig)
    return figures


def ids_dispatch_cost(batch, calls, repeats):
    """JAX: host CPU time one call of a jitted function (a gather of
    checked ids) adds over the same function unchecked, microseconds."""
    import jax

    rng = np.random.default_rng(5)
    ids = jax.numpy.asarray(
        rng.integers(0, IDS_VOCABULARY, (batch, IDS_LENGTH)), "int32"
    )
    table = jax.numpy.asarray(rng.normal(size=(IDS_VOCABULARY, 8)), "float32")

    def step(mechanism):
        def f(ids, table):
            if mechanism == "ids_tied":
                ids = _data_checks.check_ids_in_range(ids, IDS_VOCABULARY)
            out = ops.take(table, ids, axis=0)
            if mechanism == "output_tied":
                out = _data_checks.raise_with(
                    out, [_ids_problem(ids, IDS_VOCABULARY)]
                )
            return ops.sum(out)

        return jax.jit(f)

    fns = {m: step(m) for m in ("none", *_ids_mechanisms())}
    cost = {m: [] for m in fns}
    for _ in range(repeats + 1):
        for m, f in fns.items():
            start = time.process_time()
            for _ in range(calls):
                out = f(ids, table)
            out.block_until_ready()
            cost[m].append((time.process_time() - start) / calls * 1e6)
    figures = []
    for m in _ids_mechanisms():
        added = [a - b for a, b in zip(cost[m][1:], cost["none"][1:])]
        fig = figure(
            f"checks/ids/{m}/jitted_call_added_us",
            statistics.median(added),
            unit="us",
            note=f"checked minus unchecked host CPU time a jitted call, ids "
            f"{batch} x {IDS_LENGTH}, median of {repeats} rounds of {calls} "
            "calls",
        )
        fig.update(
            {
                "added_us": added,
                "unchecked_us": statistics.median(cost["none"][1:]),
                "checked_us": statistics.median(cost[m][1:]),
            }
        )
        figures.append(fig)
    return figures


def _arguments(parser):
    parser.add_argument("--widths", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--families",
        nargs="+",
        default=["losses", "ids"],
        choices=["losses", "ids"],
    )


def main():
    args = parse_args(__doc__.splitlines()[0], extra=_arguments)
    widths = args.widths or ((64,) if args.quick else (64, 256))
    repeats = args.repeats or (3 if args.quick else 31)
    batch = 64 if args.quick else LOSS_BATCH
    steps = 3 if args.quick else 20
    load_start = os.getloadavg()
    figures = []
    if "losses" in args.families:
        figures += [
            run(name, d, batch, steps, repeats)
            for d in widths
            for name in ("slam", "kd")
        ]
        figures += [
            loss_gradient_cost(name, batch, 50 if args.quick else 300, repeats)
            for name in ("slam", "kd")
        ]
    if "ids" in args.families:
        for d in widths:
            figures += run_ids(d, batch, steps, repeats)
        if BACKEND == "jax":
            figures += ids_dispatch_cost(
                batch, 50 if args.quick else 300, repeats
            )
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
