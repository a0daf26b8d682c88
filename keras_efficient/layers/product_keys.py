"""Product-key routing over a large table (Lample et al., NeurIPS 2019).

"Large Memory Layers with Product Keys": a query is split into two halves;
each half is scored against its own set of `n_a` (resp. `n_b`) sub-keys,
`n_a * n_b >= N`. The top-k of each side gives `k x k` candidate entries
`(i, j) -> i * n_b + j` with score `s_a[i] + s_b[j]`, and the top-k of the
candidates are read. Because the best sums are always among the best of each
side, the result is exact for `N = n_a * n_b`, at a cost of
`O(T * (n_a + n_b) * d + T * k^2)` instead of `O(T * N * d)`: memory and time
grow with `sqrt(N)`, not `N`.
"""

import math
from typing import Any

from keras import ops


def sub_key_counts(num_entries: int) -> tuple[int, int]:
    """`(n_a, n_b)` with `n_a * n_b >= num_entries`, both about `sqrt(N)`."""
    n_a = math.isqrt(num_entries)
    if n_a * n_a < num_entries:
        n_a += 1
    return n_a, math.ceil(num_entries / n_a)


def product_key_topk(
    query: Any, keys_a: Any, keys_b: Any, k: int, num_entries: int
) -> tuple[Any, Any]:
    """Top-k entries of each query by product keys.

    Args:
        query: `(T, 2h)` queries; the first half scores `keys_a`, the second
            `keys_b`.
        keys_a, keys_b: `(n_a, h)` and `(n_b, h)` sub-keys.
        k: entries per query.
        num_entries: N; candidate indices `>= N` are never picked.

    Returns:
        `(index, gates)`: `(T, k)` int32 entries and float32 gates, the
        softmax over the candidate scores restricted to the `k` picked
        (the dense router's softmax over the candidates).
    """
    n_a, n_b = keys_a.shape[0], keys_b.shape[0]
    half = keys_a.shape[-1]
    query = ops.cast(query, "float32")
    score_a = ops.matmul(query[:, :half], ops.transpose(keys_a))
    score_b = ops.matmul(query[:, half:], ops.transpose(keys_b))
    # At least two candidates per side (a softmax over one candidate is a
    # constant 1 and would not train the keys), one more when the last row
    # of the grid is partly outside the table (k valid candidates remain).
    k_sub = min(max(k, 2) + (n_a * n_b > num_entries), n_a, n_b)
    top_a, index_a = ops.top_k(score_a, k_sub)
    top_b, index_b = ops.top_k(score_b, k_sub)
    index_a, index_b = ops.cast(index_a, "int32"), ops.cast(index_b, "int32")
    scores = ops.expand_dims(top_a, -1) + ops.expand_dims(top_b, -2)
    entry = ops.expand_dims(index_a, -1) * n_b + ops.expand_dims(index_b, -2)
    scores = ops.reshape(scores, (-1, k_sub * k_sub))
    entry = ops.reshape(entry, (-1, k_sub * k_sub))
    scores = ops.where(entry < num_entries, scores, -1e9)
    probs = ops.softmax(scores, axis=-1)
    gates, pick = ops.top_k(probs, k)
    index = ops.take_along_axis(entry, ops.cast(pick, "int32"), axis=-1)
    return index, gates
