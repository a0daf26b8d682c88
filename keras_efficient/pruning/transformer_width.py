"""Width removal for Transformers: feed-forward neurons, heads, hidden.

`shrink(model, ratio=...)` on a keras-hub task or backbone (GPT-2, BERT,
Llama, Mistral, Qwen3, Gemma) or a `TransformerLM` comes here. Three axes
can be removed:

- `"ffn"`: feed-forward neurons (a column of the up and gate projections
  and the matching row of the down projection),
- `"heads"`: whole attention heads (query, key, value and output
  projections together); with grouped-query attention, whole key / value
  groups with the query heads that read them,
- `"hidden"`: residual-stream channels (embeddings, every projection,
  every norm, the output head).

Each layer chooses its own units. keras-hub classes hold one width per
axis in their config, so every layer keeps the same number; the
package's `TransformerLM` holds a width per layer (`num_heads` and
`intermediate_dim` lists, its own `head_dim`), so its layers may keep
different numbers (`uniform=False`, or a `plan` / zeros that differ per
layer). The result is the same class, rebuilt from the smaller config,
with the kept weights copied in. Removing feed-forward neurons or heads
computes exactly what the model with those units zeroed computes
(`zero_transformer_units`); removing hidden channels changes the
statistics of every LayerNorm / RMSNorm, so it is an approximation that
needs fine-tuning.
"""

from typing import Any

import keras
import numpy as np

from keras_efficient._validation import check_instance
from keras_efficient._validation import fail
from keras_efficient.pruning.transformer_families import AXES
from keras_efficient.pruning.transformer_families import Layout
from keras_efficient.pruning.transformer_families import find_family
from keras_efficient.pruning.transformer_families import rebuild
from keras_efficient.pruning.transformer_units import select_transformer_units
from keras_efficient.pruning.transformer_units import zero_plan


def _check_plan(layout, plan):
    if not isinstance(plan, dict) or set(plan) != set(AXES):
        fail(
            "plan",
            f"a dict with the keys {AXES} (see `select_transformer_units`)",
            plan,
        )
    out = {
        "hidden": _indices("plan['hidden']", plan["hidden"], layout.hidden_dim)
    }
    for axis in ("ffn", "heads"):
        value = plan[axis]
        if (
            not isinstance(value, (list, tuple))
            or len(value) != layout.num_layers
        ):
            fail(
                f"plan[{axis!r}]",
                f"a list of {layout.num_layers} index arrays",
                value,
            )
        out[axis] = [
            _indices(f"plan[{axis!r}][{i}]", v, layout.widths[axis][i])
            for i, v in enumerate(value)
        ]
    return out


def _indices(name, value, size):
    array = np.asarray(value)
    if (
        array.ndim != 1
        or not len(array)
        or not np.issubdtype(array.dtype, np.integer)
        or len(np.unique(array)) != len(array)
        or array.min() < 0
        or array.max() >= size
    ):
        fail(
            name,
            f"a non-empty 1-D array of distinct indices in [0, {size})",
            value,
        )
    return np.sort(array)


def _expand(kept, n, parts, unit):
    """Element indices of the `kept` units of an axis."""
    units = kept[:, None] * unit + np.arange(unit)[None, :]
    return np.concatenate([p * n * unit + units.ravel() for p in range(parts)])


def _take(layout, plan, variable, dims):
    value = keras.ops.convert_to_numpy(variable)
    for index, (axis, layer, parts, unit) in dims.items():
        kept = plan[axis] if layer is None else plan[axis][layer]
        n = value.shape[index] // (parts * unit)
        value = np.take(value, _expand(kept, n, parts, unit), axis=index)
    return value


def _zero(layout, plan, variable, dims):
    value = np.array(keras.ops.convert_to_numpy(variable))
    for index, (axis, layer, parts, unit) in dims.items():
        kept = plan[axis] if layer is None else plan[axis][layer]
        n = value.shape[index] // (parts * unit)
        removed = np.setdiff1d(np.arange(n), kept)
        where = [slice(None)] * value.ndim
        where[index] = _expand(removed, n, parts, unit)
        value[tuple(where)] = 0
    return value


def _copy_into(layout, new, values):
    """Assign `values` (one per weight of the old model) to `new`."""
    if len(layout.entries) != len(new.weights):
        fail(
            "model",
            "a model whose rebuilt copy has the same weights",
            f"{len(layout.entries)} vs {len(new.weights)}",
        )
    for (old, _), value, variable in zip(layout.entries, values, new.weights):
        same = tuple(value.shape) == tuple(variable.shape)
        if old.path != variable.path or not same:
            fail(
                "model",
                "a model whose rebuilt copy has the same weights",
                f"{old.path} {value.shape} vs {variable.path} "
                f"{tuple(variable.shape)}",
            )
        variable.assign(value)
    return new


def _width(sizes):
    """One width for every layer, or a list where the layers differ."""
    sizes = [int(n) for n in sizes]
    return sizes[0] if len(set(sizes)) == 1 else sizes


def _counts_of(layout, plan):
    counts = {"hidden": len(plan["hidden"])}
    for axis in ("ffn", "heads"):
        if layout.family.per_layer:
            counts[axis] = _width([len(k) for k in plan[axis]])
            continue
        sizes = {len(k) for k in plan[axis]}
        if len(sizes) != 1:
            fail(
                f"plan[{axis!r}]",
                f"the same number of kept units in every "
                f"layer ({layout.family_name} holds one `{axis}` width)",
                sorted(sizes),
            )
        counts[axis] = sizes.pop()
    if layout.derived_head_dim and counts["hidden"] != (
        counts["heads"] * layout.group_size * layout.head_dim
    ):
        fail(
            "plan",
            f"heads and hidden channels in the same proportion on "
            f"{layout.family_name} (its head size is `hidden_dim / "
            f"{layout.family.heads}`)",
            counts,
        )
    return counts


def shrink_transformer(model: keras.Model, plan: dict) -> keras.Model:
    """The same class with only the units of `plan` (kept weights copied).

    Args:
        model: a keras-hub task or backbone or a `TransformerLM`.
        plan: the kept units, as `select_transformer_units` returns them.

    Returns:
        A new, uncompiled model of the same class.
    """
    check_instance("model", model, keras.Model, "a keras.Model")
    layout = Layout(model)
    plan = _check_plan(layout, plan)
    new = rebuild(layout, _counts_of(layout, plan))
    values = [_take(layout, plan, v, dims) for v, dims in layout.entries]
    return _copy_into(layout, new, values)


def zero_transformer_units(model: keras.Model, plan: dict) -> keras.Model:
    """A copy of `model` with every unit that `plan` does not keep zeroed.

    With hidden channels kept, the copy computes what
    `shrink_transformer(model, plan)` computes (up to float rounding).
    """
    check_instance("model", model, keras.Model, "a keras.Model")
    layout = Layout(model)
    plan = _check_plan(layout, plan)
    counts = {"hidden": layout.hidden_dim}
    for axis in ("ffn", "heads"):
        counts[axis] = _width(layout.widths[axis])
    new = rebuild(layout, counts)
    values = [_zero(layout, plan, v, dims) for v, dims in layout.entries]
    return _copy_into(layout, new, values)


def shrink_by_ratio(
    model: keras.Model,
    ratio: float | None = None,
    importance: str = "l2",
    ffn_ratio: float | None = None,
    head_ratio: float | None = None,
    hidden_ratio: float | None = None,
    scores: dict | None = None,
    uniform: bool = True,
) -> keras.Model:
    """`shrink` of a Transformer: select the units, then remove them.

    With no ratio and no scores, removes the units whose weights are all
    zero (the same number in every layer, or each layer's own on a
    `TransformerLM`).
    """
    options = (ratio, ffn_ratio, head_ratio, hidden_ratio, scores)
    if all(value is None for value in options):
        check_instance("model", model, keras.Model, "a keras.Model")
        return shrink_transformer(model, zero_plan(Layout(model)))
    plan = select_transformer_units(
        model,
        ratio,
        ffn_ratio,
        head_ratio,
        hidden_ratio,
        scores,
        importance,
        uniform=uniform,
    )
    return shrink_transformer(model, plan)


def takes(
    model: keras.Model, ratio: float | None, *widths: Any, uniform: bool = True
) -> bool:
    """Whether `shrink(model, ...)` is width removal of a Transformer.

    A keras-hub Transformer always is; a `TransformerLM` is when a ratio
    or scores are given or whole units are zeroed in all their weights,
    as `MagnitudePruning(structure="transformer")` leaves them (otherwise
    `shrink` removes the units that filter pruning zeroed through the
    functional graph). Per-axis ratios on any
    other model are refused.
    """
    found = find_family(model)
    given = [
        name for name, value in zip(_WIDTH_ARGS, widths) if value is not None
    ]
    if uniform is not True:
        given.append("uniform")
    widths = (*widths, uniform)
    if found is None:
        if given:
            fail(
                given[0],
                f"{'True' if given[0] == 'uniform' else 'None'} for a model "
                "that is not a Transformer known to width removal (a "
                "keras-hub task or backbone, a `TransformerLM`)",
                dict(zip(_WIDTH_ARGS, widths))[given[0]],
            )
        return False
    if found[0] != "TransformerLM":
        return True
    return ratio is not None or bool(given) or _zeroed_units(model)


def _zeroed_units(model):
    """Whether a `TransformerLM` has whole units zeroed in all their
    weights (heads, feed-forward neurons or hidden channels)."""
    try:
        layout = Layout(model)
    except ValueError:  # options width removal has no rule for
        return False
    plan = zero_plan(layout)
    return len(plan["hidden"]) < layout.hidden_dim or any(
        len(kept) < n
        for axis in ("ffn", "heads")
        for kept, n in zip(plan[axis], layout.widths[axis])
    )


_WIDTH_ARGS = ("ffn_ratio", "head_ratio", "hidden_ratio", "scores", "uniform")


def is_nested_transformer(layer: keras.Layer) -> bool:
    """Whether `layer` is a keras-hub task or backbone that `shrink` of an
    enclosing functional model shrinks through width removal."""
    if not isinstance(layer, keras.Model):
        return False
    found = find_family(layer)
    return found is not None and found[0] != "TransformerLM"


def shrink_nested(
    model: keras.Model, ratio: float | None, importance: str
) -> keras.Model:
    """A keras-hub model nested in a functional model, made narrower.

    Its inputs and outputs are the enclosing model's tensors, so its
    hidden width stays; feed-forward neurons and (where the head size is
    its own config field) key / value groups go. `ratio=None` removes the
    units whose weights are all zero; `importance` is `"l1"` or `"l2"`
    (anything else scores by `"l1"`).
    """
    layout = Layout(model)
    keep_heads = [np.arange(n) for n in layout.widths["heads"]]
    if ratio is None:
        plan = zero_plan(layout)
        if layout.derived_head_dim:
            plan["heads"] = keep_heads
    else:
        plan = select_transformer_units(
            model,
            ffn_ratio=ratio,
            head_ratio=None if layout.derived_head_dim else ratio,
            hidden_ratio=0.0,
            importance=importance if importance in ("l1", "l2") else "l1",
        )
    plan["hidden"] = np.arange(layout.hidden_dim)
    return shrink_transformer(model, plan)
