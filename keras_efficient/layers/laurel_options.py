"""The LAuReL options, defined once.

`LaurelResidual`, `LaurelBlock`, `LaurelStack` and the applications take the
LAuReL options (`variant`, `rank`, ...) through `laurel_options`, and read a
variant string through `normalize_variant`, so every spelling a layer
accepts an application accepts too.
"""

import itertools
from typing import Any

import keras

from keras_efficient._validation import check_bool
from keras_efficient._validation import check_choice
from keras_efficient._validation import check_number
from keras_efficient._validation import check_positive_int
from keras_efficient._validation import fail

VARIANTS = ("rw", "lr", "pa", "rw+lr", "rw+pa", "rw+lr+pa", "gemma3n")
NORMALIZATIONS = ("softmax", "sigmoid", "none")
DATA_FORMATS = (None, "channels_last", "channels_first")
_ORDER = ("rw", "lr", "pa")


def normalize_variant(variant: str, name: str = "variant") -> str:
    """The canonical spelling of a LAuReL variant (e.g. `"LR+rw"`).

    Parts are case-insensitive, may be padded with spaces and come in any
    order; the result is one of `VARIANTS`. Layers and applications all
    read variants through this function.

    Example:

    >>> normalize_variant("LR + rw")
    'rw+lr'
    """
    if not isinstance(variant, str):
        fail(name, f"one of {VARIANTS}", variant)
    if variant.strip().lower() == "gemma3n":
        return "gemma3n"
    parts = [p.strip() for p in variant.lower().split("+")]
    canonical = "+".join(p for p in _ORDER if p in parts)
    if len(set(parts)) != len(parts) or not set(parts) <= set(_ORDER):
        canonical = None
    if canonical not in VARIANTS:
        fail(name, f"one of {VARIANTS}", variant)
    return canonical


def variant_spellings(variant: str) -> list[str]:
    """Every ordering of the parts of `variant` (all spellings it accepts,
    up to case and spaces).

    >>> variant_spellings("rw+lr")
    ['rw+lr', 'lr+rw']
    """
    parts = normalize_variant(variant).split("+")
    return ["+".join(p) for p in itertools.permutations(parts)]


def laurel_options(
    variant: str = "rw+lr",
    rank: int = 16,
    num_activations: int = 3,
    normalization: str = "softmax",
    per_dimension: bool = False,
    lr_initializer: str | keras.initializers.Initializer = "glorot_uniform",
    low_rank_history: bool = False,
    data_format: str | None = None,
    epsilon: float = 1e-6,
) -> dict:
    """Checks the LAuReL options and returns them, normalised, as a dict.

    The one definition of the options and their defaults (documented in
    `LaurelResidual`). `rank` is checked only where a variant uses it (the
    check against the input width waits for `build`).

    Example:

    >>> laurel_options("lr+rw", rank=4)["variant"]
    'rw+lr'
    """
    variant = normalize_variant(variant)
    parts = variant.split("+")
    low_rank_history = check_bool("low_rank_history", low_rank_history)
    per_dimension = check_bool("per_dimension", per_dimension)
    if {"lr", "gemma3n"} & set(parts) or ("pa" in parts and low_rank_history):
        rank = check_positive_int("rank", rank)
    num_activations = check_positive_int("num_activations", num_activations)
    if normalization is None:
        normalization = "none"
    check_choice("normalization", normalization, NORMALIZATIONS)
    _check_data_format(data_format)
    return {
        "variant": variant,
        "rank": rank,
        "num_activations": num_activations,
        "normalization": normalization,
        "per_dimension": per_dimension,
        "lr_initializer": keras.initializers.get(lr_initializer),
        "low_rank_history": low_rank_history,
        "data_format": data_format,
        "epsilon": check_number("epsilon", epsilon, min_value=0),
    }


# The option names, in `laurel_options`'s order (the keys it returns).
OPTIONS = (
    "variant",
    "rank",
    "num_activations",
    "normalization",
    "per_dimension",
    "lr_initializer",
    "low_rank_history",
    "data_format",
    "epsilon",
)


def set_options(layer: keras.layers.Layer, options: dict) -> None:
    """Keeps each of `laurel_options`'s results as an attribute of `layer`."""
    for name in OPTIONS:
        setattr(layer, name, options[name])


def options_config(layer: keras.layers.Layer) -> dict:
    """The LAuReL options of `layer` (attributes), for its `get_config`."""
    config = {name: getattr(layer, name) for name in OPTIONS}
    config["lr_initializer"] = keras.initializers.serialize(
        layer.lr_initializer
    )
    return config


def _check_data_format(data_format):
    check_choice("data_format", data_format, DATA_FORMATS)
    if data_format == "channels_first":
        raise ValueError(
            "LAuReL layers project the last axis (channels last). Received: "
            "data_format='channels_first'. Use channels-last tensors "
            "(e.g. transpose the feature maps or build the model with "
            "`keras.config.set_image_data_format('channels_last')`)."
        )


def same_shape(a: tuple, b: tuple) -> bool:
    """Static shapes agree where both are known."""
    if len(a) != len(b):
        return False
    return all(p is None or q is None or p == q for p, q in zip(a, b))


def check_previous(layer: keras.layers.Layer, previous: Any, x: Any) -> list:
    """`previous` (the PA history of a `LaurelResidual` call) as a list,
    checked against `layer`'s variant and `num_activations` and `x`."""
    if previous is None:
        return []
    if not isinstance(previous, (list, tuple)):
        previous = [previous]
    previous = list(previous)
    if not previous:
        return []
    if "pa" not in layer.variant.split("+"):
        raise ValueError(
            f"`previous` is only used by PA variants ('pa', 'rw+pa', "
            f"'rw+lr+pa'); this layer has variant={layer.variant!r}. "
            f"Received {len(previous)} previous tensor(s)."
        )
    limit = layer.num_activations - 1
    if len(previous) > limit:
        raise ValueError(
            f"`previous` may hold at most num_activations - 1 = {limit} "
            f"tensors. Received: {len(previous)} tensors."
        )
    x_shape = tuple(x.shape)
    for j, p in enumerate(previous):
        p_shape = tuple(p.shape)
        if not same_shape(x_shape, p_shape):
            raise ValueError(
                "Every entry of `previous` must have the shape of `x`. "
                f"Received: previous[{j}].shape={p_shape}, "
                f"x.shape={x_shape}"
            )
    return previous
