"""Expert MLPs over routed assignments: dropless grouped matmul, capacity.

Two ways to run each (token, expert) assignment through its expert's MLP
`D -> H -> O`:

- `grouped_mlp` (dropless): the assignments are sorted by expert (one
  stable sort, see `routing.sort_by_expert`) and each expert multiplies
  exactly its rows. On JAX `"ragged"` does it with `jax.lax.ragged_dot`
  (the grouped GEMM of MegaBlocks / MaxText). The `keras.ops` `"reference"`
  path, on every backend, pads each expert's group to whole blocks of
  `block` rows, gathers each block's expert weights and runs one batched
  matmul over the blocks: at most `ceil(A / block) + E` blocks, so the
  padding is bounded by `E * block` rows (about a quarter of the
  assignments), not by a capacity factor; memory `O(A * (D + H))` plus
  the per-block weight gather.
- `capacity_mlp` (opt-in capacity): an `(E, C, D)` buffer of `C` slots per
  expert; assignments beyond an expert's slots are dropped.

All paths give the same outputs on the assignments they keep.
"""

import math
from collections.abc import Callable
from typing import Any

from keras import ops

from keras_efficient.layers.routing import group_sizes
from keras_efficient.layers.routing import sort_by_expert

# The grouped-matmul paths: the keras.ops reference and ragged_dot (JAX).
IMPLEMENTATIONS = ("auto", "reference", "ragged")


def block_size(num_assignments: int, num_experts: int) -> int:
    """Rows per block of the reference grouped matmul.

    About four blocks per expert on average (padding <= ~25% of the rows),
    a multiple of 8; 64 when the number of assignments is not static.
    """
    if not isinstance(num_assignments, int):
        return 64
    rows = math.ceil(num_assignments / (4 * num_experts))
    return max(8, 8 * math.ceil(rows / 8))


def grouped_mlp(
    x: Any,
    token: Any,
    expert: Any,
    weights: tuple,
    activation: Callable,
    implementation: str = "reference",
    keep: Any | None = None,
) -> Any:
    """Dropless expert MLP of every (kept) assignment.

    Args:
        x: `(T, D)` token vectors.
        token: `(A,)` int32 token of each assignment.
        expert: `(A,)` int32 expert of each assignment.
        weights: `(kernel_in, bias_in, kernel_out, bias_out)` of shapes
            `(E, D, H)`, `(E, H)`, `(E, H, O)`, `(E, O)`.
        activation: hidden activation (a callable).
        implementation: `"reference"` or `"ragged"` (JAX).
        keep: optional `(A,)` bool; assignments with `False` output zeros.

    Returns:
        `(A, O)` expert outputs in assignment order.
    """
    num_experts = weights[0].shape[0]
    expert = ops.cast(expert, "int32")
    if keep is not None:
        # Dropped assignments form an extra last group, masked below.
        expert = ops.where(keep, expert, num_experts)
    order, rank = sort_by_expert(expert)
    sorted_expert = ops.take(expert, order)
    rows = ops.take(x, ops.take(token, order), axis=0)
    sizes = group_sizes(expert, num_experts + 1)
    if implementation == "ragged":
        out = _ragged(
            rows, sorted_expert, sizes[:num_experts], weights, activation
        )
    else:
        out = _blocked(rows, sorted_expert, rank, sizes, weights, activation)
    if keep is not None:
        kept = ops.expand_dims(sorted_expert < num_experts, -1)
        out = ops.where(kept, out, ops.zeros_like(out))
    num = ops.shape(order)[0]
    return ops.scatter(
        ops.expand_dims(order, -1), out, (num, ops.shape(out)[-1])
    )


def _blocked(rows, sorted_expert, rank, sizes, weights, activation):
    """Sorted rows through their experts, one batched matmul over blocks."""
    kernel_in, bias_in, kernel_out, bias_out = weights
    num_experts = kernel_in.shape[0]
    num, dim = rows.shape[0], rows.shape[-1]
    if num is None:
        num = ops.shape(rows)[0]
    block = block_size(num, num_experts)
    groups = ops.shape(sizes)[0]
    num_blocks = (num + block - 1) // block + groups
    per_expert = (sizes + block - 1) // block
    ends = ops.cumsum(per_expert)
    starts = ends - per_expert
    slot = ops.take(starts, sorted_expert) * block + rank
    padded = ops.scatter(
        ops.expand_dims(slot, -1), rows, (num_blocks * block, dim)
    )
    padded = ops.reshape(padded, (num_blocks, block, dim))
    # The expert of each block: how many groups end at or before it (a
    # compare-and-count; `searchsorted` is a while loop on XLA).
    block_ids = ops.expand_dims(ops.arange(num_blocks, dtype="int32"), -1)
    ended = ops.greater_equal(block_ids, ops.cast(ends, "int32"))
    block_expert = ops.sum(ops.cast(ended, "int32"), axis=-1)
    block_expert = ops.minimum(block_expert, num_experts - 1)
    w_in = ops.cast(ops.take(kernel_in, block_expert, axis=0), rows.dtype)
    hidden = ops.einsum("nbd,ndh->nbh", padded, w_in)
    b_in = ops.take(bias_in, block_expert, axis=0)
    hidden = activation(hidden + ops.cast(ops.expand_dims(b_in, 1), rows.dtype))
    w_out = ops.cast(ops.take(kernel_out, block_expert, axis=0), rows.dtype)
    out = ops.einsum("nbh,nho->nbo", hidden, w_out)
    b_out = ops.take(bias_out, block_expert, axis=0)
    out = out + ops.cast(ops.expand_dims(b_out, 1), rows.dtype)
    out = ops.reshape(out, (num_blocks * block, ops.shape(out)[-1]))
    return ops.take(out, slot, axis=0)


def _ragged(rows, sorted_expert, sizes, weights, activation):
    import jax
    import jax.numpy as jnp

    kernel_in, bias_in, kernel_out, bias_out = weights
    num_experts = kernel_in.shape[0]
    sizes = jnp.asarray(sizes, "int32")
    row_expert = jnp.minimum(jnp.asarray(sorted_expert), num_experts - 1)
    kernel_in = jnp.asarray(kernel_in, rows.dtype)
    kernel_out = jnp.asarray(kernel_out, rows.dtype)
    hidden = jax.lax.ragged_dot(rows, kernel_in, sizes)
    hidden = hidden + jnp.take(bias_in, row_expert, axis=0).astype(rows.dtype)
    hidden = activation(hidden)
    out = jax.lax.ragged_dot(hidden, kernel_out, sizes)
    return out + jnp.take(bias_out, row_expert, axis=0).astype(rows.dtype)


def capacity_mlp(
    x: Any,
    token: Any,
    expert: Any,
    position: Any,
    keep: Any,
    capacity: int,
    weights: tuple,
    activation: Callable,
) -> Any:
    """Expert MLP through an `(E, C, D)` capacity buffer.

    Assignment `i` takes slot `position[i]` of its expert's `C = capacity`
    slots if `keep[i]` (`position < capacity`), else it is dropped and its
    output is zero. One scatter of token indices, a gather, one batched
    matmul per expert weight and a gather back.

    Returns:
        `(A, O)` outputs, zeros for dropped assignments.
    """
    kernel_in, bias_in, kernel_out, bias_out = weights
    num_experts, out_dim = kernel_in.shape[0], kernel_out.shape[-1]
    dim = ops.shape(x)[-1]
    slots = num_experts * capacity
    slot = ops.where(keep, expert * capacity + position, slots)
    # Token (+1) held by each slot; 0 marks an empty slot. Dropped
    # assignments all write the extra last slot, which is discarded.
    slot_token = ops.scatter_update(
        ops.zeros((slots + 1,), "int32"),
        ops.expand_dims(slot, -1),
        token + 1,
    )[:slots]
    x_pad = ops.concatenate([ops.zeros((1, dim), x.dtype), x], axis=0)
    grouped = ops.take(x_pad, slot_token, axis=0)
    grouped = ops.reshape(grouped, (num_experts, capacity, dim))
    hidden = ops.einsum("ecd,edh->ech", grouped, kernel_in)
    hidden = activation(hidden + ops.expand_dims(bias_in, 1))
    out = ops.einsum("ech,eho->eco", hidden, kernel_out)
    out = out + ops.expand_dims(bias_out, 1)
    out = ops.reshape(out, (slots, out_dim))
    out = ops.concatenate([out, ops.zeros((1, out_dim), out.dtype)], axis=0)
    return ops.take(out, slot, axis=0)
