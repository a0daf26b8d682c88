"""The input end of `TransformerLM`: token, position and lookup embedding.

`embed_tokens` builds, on the functional graph of a `TransformerLM`, the
token embedding (an `AltUpEmbedding` with AltUp on), the learned position
embedding and the optional sparse lookup table read by token or bigram
ids.
"""

from typing import Any

import keras
from keras import ops

from keras_efficient.applications.blocks import PositionEmbedding
from keras_efficient.layers.altup.ends import AltUpEmbedding
from keras_efficient.layers.lookup import SparseLookupTable


def embed_tokens(lm: Any, token_ids: Any, dtype: Any) -> Any:
    """Token (+ position, + lookup) embedding: `(batch, T[, K], d)`.

    Args:
        lm: the `TransformerLM` being built (its checked arguments).
        token_ids: the symbolic `(batch, T)` input.
        dtype: the dtype policy of the layers (`None`: the global one).
    """
    if lm.altup > 1:
        x = AltUpEmbedding(
            lm.vocabulary_size,
            lm.hidden_dim,
            num_blocks=lm.altup,
            recycled=lm.recycled,
            dtype=dtype,
            name="token_embedding",
        )(token_ids)
    else:
        x = keras.layers.Embedding(
            lm.vocabulary_size,
            lm.hidden_dim,
            dtype=dtype,
            name="token_embedding",
        )(token_ids)
    if lm.positions == "learned":
        x = PositionEmbedding(
            lm.sequence_length, dtype=dtype, name="position_embedding"
        )(x)
    if lm._lookup_options is not None:
        x = _add_lookup(lm, x, token_ids, dtype)
    return x


def _add_lookup(lm, x, token_ids, dtype):
    options = dict(lm._lookup_options)
    ngram = options.pop("ngram", 2)
    if ngram not in (1, 2):
        raise ValueError(
            f"`lookup['ngram']` must be 1 or 2. Received: ngram={ngram!r}"
        )
    options.setdefault("lookup", "token_id")
    options.setdefault("token_mapping", "hash")
    table = SparseLookupTable(**options, dtype=dtype, name="lookup_table")
    if options["lookup"] != "token_id":
        return table(x)
    ids = token_ids
    if ngram == 2:
        previous = ops.pad(token_ids[:, :-1], [[0, 0], [1, 0]])
        ids = previous * lm.vocabulary_size + token_ids
    return table(x, ids)
