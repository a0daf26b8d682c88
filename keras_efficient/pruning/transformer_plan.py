"""The unit groups of `structure="transformer"` (private to the plan).

The Transformer counterpart of filter pruning by channel group: whole
feed-forward neurons, whole attention heads (key / value groups with
their query heads) and, where asked, hidden channels are zeroed during
`fit`, scored by the L1 norm of all the weights of the unit. Which weights
form a unit is read from `transformer_families.Layout`, the description
`shrink` removes units with, so `shrink(model)` (no ratio) removes exactly
the units training zeroed.

Every layer keeps the same share of an axis: each layer's group keeps
`k = max(round(n * (1 - s)), 1)` of its `n` units (the same number
where the layers are equally wide, as keras-hub configs require). On
classes whose head size is `hidden_dim / num_heads` (GPT-2, BERT, Llama)
heads and hidden channels go together: the hidden channels kept are the
kept heads times the channels of a head.
"""

from typing import NamedTuple

import keras

from keras_efficient._validation import fail
from keras_efficient.pruning.transformer_families import AXES
from keras_efficient.pruning.transformer_families import Layout


class UnitGroup(NamedTuple):
    """One prunable axis of one layer (`layer` None: shared by every
    layer, the hidden channels): its `size` units, scored and masked in
    its `members`, each `(kernel index, axis index, parts, unit)` as in
    `masks.axis_unit_scores`. `count` is None (keep
    `keep_count(size, s)`) or `(n, per)` (keep `keep_count(n, s) * per`:
    the hidden channels that follow the heads)."""

    axis: str
    layer: int | None
    size: int
    members: tuple[tuple[int, int, int, int], ...]
    count: tuple[int, int] | None = None


def resolve_axes(layout: Layout, axes: tuple | None) -> tuple:
    """The axes pruned: `axes`, or by default `("ffn", "heads")` where the
    class has its own head size and `("ffn",)` where it derives it."""
    if axes is None:
        return ("ffn",) if layout.derived_head_dim else ("ffn", "heads")
    if layout.derived_head_dim and ("heads" in axes) != ("hidden" in axes):
        field = layout.family.heads
        fail(
            "transformer_axes",
            f"both 'heads' and 'hidden' or neither on "
            f"{layout.family_name}: its head size is `hidden_dim / "
            f"{field}`, so heads (`{field}`) and hidden channels "
            "(`hidden_dim`) can only be removed together",
            axes,
        )
    return tuple(a for a in AXES if a in axes)


def transformer_groups(model: keras.Model, axes: tuple | None) -> tuple:
    """`(kernels, groups)`: every trainable weight holding a unit of the
    pruned `axes`, in the order of `model.trainable_variables`, and the
    `UnitGroup`s over them.

    Raises:
        ValueError: `model` is not a Transformer width removal knows, or
            `axes` cannot be expressed by its class.
    """
    layout = Layout(model)
    axes = resolve_axes(layout, axes)
    order = {id(v): i for i, v in enumerate(model.trainable_variables)}
    entries = [
        (variable, dims)
        for variable, dims in layout.entries
        if id(variable) in order and any(d[0] in axes for d in dims.values())
    ]
    entries.sort(key=lambda entry: order[id(entry[0])])
    members, sizes = {}, {}
    for i, (variable, dims) in enumerate(entries):
        for index, (axis, layer, parts, unit) in dims.items():
            if axis not in axes:
                continue
            members.setdefault((axis, layer), []).append(
                (i, index, parts, unit)
            )
            sizes[(axis, layer)] = variable.shape[index] // (parts * unit)
    count = None
    if layout.derived_head_dim and "hidden" in axes:
        count = (layout.num_groups, layout.group_size * layout.head_dim)
    groups = tuple(
        UnitGroup(
            axis,
            layer,
            sizes[(axis, layer)],
            tuple(found),
            count if axis == "hidden" else None,
        )
        for (axis, layer), found in members.items()
    )
    return tuple(v for v, _ in entries), groups
