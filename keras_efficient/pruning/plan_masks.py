"""The masks of a `PruningPlan`: per-layer targets and channel groups on
top of the per-structure mask math.

The math has two twins side by side: `masks.py`, the NumPy reference
(used once before the training loop, and by the tests), and `mask_ops.py`,
the same masks with `keras.ops` (traced inside the compiled train step).
Every function here takes `backend="numpy"` or `backend="ops"` and uses
that twin; nothing else differs.
"""

from collections.abc import Sequence
from typing import Any

from keras_efficient.pruning import mask_ops
from keras_efficient.pruning import masks
from keras_efficient.pruning.plan import PruningPlan

BACKENDS = {"numpy": masks, "ops": mask_ops}


def _math(backend):
    if backend not in BACKENDS:
        raise ValueError(
            f"`backend` must be one of {tuple(BACKENDS)}. "
            f"Received: backend={backend!r}"
        )
    return BACKENDS[backend]


def plan_masks(
    kernels: Sequence,
    sparsity: Any,
    plan: PruningPlan,
    backend: str = "ops",
) -> list:
    """The masks of `kernels` (values of `plan.kernels`) at `sparsity`.

    Args:
        kernels: one array or tensor per kernel of `plan`.
        sparsity: the schedule's sparsity (a traced value with `"ops"`).
        plan: a `PruningPlan` (its options, factors and groups).
        backend: `"numpy"` (`masks.py`) or `"ops"` (`mask_ops.py`).
    """
    o = plan.options
    if plan.unit_groups:
        return unit_masks(kernels, sparsity, plan.unit_groups, backend)
    if plan.groups:
        return group_masks(
            kernels,
            sparsity,
            plan.groups,
            scope=o.scope,
            factors=plan.factors,
            backend=backend,
        )
    math = _math(backend)

    def run(ks, s):
        return math.compute_masks(
            ks,
            s,
            o.structure,
            scope=o.scope,
            block=o.block,
            n_m=o.n_m,
            pooling=o.block_pooling,
        )

    if plan.factors is None:
        return run(kernels, sparsity)
    # Per-layer targets: each kernel at `sparsity * factor` (scope "layer"
    # only, checked by the callback).
    out = []
    for kernel, factor in zip(kernels, plan.factors):
        s = sparsity if factor == 1.0 else sparsity * factor
        out.extend(run([kernel], s))
    return out


def group_masks(
    kernels: Sequence,
    sparsity: Any,
    groups: Sequence,
    scope: str = "layer",
    factors: Sequence[float] | None = None,
    backend: str = "ops",
) -> list:
    """Filter masks with the channels of each group pruned together.

    Each group `(scored, masked)` (a `plan.ChannelGroup`) keeps the
    `k = max(round(n * (1 - s)), 1)` channels of largest summed L1 norm
    over its `scored` kernels, in all its `masked` kernels; every other
    kernel is pruned on its own, as `compute_masks(..., "filter")`. With
    `scope="global"` one threshold runs across all groups and kernels.
    With `factors` (per kernel, from `layer_sparsity`) a group is pruned
    at `sparsity` times the smallest factor of its kernels. `backend` as
    in `plan_masks`.
    """
    math = _math(backend)
    entries, grouped = [], set()
    for scored, masked in groups:
        score = math.unit_scores(kernels[scored[0]], "filter")
        for i in scored[1:]:
            score = score + math.unit_scores(kernels[i], "filter")
        factor = min(factors[i] for i in masked) if factors else 1.0
        entries.append((score, factor, masked))
        grouped.update(masked)
    for i, kernel in enumerate(kernels):
        if i not in grouped:
            factor = factors[i] if factors else 1.0
            entries.append((math.unit_scores(kernel, "filter"), factor, (i,)))
    if scope == "global":
        keeps = math.keep_top([e[0] for e in entries], sparsity)
    else:
        keeps = [
            math.keep_top([s], sparsity if f == 1.0 else sparsity * f)[0]
            for s, f, _ in entries
        ]
    out = [None] * len(kernels)
    for keep, (_, _, members) in zip(keeps, entries):
        for i in members:
            shape = tuple(kernels[i].shape)
            out[i] = math.units_to_mask(keep, shape, "filter")
    return out


def unit_masks(
    kernels: Sequence,
    sparsity: Any,
    groups: Sequence,
    backend: str = "ops",
) -> list:
    """Masks of `structure="transformer"`: each `UnitGroup` keeps its
    `k = max(round(n * (1 - s)), 1)` units (or `keep_count(n, s) * per`
    with `count=(n, per)`) of largest L1 norm summed over its members, in
    all of them; a weight in several groups (a query kernel holds hidden
    channels and heads) is masked by each. `backend` as in `plan_masks`.
    """
    math = _math(backend)
    out = [None] * len(kernels)
    for group in groups:
        score = None
        for i, axis, parts, unit in group.members:
            s = math.axis_unit_scores(kernels[i], axis, parts, unit)
            score = s if score is None else score + s
        n, per = group.count or (group.size, 1)
        keep = math.keep_largest(score, math.keep_count(n, sparsity) * per)
        for i, axis, parts, unit in group.members:
            shape = tuple(kernels[i].shape)
            mask = math.axis_units_to_mask(keep, shape, axis, parts, unit)
            out[i] = mask if out[i] is None else out[i] * mask
    return out
