"""The checks of `TransformerLM`: its constructor arguments, its inputs.

`check_recycled` and `check_head_dim` check the arguments that depend on
another, `per_layer` reads a width given once or per block,
`lookup_options` and `moe_options` turn `lookup` / `moe` (and the `moe_*`
flags) into the arguments of their layers, and `check_token_ids` refuses
what the functional model would otherwise cast or fail on deep inside the
graph.
"""

from typing import Any

import numpy as np

from keras_efficient._data_checks import check_ids_in_range
from keras_efficient._data_checks import check_integer_ids
from keras_efficient._validation import check_positive_int
from keras_efficient._validation import fail

POSITIONS = ("rotary", "learned")


def check_recycled(recycled: bool, altup: int) -> bool:
    """Recycled-AltUp needs AltUp blocks to replicate the embedding into."""
    recycled = bool(recycled)
    if recycled and altup == 1:
        fail(
            "recycled",
            "False unless `altup` >= 2 (Recycled-AltUp replicates the "
            "embedding into the AltUp blocks)",
            recycled,
        )
    return recycled


def per_layer(name: str, value: Any, num_layers: int) -> tuple[int, ...]:
    """A width given once for every block or as a list of one per block."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_layers:
            fail(
                name,
                f"a positive int or a list of {num_layers} positive ints "
                "(one per block)",
                value,
            )
        return tuple(check_positive_int(name, v) for v in value)
    return (check_positive_int(name, value),) * num_layers


def as_given(value: Any, widths: tuple[int, ...]) -> int | list[int]:
    """The attribute (and config entry) of a width: an int or a list."""
    return list(widths) if isinstance(value, (list, tuple)) else widths[0]


def check_head_dim(head_dim: int | None, num_heads: Any) -> int | None:
    """`head_dim`, needed when the blocks have different head counts."""
    if head_dim is not None:
        return check_positive_int("head_dim", head_dim)
    if isinstance(num_heads, (list, tuple)) and len(set(num_heads)) > 1:
        fail(
            "head_dim",
            "a positive int when `num_heads` differs per block (the head "
            "size is then not `hidden_dim / num_heads`)",
            head_dim,
        )
    return None


def lookup_options(lookup: int | dict | None, altup: int) -> dict | None:
    """`SparseLookupTable` arguments from `lookup` (`None`: off)."""
    options = _options("lookup", lookup, "num_entries")
    if options is not None and altup > 1:
        raise ValueError(
            "`lookup` is not available with `altup` > 1 (the table is "
            "added to a width-d embedding). Received: "
            f"lookup={lookup!r}, altup={altup}"
        )
    return options


def moe_options(
    moe: int | dict | None,
    top_k: int | None,
    load_balance_weight: float | None,
    z_loss_weight: float | None,
    num_shared_experts: int | None,
    capacity_factor: float | None,
) -> dict | None:
    """`MixtureOfExperts` arguments from `moe` (`None`: off) and the
    `moe_*` flags, which override the dict's values when not `None`."""
    options = _options("moe", moe, "num_experts")
    if options is None:
        return None
    flags = {
        "top_k": top_k,
        "load_balance_weight": load_balance_weight,
        "z_loss_weight": z_loss_weight,
        "num_shared_experts": num_shared_experts,
        "capacity_factor": capacity_factor,
    }
    options.update({k: v for k, v in flags.items() if v is not None})
    return options


def check_token_ids(
    token_ids: Any, sequence_length: int, vocabulary_size: int | None = None
) -> Any:
    """Integer ids in `[0, vocabulary_size)`, no longer than
    `sequence_length` (when static); returns the ids (unwrapped from a
    one-entry dict or list; in a TensorFlow graph read after the check).

    The functional model would cast float ids to int32 silently, a
    too-long input would fail deep inside the graph (learned positions)
    or run past the window the model was built for (rotary), and an id
    outside the vocabulary reads a NaN (JAX) or clipped embedding row. The
    range is checked in eager calls and inside compiled steps
    (`_data_checks.raise_if`).
    """
    if isinstance(token_ids, dict) and len(token_ids) == 1:
        token_ids = next(iter(token_ids.values()))
    elif isinstance(token_ids, (list, tuple)) and len(token_ids) == 1:
        token_ids = token_ids[0]
    check_integer_ids(token_ids, "inputs")
    length = _static_length(token_ids)
    if length is not None and length > sequence_length:
        raise ValueError(
            "`inputs` must have at most `sequence_length` tokens. "
            f"Received: inputs of length {length} with "
            f"sequence_length={sequence_length}"
        )
    if vocabulary_size is not None:
        token_ids = check_ids_in_range(token_ids, vocabulary_size, "inputs")
    return token_ids


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
