"""Which kernels get pruned: types and the `get_prunable_weights` protocol.

A layer joins pruning by defining `get_prunable_weights()`, returning the
variables that may be pruned (the name of tfmot's `PrunableLayer` method).
Keras's own `Dense`, `EinsumDense` and `Conv1D/2D/3D` layers are found by
type (their `kernel`). Layers are walked as Keras itself tracks them: a
model's `layers`, then, recursively, every sublayer Keras tracked when it
was assigned to an attribute (public or not, directly or in a list or
dict), which is where keras-hub models and subclassed layers keep theirs.
The walk only reads what Keras tracked; it changes no class.
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


def tracked_sublayers(layer: keras.Layer) -> list:
    """The direct sublayers Keras tracks for `layer`, in tracking order.

    A model's `layers` first (the functional graph's order), then every
    layer Keras's attribute tracker recorded (`Layer._layers`, read
    through `_flatten_layers`, the collection Keras itself walks for
    `layer.weights`), on every backend.
    """
    out = list(layer.layers) if isinstance(layer, keras.Model) else []
    flatten = getattr(layer, "_flatten_layers", None)
    if callable(flatten):
        out += flatten(include_self=False, recursive=False)
    return out


def walk_layers(model: keras.Model) -> list:
    """Every layer inside `model` (not `model` itself), depth first, once."""
    seen, out = {id(model)}, []

    def visit(layer):
        for child in tracked_sublayers(layer):
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
    callable `layer -> bool`, or a list of layer names, layer paths
    (`layer.path`, e.g. `"transformer_layer_0/self_attention/query"`: a
    name is shared by the layers of every block of a keras-hub model, a
    path is not) or kernel paths (`variable.path`, as reports key them).
    """
    layers = [x for x in walk_layers(model) if prunable_weights(x)]
    if targets is None:
        return layers
    if callable(targets):
        return [x for x in layers if targets(x)]
    if isinstance(targets, (list, tuple, set)):
        known = {key for x in layers for key in _keys(x)}
        owners = model_names(model)
        targets = [resolve_key(t, known, owners) for t in targets]
        missing = [t for t in targets if t not in known]
        if missing:
            raise ValueError(
                f"`targets` names layers with no prunable weights: {missing}."
                " Layers with prunable weights (names and paths): "
                f"{sorted(known)}"
            )
        chosen = set(targets)
        return [x for x in layers if chosen & set(_keys(x))]
    raise ValueError(
        "`targets` must be None, a callable or a list of layer names or "
        f"paths. Received: targets={targets!r}"
    )


def layer_path(layer: keras.Layer) -> str:
    """`layer.path` (its name where Keras gives it no path)."""
    return getattr(layer, "path", None) or layer.name


def model_names(model: keras.Model) -> set:
    """The names of `model` and of every model nested in it: the prefixes
    a key may carry before a path (`"gpt2_backbone/transformer_layer_0/
    ..."` for the path `"transformer_layer_0/..."`)."""
    nested = (x for x in walk_layers(model) if isinstance(x, keras.Model))
    return {model.name} | {x.name for x in nested}


def resolve_key(key: str, known: set, owners: set) -> str:
    """`key`, less leading model names, as far as it becomes a `known`
    key (else `key` itself)."""
    if not isinstance(key, str):
        return key  # refused by the caller, naming it
    resolved = key
    while resolved not in known:
        head, _, rest = resolved.partition("/")
        if not rest or head not in owners:
            return key
        resolved = rest
    return resolved


def _keys(layer):
    """What a `targets` entry may call `layer`: its name, its path, the
    `variable.path` of one of its prunable weights."""
    return (layer.name, layer_path(layer)) + tuple(
        w.path for w in prunable_weights(layer)
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
