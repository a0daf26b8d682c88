"""Group-aware filter pruning for `MagnitudePruning` (private).

Channels that are added, concatenated or mixed together (residual `Add`,
`Concatenate`, `LaurelResidual`) can only be removed by `shrink` when they
are zero in every tensor of their *group* (see `graph.py`). Pruning filters
layer by layer keeps different channels in the layers of one residual sum,
so `shrink` can then remove almost nothing outside the blocks. Here the
target kernels are grouped the way `shrink` groups channels: every kernel
that produces the channels of one group gets the same output-channel mask,
chosen from the group's importance (the L1 norms of the producers' output
columns, summed over the group, as `shrink.group_scores`), and the
per-channel variables that must be zero too for a channel to be removable
(the producers' biases, batch-norm scale and offset, depthwise biases,
LAuReL up-projection columns) are masked with it ("followers").

Target kernels whose channels are in no prunable group (model outputs,
channels normalised by a `LayerNormalization`, layers the graph does not
describe such as the projections inside a `MultiHeadAttention`) are
pruned layer by layer, as without groups.
"""

from typing import Any

import keras
from keras import ops

from keras_efficient.layers.laurel import LaurelResidual
from keras_efficient.pruning import mask_ops
from keras_efficient.pruning import masks as masks_lib
from keras_efficient.pruning.state import ChannelMaskConstraint
from keras_efficient.pruning.state import MaskConstraint
from keras_efficient.pruning.state import PruningState
from keras_efficient.pruning.state import unmasked_constraint

L = keras.layers


def _analyses(analysis):
    yield analysis
    for _, _, child in analysis.children:
        yield from _analyses(child)


def _up_kernels(layer):
    if not isinstance(layer, LaurelResidual):
        return []
    ups = list(getattr(layer, "pa_kernels_b", None) or [])
    if hasattr(layer, "lr_kernel_b"):
        ups.append(layer.lr_kernel_b)
    return ups


def _trainable(variable):
    return variable is not None and getattr(variable, "trainable", False)


def plan_groups(model: keras.Model, kernels: list) -> tuple:
    """`(groups, followers)` of filter pruning by channel group.

    `groups` is a tuple of `(scored, masked)` tuples of indices into
    `kernels`: the kernels whose output channels are the channels of one
    prunable group (`masked`), and those of them that score the channels
    (`scored`: producer kernels; LAuReL up-projections are masked only).
    `followers` is a list of `(variable, spec)`: `spec` describes the
    variable's last axis as segments `(kernel index or -1, size)`, masked
    with that kernel's output channels (`-1`: kept).

    Raises an error when the model's graph cannot be read (subclassed
    models, layers `shrink` does not handle).
    """
    from keras_efficient.pruning import units
    from keras_efficient.pruning.shrink import Analysis

    analysis = Analysis(model)
    index = {id(k): i for i, k in enumerate(kernels)}
    groups, rep = [], {}
    for group in analysis.unit_groups:
        if group.node is not None:  # attention heads: not filter units
            continue
        scored, masked = [], []
        for node, offset in group.members:
            if node.kind in ("producer", "attention"):
                kernel = units._out_kernel(node.layer)[0]
                if id(kernel) in index and offset == 0:
                    if tuple(kernel.shape)[-1] == group.size:
                        scored.append(index[id(kernel)])
            elif node.kind == "merge" and len(node.out_layout) == 1:
                for kernel in _up_kernels(node.layer):
                    if id(kernel) in index:
                        masked.append(index[id(kernel)])
        masked = scored + [i for i in masked if i not in scored]
        if not masked:
            continue
        key = (id(group.analysis), group.gid)
        rep[key] = masked[0]
        groups.append((tuple(scored or masked), tuple(masked)))
    seen = [i for _, masked in groups for i in masked]
    if len(seen) != len(set(seen)):
        raise ValueError("A target kernel belongs to two channel groups.")
    followers = _followers(analysis, index, rep)
    return tuple(groups), followers


def _followers(analysis, index, rep):
    """`[(variable, spec)]` of the per-channel variables of each node."""
    from keras_efficient.pruning import units

    out, done = [], set()
    for a in _analyses(analysis):
        for node in a.nodes:
            spec = []
            for gid, size in node.out_layout:
                root = a.groups.find(gid)
                spec.append((rep.get((id(a), root), -1), size))
            if all(i < 0 for i, _ in spec):
                continue
            layer, variables = node.layer, []
            if node.kind in ("producer", "attention"):
                kernel, bias = units._out_kernel(layer)
                if id(kernel) in index:  # a target: its bias goes too
                    variables.append(bias)
            elif isinstance(layer, L.BatchNormalization):
                variables += [getattr(layer, "gamma", None)]
                variables += [getattr(layer, "beta", None)]
            elif node.kind == "elementwise":
                variables.append(getattr(layer, "bias", None))
            elif node.kind == "merge":
                variables += _up_kernels(layer)
            total = sum(size for _, size in spec)
            for v in variables:
                if not _trainable(v) or id(v) in index or id(v) in done:
                    continue
                if tuple(v.shape)[-1] != total:
                    continue
                done.add(id(v))
                out.append((v, tuple(spec)))
    return out


def group_masks(
    kernels: list,
    sparsity: Any,
    groups: tuple,
    scope: str = "layer",
    factors: tuple | None = None,
    numpy: bool = False,
) -> list:
    """Filter masks with the channels of each group pruned together.

    Each group keeps the `k = max(round(n * (1 - s)), 1)` channels of
    largest summed L1 norm over its `scored` kernels, in all its `masked`
    kernels; every other kernel is pruned on its own, as
    `compute_masks(..., "filter")`. With `scope="global"` one threshold
    runs across all groups and kernels. With `factors` (per kernel, from
    `layer_sparsity`) a group is pruned at `sparsity` times the smallest
    factor of its kernels. `numpy`: NumPy reference (`masks.py`) instead
    of `keras.ops` (`mask_ops.py`, traceable).
    """
    lib = masks_lib if numpy else mask_ops
    entries, grouped = [], set()
    for scored, masked in groups:
        score = lib.unit_scores(kernels[scored[0]], "filter")
        for i in scored[1:]:
            score = score + lib.unit_scores(kernels[i], "filter")
        factor = min(factors[i] for i in masked) if factors else 1.0
        entries.append((score, factor, masked))
        grouped.update(masked)
    for i, kernel in enumerate(kernels):
        if i not in grouped:
            factor = factors[i] if factors else 1.0
            entries.append((lib.unit_scores(kernel, "filter"), factor, (i,)))
    if scope == "global":
        keeps = lib.keep_top([e[0] for e in entries], sparsity)
    else:
        keeps = [
            lib.keep_top([s], sparsity if f == 1.0 else sparsity * f)[0]
            for s, f, _ in entries
        ]
    out = [None] * len(kernels)
    for keep, (_, _, members) in zip(keeps, entries):
        for i in members:
            shape = tuple(kernels[i].shape)
            out[i] = lib.units_to_mask(keep, shape, "filter")
    return out


class GroupChannelConstraint(ChannelMaskConstraint):
    """`w -> original(w) * channels` for a per-channel variable of a group
    (bias, batch-norm scale / offset, LAuReL up-projection), its last axis
    masked segment by segment with the output channels of the groups'
    kernel masks (see `plan_groups`)."""

    def __init__(
        self, state: PruningState, spec: tuple, original: Any | None = None
    ):
        MaskConstraint.__init__(self, state, None, original, leader=False)
        self.spec = tuple(spec)
        self.kernel_mask = None

    @property
    def mask(self) -> Any:
        parts = []
        for i, size in self.spec:
            if i < 0:
                parts.append(ops.ones((size,), "float32"))
                continue
            m = ops.cast(ops.convert_to_tensor(self.state.masks[i]), "float32")
            n = tuple(m.shape)[-1]
            parts.append(ops.max(ops.reshape(m, (-1, n)), axis=0))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts)

    @mask.setter
    def mask(self, value: Any) -> None:
        pass


class GroupPruningState(PruningState):
    """A `PruningState` that prunes filters by channel group when its
    options hold `groups` (otherwise exactly a `PruningState`).

    Followers are `(variable, kernel index)` (the kernel's output
    channels, as `PruningState`) or `(variable, spec)` (see
    `plan_groups`).
    """

    def set_followers(self, followers: list) -> None:
        self._detach_followers()
        self.followers = list(followers)
        for variable, spec in self.followers:
            if isinstance(spec, int):
                n = tuple(self.kernels[spec].shape)[-1]
                spec = ((spec, n),)
            variable.constraint = GroupChannelConstraint(
                self, spec, unmasked_constraint(variable)
            )

    def _masks(self, kernels, sparsity, compute):
        groups = self.options.get("groups")
        if not groups:
            return super()._masks(kernels, sparsity, compute)
        return group_masks(
            kernels,
            sparsity,
            groups,
            scope=self.options["scope"],
            factors=self.options.get("factors"),
            numpy=compute is masks_lib.compute_masks,
        )


def filter_plan(
    model: keras.Model, found: list, group_channels: bool | None
) -> tuple:
    """`(groups or None, followers)` for `structure="filter"`.

    `group_channels`: False (layer by layer, batch norms after a target
    masked as before), None (by group when the model's graph can be read,
    else layer by layer) or True (by group; an error when the graph cannot
    be read).
    """
    from keras_efficient.pruning.attach import bn_followers

    bn = bn_followers(model, found)
    if group_channels is False:
        return None, bn
    try:
        groups, followers = plan_groups(model, [k for _, k in found])
    except Exception as e:
        if group_channels:
            raise ValueError(
                "`group_channels=True` needs a Sequential or functional "
                "model whose channel graph `shrink` can read; pass "
                "`group_channels=False` to prune filters layer by layer. "
                f"Reading {model.name!r} failed: {e}"
            ) from e
        return None, bn
    if not groups:
        return None, bn
    grouped = {i for _, masked in groups for i in masked}
    ids = {id(v) for v, _ in followers}
    for variable, i in bn:
        if i not in grouped and id(variable) not in ids:
            followers.append((variable, i))
    return groups, followers
