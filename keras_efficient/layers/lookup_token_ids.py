"""How a `SparseLookupTable` reads token ids: their rows and shape check.

A `lookup="token_id"` table reads one row per token id. `token_id_rows`
maps ids to rows (`token_mapping`: modulo, a multiplicative hash, or the id
itself) and `check_token_ids_shape` checks the ids against the inputs at
build and call time (static shapes only: no host sync).
"""

from typing import Any

from keras import ops

from keras_efficient._data_checks import check_ids_in_range
from keras_efficient._data_checks import check_integer_ids

TOKEN_MAPPINGS = ("modulo", "hash", "direct")

# Odd multiplier of the multiplicative token-id hash (Knuth's constant, as a
# signed int32). Products wrap in int32, which only changes which entry a
# token lands in, the same way on every backend.
_TOKEN_HASH_MULTIPLIER = -1640531535


def check_token_ids_shape(
    lookup: str, input_shape: tuple, token_ids_shape: tuple | None
) -> None:
    """`token_ids` go with `lookup="token_id"`, shaped as `inputs`
    without its last axis."""
    if token_ids_shape is None:
        return
    if lookup != "token_id":
        raise ValueError(
            "`token_ids` are only used with `lookup='token_id'`; this "
            f"table has lookup={lookup!r}. Received: token_ids of "
            f"shape {tuple(token_ids_shape)}"
        )
    expected = tuple(input_shape[:-1])
    token_ids_shape = tuple(token_ids_shape)
    if len(token_ids_shape) != len(expected) or any(
        a is not None and b is not None and a != b
        for a, b in zip(token_ids_shape, expected)
    ):
        raise ValueError(
            "`token_ids` must have the shape of `inputs` without "
            f"its last axis, {expected}. Received: "
            f"token_ids.shape={token_ids_shape}"
        )


def token_id_rows(token_ids: Any, num_entries: int, token_mapping: str) -> Any:
    """The table row of each token id under `token_mapping`, `(..., 1)`.

    `"modulo"`: `id mod num_entries`; `"hash"`: a multiplicative hash
    first, so neighbouring ids spread over the table; `"direct"`: the id
    itself (ids outside `[0, num_entries)` raise). Negative ids raise under
    every mapping, in eager calls and compiled steps.
    """
    if token_ids is None:
        raise ValueError(
            "`lookup='token_id'` needs the token ids as the second "
            "input: `layer(inputs, token_ids)`. Received: "
            "token_ids=None"
        )
    check_integer_ids(token_ids, "token_ids")
    ids = ops.cast(token_ids, "int32")
    n = num_entries
    # A negative id (a padding value) is no token: under modulo or hash it
    # would read and train a real row. `"direct"` ids must also index the
    # table (XLA would clip them to the last row). Checked in eager calls
    # and compiled steps alike.
    ids = check_ids_in_range(
        ids, n if token_mapping == "direct" else None, "token_ids"
    )
    if token_mapping == "modulo":
        index = ops.mod(ids, n)
    elif token_mapping == "hash":
        mixed = ids * _TOKEN_HASH_MULTIPLIER
        index = ops.mod(mixed, n)
    else:
        # Only where a check cannot run (TensorFlow under XLA).
        index = ops.clip(ids, 0, n - 1)
    return ops.expand_dims(index, -1)
