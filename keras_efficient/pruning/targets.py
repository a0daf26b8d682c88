"""Which kernels get pruned."""

import keras

DEFAULT_TARGET_TYPES = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)


def find_target_layers(model, targets=None):
    """Layers whose `kernel` is pruned.

    `targets` is None (Dense, EinsumDense and Conv1D/2D/3D layers, also inside
    nested and subclassed layers), a callable `layer -> bool`, or a list of
    layer names.
    """
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if getattr(layer, "kernel", None) is not None
    ]
    if targets is None:
        chosen = [x for x in layers if isinstance(x, DEFAULT_TARGET_TYPES)]
    elif callable(targets):
        chosen = [x for x in layers if targets(x)]
    elif isinstance(targets, (list, tuple, set)):
        names = {x.name for x in layers}
        missing = [t for t in targets if t not in names]
        if missing:
            raise ValueError(
                f"`targets` names layers with no kernel: {missing}. Layers "
                f"with a kernel: {sorted(names)}"
            )
        chosen = [x for x in layers if x.name in set(targets)]
    else:
        raise ValueError(
            "`targets` must be None, a callable or a list of layer names. "
            f"Received: targets={targets!r}"
        )
    seen, out = set(), []
    for layer in chosen:
        if id(layer) not in seen:
            seen.add(id(layer))
            out.append(layer)
    return out
