"""Which kernels get pruned: types and the `get_prunable_weights` protocol.

A layer joins pruning by defining `get_prunable_weights()`, returning the
variables that may be pruned (the name of tfmot's `PrunableLayer` method).
Keras's own `Dense`, `EinsumDense` and `Conv1D/2D/3D` layers are found by
type (their `kernel`). Layers are walked with public API only: a model's
`layers`, then, recursively, every public attribute of a layer that is a
`keras.layers.Layer` (or a list, tuple or dict of them).
"""

from collections.abc import Sequence

import keras

DEFAULT_TARGET_TYPES = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)


def prunable_weights(layer: keras.Layer) -> list:
    """The prunable variables of one layer (its own, not its sublayers').

    `layer.get_prunable_weights()` when the layer defines it; the `kernel`
    of Dense, EinsumDense and Conv1D/2D/3D layers; nothing otherwise.
    """
    method = getattr(layer, "get_prunable_weights", None)
    if callable(method):
        found = list(method())
    elif isinstance(layer, DEFAULT_TARGET_TYPES):
        found = [getattr(layer, "kernel", None)]
    else:
        found = []
    return [w for w in found if isinstance(w, keras.Variable)]


def _attributes(layer):
    items = list(vars(layer).items())
    # On PyTorch, layers are `torch.nn.Module`s that keep their sublayers
    # out of `__dict__`; `named_children` is the public way to them.
    named_children = getattr(layer, "named_children", None)
    if callable(named_children):
        items += list(named_children())
    return items


def _children(layer):
    if isinstance(layer, keras.Model):
        yield from layer.layers
    for name, value in _attributes(layer):
        if name.startswith("_"):
            continue
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, (list, tuple)):
            yield from (x for x in value if isinstance(x, keras.layers.Layer))
        elif isinstance(value, keras.layers.Layer):
            yield value


def walk_layers(model: keras.Model) -> list:
    """Every layer inside `model` (not `model` itself), depth first, once."""
    seen, out = {id(model)}, []

    def visit(layer):
        for child in _children(layer):
            if id(child) not in seen:
                seen.add(id(child))
                out.append(child)
                visit(child)

    visit(model)
    return out


def find_target_layers(
    model: keras.Model, targets: Sequence | None = None
) -> list:
    """Layers whose prunable weights are pruned.

    `targets` is None (every layer with prunable weights: Dense,
    EinsumDense, Conv1D/2D/3D and layers with `get_prunable_weights`), a
    callable `layer -> bool`, or a list of layer names.
    """
    layers = [x for x in walk_layers(model) if prunable_weights(x)]
    if targets is None:
        return layers
    if callable(targets):
        return [x for x in layers if targets(x)]
    if isinstance(targets, (list, tuple, set)):
        names = {x.name for x in layers}
        missing = [t for t in targets if t not in names]
        if missing:
            raise ValueError(
                f"`targets` names layers with no prunable weights: {missing}."
                f" Layers with prunable weights: {sorted(names)}"
            )
        return [x for x in layers if x.name in set(targets)]
    raise ValueError(
        "`targets` must be None, a callable or a list of layer names. "
        f"Received: targets={targets!r}"
    )


def find_target_weights(
    model: keras.Model,
    targets: Sequence | None = None,
    trainable_only: bool = True,
) -> list:
    """`(layer, variable)` for every pruned variable of `model`.

    With `trainable_only` only trainable variables of the model count (the
    optimizer applies the masks), in the order of
    `model.trainable_variables`; `targets` as in `find_target_layers`. Key
    them by `variable.path`.
    """
    pool = model.trainable_variables if trainable_only else model.weights
    order = {id(w): i for i, w in enumerate(pool)}
    out, seen = [], set()
    for layer in find_target_layers(model, targets):
        for variable in prunable_weights(layer):
            if id(variable) in order and id(variable) not in seen:
                seen.add(id(variable))
                out.append((layer, variable))
    return sorted(out, key=lambda lv: order[id(lv[1])])
