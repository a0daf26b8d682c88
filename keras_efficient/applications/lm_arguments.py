"""The checks of `TransformerLM`: its constructor arguments, its inputs.

`check_lm_arguments` checks and normalises the constructor arguments,
`sublayer_options` turns `lookup` / `moe` (and the `moe_*` flags) into the
arguments of their layers, and `check_token_ids` refuses what the
functional model would otherwise cast or fail on deep inside the graph.
"""

from typing import Any

import keras
import numpy as np

from keras_efficient._validation import check_choice
from keras_efficient._validation import check_number
from keras_efficient._validation import check_positive_int
from keras_efficient._validation import fail
from keras_efficient.layers.laurel import normalize_variant

POSITIONS = ("rotary", "learned")
# `moe_<flag>` constructor flags forwarded to every block's experts.
MOE_FLAGS = (
    "top_k",
    "load_balance_weight",
    "z_loss_weight",
    "num_shared_experts",
    "capacity_factor",
)
_POSITIVE_INTS = (
    "vocabulary_size",
    "sequence_length",
    "hidden_dim",
    "num_layers",
    "num_heads",
    "altup",
    "sequence_altup",
    "laurel_rank",
)


def check_lm_arguments(arguments: dict) -> dict:
    """The constructor arguments, checked and normalised (a new dict)."""
    a = dict(arguments)
    for name in _POSITIVE_INTS:
        a[name] = check_positive_int(name, a[name])
    if a["intermediate_dim"] is None:
        a["intermediate_dim"] = 4 * a["hidden_dim"]
    check_positive_int("intermediate_dim", a["intermediate_dim"])
    check_choice("positions", a["positions"], POSITIONS)
    a["recycled"] = bool(a["recycled"])
    if a["recycled"] and a["altup"] == 1:
        fail(
            "recycled",
            "False unless `altup` >= 2 (Recycled-AltUp replicates the "
            "embedding into the AltUp blocks)",
            a["recycled"],
        )
    if a["laurel"] is not None:
        a["laurel"] = normalize_variant(a["laurel"], name="laurel")
    a["epsilon"] = check_number("epsilon", a["epsilon"], min_value=0)
    return a


def sublayer_options(arguments: dict) -> tuple[dict | None, dict | None]:
    """`(lookup options, MoE options)`: each `None` when off."""
    lookup = _options("lookup", arguments["lookup"], "num_entries")
    moe = _options("moe", arguments["moe"], "num_experts")
    for flag in MOE_FLAGS:
        value = arguments[f"moe_{flag}"]
        if value is not None and moe is not None:
            moe[flag] = value
    if lookup is not None and arguments["altup"] > 1:
        raise ValueError(
            "`lookup` is not available with `altup` > 1 (the table is "
            "added to a width-d embedding). Received: "
            f"lookup={arguments['lookup']!r}, altup={arguments['altup']}"
        )
    return lookup, moe


def check_token_ids(token_ids: Any, sequence_length: int) -> None:
    """Integer ids no longer than `sequence_length` (when static).

    The functional model would cast float ids to int32 silently, and a
    too-long input would fail deep inside the graph (learned positions)
    or run past the window the model was built for (rotary).
    """
    if isinstance(token_ids, dict) and len(token_ids) == 1:
        token_ids = next(iter(token_ids.values()))
    elif isinstance(token_ids, (list, tuple)) and len(token_ids) == 1:
        token_ids = token_ids[0]
    dtype = getattr(token_ids, "dtype", None)
    if dtype is None:
        dtype = np.asarray(token_ids).dtype
    dtype = keras.backend.standardize_dtype(dtype)
    if "int" not in dtype:
        raise TypeError(
            "`inputs` must be integer token ids (int32 or int64); float "
            f"ids are never cast. Received: inputs.dtype={dtype}"
        )
    length = _static_length(token_ids)
    if length is not None and length > sequence_length:
        raise ValueError(
            "`inputs` must have at most `sequence_length` tokens. "
            f"Received: inputs of length {length} with "
            f"sequence_length={sequence_length}"
        )


def _options(name, value, count_key):
    """`None`, an int (the count) or a dict of layer arguments -> dict."""
    if value is None:
        return None
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        check_positive_int(name, value)
        return {count_key: int(value)}
    raise ValueError(
        f"`{name}` must be None, a positive integer ({count_key}) or a dict "
        f"of layer arguments. Received: {name}={value!r}"
    )


def _static_length(token_ids):
    """The static length (axis 1) of `(batch, T)` ids, or None if unknown."""
    shape = getattr(token_ids, "shape", None)
    if shape is None:
        shape = np.shape(token_ids)
    try:
        shape = tuple(shape)
    except ValueError:  # a TensorFlow tensor of unknown rank
        return None
    if len(shape) < 2 or shape[1] is None:
        return None
    return int(shape[1])
