"""Checks that outputs are (or are not) rows of class probabilities
(private).

The distillation losses and the teacher-accuracy estimator read teacher and
student outputs in one of two conventions, logits or probabilities; each
check here reduces a batch to a few scalars and raises through
`_data_checks.raise_if` / `raise_with` on every backend.
"""

import math
from typing import Any

import keras
import numpy as np
from keras import ops
from keras.src.backend.common.symbolic_scope import in_symbolic_scope

from keras_efficient import _backend
from keras_efficient._data_checks import Problem
from keras_efficient._data_checks import raise_if

# Distributions over classes (teacher and student outputs of the
# distillation losses). Each check reduces the batch to a few scalars (the
# smallest and largest entry, the smallest and largest row sum, the
# non-finite rows) and one predicate; nothing else runs on a clean batch.

# Rows of float32 (or float64) probabilities sum to 1 within this: rounding
# a softmax to float32 leaves ~1e-7 per class, so 1e-3 covers 10^4 classes
# with room, and a row of logits or of independent sigmoids misses it.
PROBABILITY_TOLERANCE = 1e-3
# With 16-bit floats anywhere (a teacher run under a mixed policy, outputs
# stored as bfloat16): bfloat16 rounds each entry to 2^-9 relatively, and a
# softmax computed in it accumulates a few such errors per row.
PROBABILITY_TOLERANCE_16BIT = 2e-2


def probability_tolerance(*dtypes: Any) -> float:
    """The row-sum tolerance for outputs that passed through `dtypes`.

    `PROBABILITY_TOLERANCE` (1e-3) when every dtype given, and the compute
    dtype of the global dtype policy, is float32 or float64;
    `PROBABILITY_TOLERANCE_16BIT` (2e-2) once one is float16 or bfloat16.
    """
    names = [keras.config.dtype_policy().compute_dtype]
    names += [keras.backend.standardize_dtype(d) for d in dtypes if d]
    if any(n in ("float16", "bfloat16") for n in names):
        return PROBABILITY_TOLERANCE_16BIT
    return PROBABILITY_TOLERANCE


def output_stats(xs: list) -> list:
    """Per tensor in `xs`: (min, max, smallest row sum, largest row sum,
    non-finite), scalars; non-finite is > 0 when a row does not sum to a
    finite number (the count of such rows in the reference).

    An all-zero row (padding) counts as summing to 1; a row with negative
    entries is caught by the minimum, so a row summing to exactly 0 with
    nothing negative is all zeros. The row sums are computed once for the
    convention and the finiteness checks. On eager torch every scalar of
    every tensor comes back to the host in one transfer, as Python floats
    (`_output_stats_torch`).
    """
    return _backend.dispatch("output_stats", _output_stats)(xs)


def _output_stats(xs):
    """The `keras.ops` reference of `output_stats`."""
    stats = []
    for x in xs:
        x = ops.cast(x, "float32")
        sums = ops.sum(x, axis=-1)
        non_finite = ops.sum(
            ops.cast(ops.logical_not(ops.isfinite(sums)), "float32")
        )
        sums = ops.where(ops.equal(sums, 0.0), ops.ones_like(sums), sums)
        stats.append(
            (ops.min(x), ops.max(x), ops.min(sums), ops.max(sums), non_finite)
        )
    return stats


@_backend.register_fast_path("output_stats", "tensorflow")
def _output_stats_stacked(xs):
    """`output_stats` of tensors of one shape from one reduction over the
    batch: per row its largest and (negated) smallest entry, its sum and
    negated sum and whether the sum is finite, then the largest of each
    over the rows. XLA CPU compiles every full reduction of the reference
    to two kernels (26 kernels for a teacher's and a student's outputs);
    this is 4. The fifth scalar is 1.0 when a row sum is not finite, else
    0.0 (the reference counts the rows)."""
    xs = [ops.cast(x, "float32") for x in xs]
    shapes = {tuple(x.shape) for x in xs}
    num_classes = xs[0].shape[-1] if xs[0].shape else None
    if len(shapes) != 1 or num_classes is None:
        return _output_stats(xs)
    both = ops.reshape(ops.stack(xs), (len(xs), -1, num_classes))
    sums = ops.sum(both, axis=-1)
    non_finite = ops.cast(ops.logical_not(ops.isfinite(sums)), "float32")
    sums = ops.where(ops.equal(sums, 0.0), ops.ones_like(sums), sums)
    rows = ops.stack(
        [ops.max(both, axis=-1), -ops.min(both, axis=-1), sums, -sums]
        + [non_finite],
        axis=1,
    )
    top = ops.max(rows, axis=-1)  # (len(xs), 5)
    return [
        (-top[i, 1], top[i, 0], -top[i, 3], top[i, 2], top[i, 4])
        for i in range(len(xs))
    ]


@_backend.register_fast_path("output_stats", "torch")
def _output_stats_torch(xs):
    """`output_stats` in ~21 aten calls for two float32 tensors of one
    shape and one device-to-host transfer for all of them (the reference:
    ~240 calls, and a transfer per predicate when they are read). Eager
    torch pays per call; the scalars are read on the host anyway, where the
    predicates are plain comparisons. The fifth scalar is 1.0 when a row
    sum is not finite (NaN and infinity reach the extreme row sums), else
    0.0; the count for the message is computed only when a check fails.

    Only what does work dispatches: under `no_grad` nothing is detached,
    a float32 tensor on the first one's device is not cast (`.to` would
    still be a call), tensors of one shape are concatenated and viewed
    (stacking adds a call per tensor), and the zero is a cached tensor
    (`_backend.torch_constant`)."""
    import torch

    xs = [
        x if isinstance(x, torch.Tensor) else ops.convert_to_tensor(x)
        for x in xs
    ]
    if (
        in_symbolic_scope()
        or torch.compiler.is_compiling()
        or any(x.device.type == "meta" or x.numel() == 0 for x in xs)
        or any(x.ndim == 0 for x in xs)
    ):
        return _output_stats(xs)
    device = xs[0].device
    with torch.no_grad():
        xs = [
            x
            if x.dtype == torch.float32 and x.device == device
            else x.to(device=device, dtype=torch.float32)
            for x in xs
        ]
        if len({x.shape for x in xs}) == 1:
            # Tensors of one shape (the teacher's and the student's
            # outputs): every reduction runs once, over both.
            both = torch.cat(xs).view(len(xs), -1, xs[0].shape[-1])
            groups = [(both.view(len(xs), -1), both.sum(-1))]
        else:
            groups = [(x.reshape(1, -1), x.sum(-1).reshape(1, -1)) for x in xs]
        zero = _backend.torch_constant(0.0, device)
        scalars = []
        for entries, sums in groups:
            # amin / amax propagate NaN; a sum of 0 is finite either way.
            sums.masked_fill_(sums == zero, 1.0)
            # amin / amax: aminmax along a dimension is ~10x slower here.
            scalars += [entries.amin(1), entries.amax(1)]
            scalars += [sums.amin(1), sums.amax(1)]
        host = torch.cat(scalars).tolist()
    # Per group four runs (min, max, smallest and largest row sum) of one
    # value per tensor in it: regrouped by tensor.
    per_group = len(xs) // len(groups)
    stats = []
    for g in range(len(groups)):
        run = host[4 * per_group * g : 4 * per_group * (g + 1)]
        for i in range(per_group):
            low, high, sum_low, sum_high = run[i::per_group]
            finite = math.isfinite(sum_low) and math.isfinite(sum_high)
            stats.append((low, high, sum_low, sum_high, 0.0 if finite else 1.0))
    return stats


def _on_host(stats):
    return all(isinstance(s, float) for s in stats)


def _float32(value):
    """`value` rounded as the in-graph comparison rounds it (float32)."""
    return float(np.float32(value))


def _is_distribution(stats, tolerance):
    """Whether the batch's `stats` are those of rows of probabilities
    (false on NaN: every comparison with NaN is false)."""
    low, high, sum_low, sum_high = stats[:4]
    if _on_host(stats):
        return (
            low >= _float32(-tolerance)
            and high <= _float32(1.0 + tolerance)
            and sum_low >= _float32(1.0 - tolerance)
            and sum_high <= _float32(1.0 + tolerance)
        )
    return ops.all(
        ops.stack(
            [
                ops.greater_equal(low, -tolerance),
                ops.less_equal(high, 1.0 + tolerance),
                ops.greater_equal(sum_low, 1.0 - tolerance),
                ops.less_equal(sum_high, 1.0 + tolerance),
            ]
        )
    )


def _received(name):
    return (
        f"Received: {name} with min {{0}}, max {{1}} and row sums from {{2}} "
        "to {3}"
    )


def probabilities_problem(
    x: Any,
    name: str,
    fix: str,
    tolerance: float = PROBABILITY_TOLERANCE,
    stats: tuple | None = None,
) -> Problem:
    """Not every row of `x` is a distribution over its last axis.

    Entries must be in `[-tolerance, 1 + tolerance]` and rows sum to 1
    within `tolerance` (all-zero rows, padding, pass). `fix` is a sentence
    telling the user what to change (e.g. the convention flag). `stats`:
    `x`'s `output_stats`, if already computed.
    """
    stats = (stats or output_stats([x])[0])[:4]
    is_distribution = _is_distribution(stats, tolerance)
    return Problem(
        not is_distribution
        if _on_host(stats)
        else ops.logical_not(is_distribution),
        f"`{name}` must hold probabilities: entries in [0, 1] and rows "
        f"summing to 1 (within {tolerance}). {fix} {_received(name)}",
        stats,
    )


def not_probabilities_problem(
    x: Any,
    name: str,
    fix: str,
    tolerance: float = PROBABILITY_TOLERANCE,
    stats: tuple | None = None,
) -> Problem | None:
    """`x` should hold logits but every row is a distribution.

    Bad when every entry is in `[0, 1]` and every row sums to 1 within
    `tolerance`, i.e. the whole batch already went through a softmax
    (real logits meet that by chance on no batch of two rows or more).
    None for a width of 1, where both conventions look alike. `stats`:
    `x`'s `output_stats`, if already computed.
    """
    if x.shape[-1] is not None and x.shape[-1] < 2:
        return None
    stats = (stats or output_stats([x])[0])[:4]
    is_distribution = _is_distribution(stats, tolerance)
    # A batch of only all-zero rows is valid logits (uniform), not padding.
    if _on_host(stats):
        all_zero = stats[0] == 0.0 and stats[1] == 0.0
        bad = is_distribution and not all_zero
    else:
        all_zero = ops.logical_and(
            ops.equal(stats[0], 0.0), ops.equal(stats[1], 0.0)
        )
        bad = ops.logical_and(is_distribution, ops.logical_not(all_zero))
    return Problem(
        bad,
        f"`{name}` must hold logits, but every row is already a "
        f"probability distribution (entries in [0, 1], rows summing to 1 "
        f"within {tolerance}), e.g. the output of a softmax. {fix} "
        f"{_received(name)}",
        stats,
    )


def non_finite_problem(
    x: Any, name: str, what: str = "", stats: tuple | None = None
) -> Problem:
    """NaN or infinity in `x`: one sum per row, then scalars.

    The message names the first bad row (rows counted over the leading
    axes flattened) and how many there are; both are computed only when
    the check fails. `stats`: `x`'s `output_stats`, if already computed.
    """
    non_finite = (stats or output_stats([x])[0])[4]

    def first_and_count():
        sums = ops.reshape(ops.sum(ops.cast(x, "float32"), axis=-1), (-1,))
        bad_rows = ops.cast(ops.logical_not(ops.isfinite(sums)), "int32")
        return ops.argmax(bad_rows), ops.sum(bad_rows)

    return Problem(
        non_finite > 0
        if _on_host([non_finite])
        else ops.greater(non_finite, 0),
        f"`{name}`{what} must be finite. Received: {name} with NaN or "
        "infinity in batch rows [{0}] (the first such row; {1} in all)",
        first_and_count,
    )


def check_probabilities(x: Any, name: str, fix: str, **kwargs: Any) -> None:
    """Raises (`raise_if`) on `probabilities_problem`."""
    raise_if(*probabilities_problem(x, name, fix, **kwargs))


def check_not_probabilities(x: Any, name: str, fix: str, **kwargs: Any) -> None:
    """Raises (`raise_if`) on `not_probabilities_problem`."""
    problem = not_probabilities_problem(x, name, fix, **kwargs)
    if problem is not None:
        raise_if(*problem)


def check_finite(x: Any, name: str, what: str = "") -> None:
    """Raises (`raise_if`) on `non_finite_problem`."""
    raise_if(*non_finite_problem(x, name, what))
