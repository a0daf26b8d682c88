"""Token-to-expert routing: top-k softmax gates, auxiliary losses, sorting.

Shared by `MixtureOfExperts` (experts) and `SparseLookupTable` (entries).
Everything here is `keras.ops` and runs on every backend.

Sort keys never combine two ids into one integer: grouping by expert is one
stable sort on the expert id alone (`ops.argsort` is stable on JAX,
TensorFlow and torch), so nothing overflows however many experts, tokens
and choices there are.
"""

from typing import Any

from keras import ops


def top_k_softmax(logits: Any, k: int) -> tuple[Any, Any, Any]:
    """Top-k softmax routing.

    Args:
        logits: `(T, E)` router logits.
        k: choices per token.

    Returns:
        `(experts, gates, probs)`: `(T, k)` int32 expert ids, `(T, k)`
        float32 gates (the softmax probabilities of the chosen experts)
        and the `(T, E)` float32 softmax.
    """
    probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)
    gates, experts = ops.top_k(probs, k)
    return ops.cast(experts, "int32"), gates, probs


def load_balance_loss(expert: Any, probs: Any, num_experts: int) -> Any:
    """Switch Transformer load-balancing loss `E * sum_e f_e * P_e`.

    `f_e` is the fraction of the `(A,)` assignments `expert` sent to expert
    e, `P_e` the mean router probability of e over the `(T, E)` `probs`.
    Equals 1 for perfectly uniform routing.
    """
    counts = ops.segment_sum(
        ops.ones_like(expert, dtype="float32"), expert, num_segments=num_experts
    )
    fraction = counts / ops.cast(ops.shape(expert)[0], "float32")
    mean_prob = ops.mean(probs, axis=0)
    return num_experts * ops.sum(fraction * mean_prob)


def router_z_loss(logits: Any) -> Any:
    """ST-MoE router z-loss: `mean_t (logsumexp_e logits[t, e]) ** 2`."""
    z = ops.logsumexp(ops.cast(logits, "float32"), axis=-1)
    return ops.mean(ops.square(z))


def sort_by_expert(expert: Any) -> tuple[Any, Any]:
    """Stable order of the assignments grouped by expert.

    Args:
        expert: `(A,)` int32 expert id of each assignment.

    Returns:
        `(order, rank)`: `order` `(A,)` sorts the assignments by expert
        (arrival order within an expert); `rank[i]` is the position of the
        sorted assignment `i` within its expert's group.
    """
    expert = ops.cast(expert, "int32")
    order = ops.cast(ops.argsort(expert), "int32")
    sorted_expert = ops.take(expert, order)
    first = ops.searchsorted(sorted_expert, sorted_expert, side="left")
    index = ops.arange(ops.shape(expert)[0], dtype="int32")
    return order, index - ops.cast(first, "int32")


def positions_in_experts(expert: Any, num_experts: int = None) -> Any:
    """Rank of each assignment among the earlier ones to the same expert.

    `position[i]` is the number of `j < i` with `expert[j] == expert[i]`,
    i.e. the assignment's slot in its expert's buffer in arrival order.
    Computed by one stable sort on the expert id (O(A log A), no `(A, E)`
    one-hot and no combined `expert * A + i` key that could overflow int32).

    Args:
        expert: `(A,)` int32 expert ids.
        num_experts: unused; kept for callers of the old signature.

    Returns:
        `(A,)` int32 positions.
    """
    del num_experts
    order, rank = sort_by_expert(expert)
    num = ops.shape(order)[0]
    return ops.cast(
        ops.scatter(ops.expand_dims(order, -1), rank, (num,)), "int32"
    )


def group_sizes(expert: Any, num_experts: int) -> Any:
    """`(E,)` int32 number of assignments per expert."""
    ones = ops.ones_like(expert, dtype="int32")
    return ops.cast(
        ops.segment_sum(ones, expert, num_segments=num_experts), "int32"
    )
