"""Attaching a `PruningState` to an optimizer, and the BatchNormalization
layers that follow filter-pruned kernels (for `MagnitudePruning`)."""

from collections.abc import Sequence

import keras

from keras_efficient.pruning.groups import GroupPruningState
from keras_efficient.pruning.state import MaskConstraint
from keras_efficient.pruning.state import PruningState


def attach_state(
    optimizer: keras.optimizers.Optimizer,
    kernels: list,
    options: dict,
    followers: Sequence[tuple] = (),
) -> tuple[PruningState, bool]:
    """The `PruningState` of `kernels` under `optimizer`, and whether the
    train function must be rebuilt (new variables or new options).

    Reuses the state (and its variables) already attached for the same
    optimizer and kernels; otherwise builds one, carrying over the masks
    and original constraints of a state of another optimizer.
    """
    olds = [k.constraint for k in kernels]
    olds = [c for c in olds if isinstance(c, MaskConstraint)]
    state = olds[0].state if olds else None
    if (
        state is not None
        and state.optimizer is optimizer
        and len(olds) == len(kernels)
        and [id(k) for k in state.kernels] == [id(k) for k in kernels]
    ):
        changed = state.options != options
        state.options = dict(options)
        old = [(id(f), i) for f, i in state.followers]
        if old != [(id(f), i) for f, i in followers]:
            state.set_followers(followers)
            changed = True
        return state, changed
    previous = {id(k): k.constraint for k in kernels}
    previous = {
        i: c for i, c in previous.items() if isinstance(c, MaskConstraint)
    }
    for old in {id(c.state): c.state for c in olds}.values():
        old.detach()
    state = GroupPruningState(optimizer, kernels, options, previous, followers)
    return state, True


def bn_followers(model: keras.Model, found: list[tuple]) -> list[tuple]:
    """`[(variable, kernel index)]`: gamma and beta of each
    BatchNormalization (channels last) whose only input is the output of a
    top-level target layer of a Sequential or functional model.

    Read through `graph.read_graph`; a model it cannot read (subclassed,
    shared layers) gets none.
    """
    from keras_efficient.pruning import graph

    try:
        _, nodes, _, _, _ = graph.read_graph(model)
    except Exception:
        return []
    index = {}
    for i, (layer, kernel) in enumerate(found):
        if getattr(layer, "kernel", None) is kernel:
            index.setdefault(layer.name, (layer, i))
    out = []
    for node in nodes:
        bn = node.layer
        if not isinstance(bn, keras.layers.BatchNormalization):
            continue
        if len(node.inputs) != 1 or node.inputs[0][0] not in index:
            continue
        layer, i = index[node.inputs[0][0]]
        try:
            if model.get_layer(layer.name) is not layer:
                continue
        except ValueError:
            continue
        n_out = tuple(found[i][1].shape)[-1]
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            continue
        try:
            rank = len(layer.output.shape)
        except (AttributeError, ValueError):
            continue
        if bn.axis not in (-1, rank - 1):
            continue
        for variable in (getattr(bn, "gamma", None), getattr(bn, "beta", None)):
            if variable is not None and tuple(variable.shape) == (n_out,):
                out.append((variable, i))
    return out
