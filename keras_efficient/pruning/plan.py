"""What `MagnitudePruning` masks, and what is masked with it: the plan.

A `PruningPlan` is built once from the model (`build_plan`) and never
changes: the target kernels (in the order of `model.trainable_variables`,
the order the optimizer applies their constraints in), each kernel's scale
of the schedule's sparsity (`layer_sparsity`), the channel groups whose
kernels keep the same output channels, and the *followers*: per-channel
variables masked with the output channels of one or more kernels (biases,
BatchNormalization scale / offset, LAuReL up-projections).

This is the only module of the pruning update that reads the model's
graph. A graph it cannot read (`graph.UnreadableGraphError`: a subclassed
model, shared layers, a layer `shrink` does not handle) is an error with
`group_channels=True`; with `group_channels=None` the plan falls back to
filters pruned layer by layer and says so in a `UserWarning`.

Channel groups follow `shrink` (see `graph.py`): every kernel that produces
the channels of one prunable group gets the same output-channel mask,
chosen from the group's importance (the L1 norms of the producers' output
columns, summed over the group), and the per-channel variables that must
be zero too for a channel to be removable are its followers. Kernels whose
channels are in no prunable group (model outputs, channels under a
`LayerNormalization`, the projections inside a `MultiHeadAttention`) are
pruned layer by layer.
"""

import dataclasses
import warnings
from collections.abc import Callable
from collections.abc import Sequence
from typing import NamedTuple

import keras

from keras_efficient.pruning import graph
from keras_efficient.pruning import units
from keras_efficient.pruning.schedules import PruningSchedule
from keras_efficient.pruning.shrink import Analysis
from keras_efficient.pruning.targets import find_target_weights
from keras_efficient.pruning.targets import layer_path
from keras_efficient.pruning.targets import model_names
from keras_efficient.pruning.targets import resolve_key
from keras_efficient.pruning.transformer_plan import UnitGroup
from keras_efficient.pruning.transformer_plan import transformer_groups

L = keras.layers


@dataclasses.dataclass(frozen=True)
class PruningOptions:
    """How masks are computed (the validated arguments of
    `MagnitudePruning`; see its docstring)."""

    schedule: PruningSchedule
    scope: str = "layer"
    structure: str = "unstructured"
    block: tuple[int, int] | None = None
    n_m: tuple[int, int] | None = None
    block_pooling: str = "avg"
    n_m_update: str = "schedule"
    remask_at_epoch_end: bool = False
    transformer_axes: tuple[str, ...] | None = None


class ChannelGroup(NamedTuple):
    """Indices into `PruningPlan.kernels` of one prunable channel group:
    the kernels that score its channels (`scored`, producers) and all the
    kernels masked with them (`masked`, producers then LAuReL
    up-projections)."""

    scored: tuple[int, ...]
    masked: tuple[int, ...]


class Follower(NamedTuple):
    """A per-channel variable masked with kernels' output channels: its
    last axis is `segments`, each `(kernel index or -1, size)`, masked
    with that kernel's output channels (`-1`: kept)."""

    variable: keras.Variable
    segments: tuple[tuple[int, int], ...]


# eq=False: the fields hold variables, compared by identity.
@dataclasses.dataclass(frozen=True, eq=False)
class PruningPlan:
    """Which kernels are masked, and what is masked together with them.

    Attributes:
        options: the `PruningOptions`.
        layers: the target layers, each once.
        kernels: the target kernels, in the order of
            `model.trainable_variables`.
        factors: per kernel, the scale of the schedule's sparsity (from
            `layer_sparsity`), or None (all 1).
        groups: the `ChannelGroup`s of `structure="filter"` by channel
            group, or None (every kernel on its own).
        followers: the `Follower`s.
        unit_groups: the `UnitGroup`s of `structure="transformer"` (its
            `kernels` are then every weight of a pruned unit), or `()`.
    """

    options: PruningOptions
    layers: tuple
    kernels: tuple
    factors: tuple[float, ...] | None = None
    groups: tuple[ChannelGroup, ...] | None = None
    followers: tuple[Follower, ...] = ()
    unit_groups: tuple[UnitGroup, ...] = ()

    def masks_like(self, other: "PruningPlan") -> bool:
        """Whether `other` computes the same masks of the same variables."""

        def followers(plan):
            return [(id(f.variable), f.segments) for f in plan.followers]

        return (
            [id(k) for k in self.kernels] == [id(k) for k in other.kernels]
            and self.options == other.options
            and self.factors == other.factors
            and self.groups == other.groups
            and self.unit_groups == other.unit_groups
            and followers(self) == followers(other)
        )


def build_plan(
    model: keras.Model,
    options: PruningOptions,
    targets: Callable | Sequence[str] | None = None,
    layer_sparsity: dict[str, float] | None = None,
    group_channels: bool | None = None,
) -> PruningPlan:
    """The `PruningPlan` of `model` (arguments as in `MagnitudePruning`).

    Raises:
        ValueError: nothing to prune, a `layer_sparsity` key that names
            no target (layer name, layer path or kernel `variable.path`),
            or `group_channels=True` on a graph that cannot be read.
    """
    if options.structure == "transformer":
        # Units span several weights and axes: read from the layout that
        # `shrink` removes them with, not from the target walker.
        kernels, unit_groups = transformer_groups(
            model, options.transformer_axes
        )
        return PruningPlan(
            options=options,
            layers=(),
            kernels=kernels,
            unit_groups=unit_groups,
        )
    found = find_target_weights(model, targets)
    if not found:
        raise ValueError(
            "The model has no weights to prune: no trainable Dense, "
            "EinsumDense or Conv kernel, nor a layer with "
            "`get_prunable_weights()`, matches `targets`. "
            f"Received: targets={targets!r}"
        )
    layers = []
    for layer, _ in found:
        if all(layer is not x for x in layers):
            layers.append(layer)
    factors = _layer_factors(options, found, layers, layer_sparsity, model)
    groups, followers = None, ()
    if options.structure == "filter":
        groups, followers = _filter_plan(model, found, group_channels)
    return PruningPlan(
        options=options,
        layers=tuple(layers),
        kernels=tuple(k for _, k in found),
        factors=factors,
        groups=groups,
        followers=tuple(followers),
    )


def _layer_factors(options, found, layers, layer_sparsity, model):
    """Per-kernel scale of the schedule's sparsity (None: all 1).

    A kernel takes the value of its `variable.path`, else of its layer's
    path, else of its layer's name (a name is shared by the layers of
    every block of a keras-hub model; the paths are not). A key may start
    with the name of the model or of a model nested in it."""
    if layer_sparsity is None:
        return None
    keys = [(k.path, layer_path(x), x.name) for x, k in found]
    known = {key for k in keys for key in k}
    owners = model_names(model)
    resolved = {resolve_key(k, known, owners): k for k in layer_sparsity}
    layer_sparsity = {k: layer_sparsity[v] for k, v in resolved.items()}
    unknown = sorted(v for k, v in resolved.items() if k not in known)
    if unknown:
        names = list(dict.fromkeys(x.name for x in layers))
        paths = [k.path for _, k in found]
        raise ValueError(
            f"`layer_sparsity` names layers that are not pruning "
            f"targets of the model: {unknown}. Keys are layer names, layer "
            f"paths or kernel paths (`variable.path`). Valid names: "
            f"{_few(names)}; kernel paths: {_few(paths)}"
        )
    peak = float(options.schedule.peak_sparsity())
    factors = []
    for kernel_keys in keys:
        key = next((k for k in kernel_keys if k in layer_sparsity), None)
        target = peak if key is None else layer_sparsity[key]
        factors.append(target / peak)
    return tuple(factors)


def _few(items, n=6):
    """The first `n` of `items` for an error message."""
    if len(items) <= n:
        return items
    return f"{items[:n]} and {len(items) - n} more"


def _filter_plan(model, found, group_channels):
    """`(groups or None, followers)` for `structure="filter"`."""
    bn = bn_followers(model, found)
    if group_channels is False:
        return None, bn
    kernels = [k for _, k in found]
    try:
        analysis = Analysis(model)
    except graph.UnreadableGraphError as e:
        if group_channels:
            raise ValueError(
                "`group_channels=True` needs a Sequential or functional "
                "model whose channel graph `shrink` can read; pass "
                "`group_channels=False` to prune filters layer by layer. "
                f"Reading {model.name!r} failed: {e}"
            ) from e
        warnings.warn(
            f"MagnitudePruning: the channel graph of model {model.name!r} "
            f"cannot be read ({e}), so filters are pruned layer by layer, "
            "not by channel group. Pass `group_channels=False` to choose "
            "this and silence the warning.",
            stacklevel=2,
        )
        return None, bn
    groups, followers = channel_groups(analysis, kernels)
    if not groups:
        return None, bn
    grouped = {i for group in groups for i in group.masked}
    planned = {id(f.variable) for f in followers}
    for follower in bn:
        ((i, _),) = follower.segments
        if i not in grouped and id(follower.variable) not in planned:
            followers.append(follower)
    return groups, followers


def channel_groups(analysis: Analysis, kernels: Sequence) -> tuple:
    """`(groups, followers)` of filter pruning by channel group: a tuple of
    `ChannelGroup` and a list of `Follower` (see their docstrings)."""
    index = {id(k): i for i, k in enumerate(kernels)}
    groups, rep = [], {}
    for group in analysis.unit_groups:
        if group.node is not None:  # attention heads: not filter units
            continue
        scored, masked = [], []
        for node, offset in group.members:
            if node.kind in ("producer", "attention"):
                kernel = units.out_kernel(node.layer)[0]
                if id(kernel) in index and offset == 0:
                    if tuple(kernel.shape)[-1] == group.size:
                        scored.append(index[id(kernel)])
            elif node.kind == "merge" and len(node.out_layout) == 1:
                for kernel in units.laurel_up_kernels(node.layer):
                    if id(kernel) in index:
                        masked.append(index[id(kernel)])
        masked = scored + [i for i in masked if i not in scored]
        if not masked:
            continue
        rep[(id(group.analysis), group.gid)] = masked[0]
        groups.append(ChannelGroup(tuple(scored or masked), tuple(masked)))
    seen = [i for group in groups for i in group.masked]
    if len(seen) != len(set(seen)):
        raise ValueError("A target kernel belongs to two channel groups.")
    return tuple(groups), _group_followers(analysis, index, rep)


def _analyses(analysis):
    yield analysis
    for _, _, child in analysis.children:
        yield from _analyses(child)


def _trainable(variable):
    return variable is not None and getattr(variable, "trainable", False)


def _group_followers(analysis, index, rep):
    """The `Follower`s of every node's per-channel variables."""
    out, done = [], set()
    for a in _analyses(analysis):
        for node in a.nodes:
            segments = tuple(
                (rep.get((id(a), a.groups.find(gid)), -1), size)
                for gid, size in node.out_layout
            )
            if all(i < 0 for i, _ in segments):
                continue
            layer, variables = node.layer, []
            if node.kind in ("producer", "attention"):
                kernel, bias = units.out_kernel(layer)
                if id(kernel) in index:  # a target: its bias goes too
                    variables.append(bias)
            elif isinstance(layer, L.BatchNormalization):
                variables += [getattr(layer, "gamma", None)]
                variables += [getattr(layer, "beta", None)]
            elif node.kind == "elementwise":
                variables.append(getattr(layer, "bias", None))
            elif node.kind == "merge":
                variables += units.laurel_up_kernels(layer)
            total = sum(size for _, size in segments)
            for v in variables:
                if not _trainable(v) or id(v) in index or id(v) in done:
                    continue
                if tuple(v.shape)[-1] != total:
                    continue
                done.add(id(v))
                out.append(Follower(v, segments))
    return out


def bn_followers(model: keras.Model, found: Sequence) -> list[Follower]:
    """The gamma and beta of each BatchNormalization (channels last) whose
    only input is the output of a top-level target layer of a Sequential
    or functional model, as `Follower`s of that layer's kernel.

    `found` is `[(layer, kernel)]`. A model whose graph cannot be read
    (subclassed, shared layers) has none: its kernels are pruned without
    BatchNormalization followers (documented in `MagnitudePruning`).
    """
    try:
        _, nodes, _, _, _ = graph.read_graph(model)
    except graph.UnreadableGraphError:
        return []
    index = {}
    for i, (layer, kernel) in enumerate(found):
        if getattr(layer, "kernel", None) is kernel:
            index.setdefault(layer.name, (layer, i))
    top_level = {id(layer) for layer in model.layers}
    out = []
    for node in nodes:
        bn = node.layer
        if not isinstance(bn, L.BatchNormalization):
            continue
        if len(node.inputs) != 1 or node.inputs[0][0] not in index:
            continue
        layer, i = index[node.inputs[0][0]]
        if id(layer) not in top_level:
            continue
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            continue
        if bn.axis not in (-1, len(layer.output.shape) - 1):
            continue
        n_out = tuple(found[i][1].shape)[-1]
        for variable in (getattr(bn, "gamma", None), getattr(bn, "beta", None)):
            if variable is not None and tuple(variable.shape) == (n_out,):
                out.append(Follower(variable, ((i, n_out),)))
    return out
