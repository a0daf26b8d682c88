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


# Rows at least this long take `blocked_top_k`: XLA CPU lowers `top_k` to
# a sort of the whole row (10 ms of a 60 ms step at 1,024 sub-keys a side).
BLOCKED_TOP_K_MIN_LENGTH = 256


def blocked_top_k(scores: Any, k: int) -> Any:
    """Indices of the `k` largest entries of each row, by blocks.

    The row is cut into blocks of about `sqrt(n)`; the top-k entries lie in
    the k blocks with the largest maxima, so a top-k over the block maxima
    and one over those blocks' entries give the exact answer while sorting
    only `O(sqrt(n) + k sqrt(n))` values a row. Rows shorter than
    `BLOCKED_TOP_K_MIN_LENGTH` use `ops.top_k` directly.

    Args:
        scores: `(T, n)` float scores.
        k: entries per row, `<= n`.

    Returns:
        `(T, k)` int32 indices, best first (ties may be ordered differently
        from `ops.top_k`).
    """
    length = scores.shape[-1]
    if length < BLOCKED_TOP_K_MIN_LENGTH:
        return ops.cast(ops.top_k(scores, k)[1], "int32")
    block = math.isqrt(length)
    num_blocks = -(-length // block)
    if num_blocks * block > length:
        scores = ops.pad(
            scores,
            ((0, 0), (0, num_blocks * block - length)),
            constant_values=float("-inf"),
        )
    # -1 rows: the batch may be unknown while tracing (a partial batch).
    blocks = ops.reshape(scores, (-1, num_blocks, block))
    _, best_blocks = ops.top_k(ops.max(blocks, axis=-1), k)
    best_blocks = ops.cast(best_blocks, "int32")
    candidates = ops.take_along_axis(
        blocks, ops.expand_dims(best_blocks, -1), axis=1
    )
    _, pick = ops.top_k(ops.reshape(candidates, (-1, k * block)), k)
    pick = ops.cast(pick, "int32")
    block_of_pick = ops.take_along_axis(best_blocks, pick // block, axis=1)
    return block_of_pick * block + pick % block


def _picked_sub_keys(query, keys, k):
    """Scores and indices of the `k` best sub-keys of each query half.

    All sub-keys are scored to choose, without gradient; the `k` picked are
    scored again from gathered keys, so the backward pass costs
    `O(T * k * h)` instead of two `(T, n) x (n, h)` matmuls.
    """
    keys = ops.convert_to_tensor(keys)
    scores = ops.matmul(
        ops.stop_gradient(query), ops.transpose(ops.stop_gradient(keys))
    )
    index = blocked_top_k(scores, k)
    picked = ops.take(ops.cast(keys, query.dtype), index, axis=0)
    return ops.sum(ops.expand_dims(query, -2) * picked, axis=-1), index


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
    # At least two candidates per side (a softmax over one candidate is a
    # constant 1 and would not train the keys), one more when the last row
    # of the grid is partly outside the table (k valid candidates remain).
    k_sub = min(max(k, 2) + (n_a * n_b > num_entries), n_a, n_b)
    top_a, index_a = _picked_sub_keys(query[:, :half], keys_a, k_sub)
    top_b, index_b = _picked_sub_keys(query[:, half:], keys_b, k_sub)
    scores = ops.expand_dims(top_a, -1) + ops.expand_dims(top_b, -2)
    entry = ops.expand_dims(index_a, -1) * n_b + ops.expand_dims(index_b, -2)
    scores = ops.reshape(scores, (-1, k_sub * k_sub))
    entry = ops.reshape(entry, (-1, k_sub * k_sub))
    scores = ops.where(entry < num_entries, scores, -1e9)
    probs = ops.softmax(scores, axis=-1)
    gates, pick = ops.top_k(probs, k)
    index = ops.take_along_axis(entry, ops.cast(pick, "int32"), axis=-1)
    return index, gates
