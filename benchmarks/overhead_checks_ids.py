"""`overhead_checks.py`'s family `ids`: the cost of a token-id check.

A token-id check (`check_ids_in_range`) before an
`Embedding(1000, d)` -> mean over 16 positions -> Dense(d) -> Dense(10)
classifier, batch 256, against the same model unchecked. On JAX two
places to tie the check (a `lax.cond` whose failing branch calls
`jax.pure_callback`): `ids_tied`, what `check_ids_in_range` does (a zero
from the check added to the ids), and `output_tied` (added to the
embedding output instead), plus the host CPU time each adds to one call
of a jitted function; on TensorFlow with `jit_compile=True`, `ids_tied` is
the status write in the step and the check after it.
"""

import statistics
import time

import keras
import numpy as np
from keras import ops

from benchmarks.common import figure
from benchmarks.common import spread
from benchmarks.overhead_floor import CLASSES
from benchmarks.overhead_targets import CHECKS_TARGET
from benchmarks.step_timing import interleaved_cpu_times
from keras_efficient import _data_checks

BACKEND = keras.backend.backend()
JIT = BACKEND != "torch"


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


def ids_mechanisms():
    return ("ids_tied", "output_tied") if BACKEND == "jax" else ("ids_tied",)


def run_ids(d, batch, steps, repeats):
    n = batch * steps
    rng = np.random.default_rng(4)
    x = rng.integers(0, IDS_VOCABULARY, (n, IDS_LENGTH)).astype("int32")
    y = rng.integers(0, CLASSES, (n,)).astype("int32")
    models = {}
    for mechanism in ("none", *ids_mechanisms()):
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
    res = interleaved_cpu_times(
        models, x, y, batch, steps, repeats, baseline="unchecked"
    )
    figures = []
    for mechanism in ids_mechanisms():
        ratios = res[mechanism]["cpu_ratios"]
        fig = figure(
            f"checks/ids/{mechanism}/d{d}",
            statistics.median(ratios),
            target=("<=", CHECKS_TARGET),
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

    fns = {m: step(m) for m in ("none", *ids_mechanisms())}
    cost = {m: [] for m in fns}
    for _ in range(repeats + 1):
        for m, f in fns.items():
            start = time.process_time()
            for _ in range(calls):
                out = f(ids, table)
            out.block_until_ready()
            cost[m].append((time.process_time() - start) / calls * 1e6)
    figures = []
    for m in ids_mechanisms():
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
