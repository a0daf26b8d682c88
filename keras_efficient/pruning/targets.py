"""Which kernels get pruned."""

import keras

DEFAULT_TARGET_TYPES = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)

# This package's layers and the projection weights of theirs that are pruned
# (by class name, so the pruning module does not import the layers).
# AltUp's own coefficients are K x K scalars and are left dense; the layer
# it wraps is searched like any nested layer.
PACKAGE_TARGET_WEIGHTS = {
    "LaurelResidual": (
        "lr_kernel_a",
        "lr_kernel_b",
        "pa_kernels_a",
        "pa_kernels_b",
    ),
    "MixtureOfExperts": ("kernel_in", "kernel_out"),
    "AltUpReadout": ("kernel",),
}


def _is_package_layer(layer):
    return (
        type(layer).__module__.startswith("keras_efficient.")
        and type(layer).__name__ in PACKAGE_TARGET_WEIGHTS
    )


def prunable_weights(layer):
    """`(attribute, variable)` pairs of a layer's prunable kernels.

    Dense, EinsumDense, Conv and other layers with a `kernel`: the kernel.
    This package's layers: their projections (`LaurelResidual`'s low-rank
    and previous-activation kernels, `MixtureOfExperts`' expert kernels
    `kernel_in` / `kernel_out`, `AltUpReadout`'s kernel). List attributes
    (e.g. `pa_kernels_a`) give one entry per element, named `attr/i`.
    """
    if _is_package_layer(layer):
        names = PACKAGE_TARGET_WEIGHTS[type(layer).__name__]
    else:
        names = ("kernel",)
    out = []
    for name in names:
        value = getattr(layer, name, None)
        if isinstance(value, (list, tuple)):
            out.extend(
                (f"{name}/{i}", v)
                for i, v in enumerate(value)
                if isinstance(v, keras.Variable)
            )
        elif isinstance(value, keras.Variable):
            out.append((name, value))
    return out


def _candidate_layers(model):
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if prunable_weights(layer)
    ]


def find_target_layers(model, targets=None):
    """Layers whose kernels are pruned.

    `targets` is None (Dense, EinsumDense and Conv1D/2D/3D layers, also inside
    nested and subclassed layers, and this package's layers with projections:
    `LaurelResidual`, `MixtureOfExperts`, `AltUpReadout`), a callable
    `layer -> bool`, or a list of layer names.
    """
    layers = _candidate_layers(model)
    if targets is None:
        chosen = [
            x
            for x in layers
            if isinstance(x, DEFAULT_TARGET_TYPES) or _is_package_layer(x)
        ]
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


def find_target_weights(model, targets=None):
    """`(layer, key, variable)` for every pruned kernel of `model`.

    `key` is the layer name for a layer's `kernel` and `"layer/attr"` for
    other projections (e.g. `"laurel/lr_kernel_a"`); `targets` as in
    `find_target_layers`.
    """
    out, seen = [], set()
    for layer in find_target_layers(model, targets):
        for attr, variable in prunable_weights(layer):
            if id(variable) in seen:
                continue
            seen.add(id(variable))
            key = layer.name if attr == "kernel" else f"{layer.name}/{attr}"
            out.append((layer, key, variable))
    return out
