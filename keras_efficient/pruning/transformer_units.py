"""Which Transformer units width removal keeps (private to `shrink`).

Scores every feed-forward neuron, key / value group and hidden channel by
the norm of all its weights (or takes calibration scores from the
caller), turns the ratios into new widths the class can express, and
keeps the largest units of every layer: the same share of every layer
(`uniform=True`), or, where the class holds a width per layer (the
package's `TransformerLM`) and `uniform=False`, the largest units across
all layers, so each layer keeps as many as its scores earn.
"""

import keras
import numpy as np

from keras_efficient._validation import check_bool
from keras_efficient._validation import check_choice
from keras_efficient._validation import check_fraction
from keras_efficient._validation import check_instance
from keras_efficient._validation import fail
from keras_efficient.pruning.masks import keep_count
from keras_efficient.pruning.transformer_families import AXES
from keras_efficient.pruning.transformer_families import Layout
from keras_efficient.pruning.transformer_families import find_family

IMPORTANCES = ("l1", "l2")


def is_transformer(model: keras.Model) -> bool:
    """Whether `model` is a Transformer that width removal knows."""
    return find_family(model) is not None


def transformer_widths(model: keras.Model) -> dict:
    """The removable widths of a Transformer.

    Returns:
        `{"ffn": [neurons per layer], "heads": [key / value groups per
        layer], "hidden": channels}` (a group is one head without
        grouped-query attention).

    Example:

    >>> from keras_efficient.applications import TransformerLM
    >>> from keras_efficient.pruning import transformer_widths
    >>> model = TransformerLM(vocabulary_size=32, sequence_length=8,
    ...     hidden_dim=16, num_layers=2, num_heads=2)
    >>> transformer_widths(model)
    {'ffn': [64, 64], 'heads': [2, 2], 'hidden': 16}
    """
    check_instance("model", model, keras.Model, "a keras.Model")
    return Layout(model).widths


def unit_scores(layout: Layout, norm: str) -> dict:
    """Magnitude of every unit: the l1 / l2 norm of all its weights."""
    total = {
        "ffn": [None] * layout.num_layers,
        "heads": [None] * layout.num_layers,
    }
    total["hidden"] = np.zeros(layout.hidden_dim)
    for variable, dims in layout.entries:
        value = np.abs(keras.ops.convert_to_numpy(variable).astype("float64"))
        value = value if norm == "l1" else value**2
        for index, (axis, layer, parts, unit) in dims.items():
            other = tuple(a for a in range(value.ndim) if a != index)
            per_element = value.sum(axis=other)
            per_unit = per_element.reshape(parts, -1, unit).sum(axis=(0, 2))
            if layer is None:
                total[axis] += per_unit
            elif total[axis][layer] is None:
                total[axis][layer] = per_unit
            else:
                total[axis][layer] += per_unit
    if norm == "l2":
        total["hidden"] = np.sqrt(total["hidden"])
        for axis in ("ffn", "heads"):
            total[axis] = [np.sqrt(s) for s in total[axis]]
    return total


def _check_scores(layout, scores):
    """The `scores` dict, checked: per-layer arrays of the right sizes."""
    if scores is None:
        return {}
    if not isinstance(scores, dict) or set(scores) - set(AXES):
        fail("scores", f"None or a dict keyed by some of {AXES}", scores)
    out = {}
    for axis, value in scores.items():
        name = f"scores[{axis!r}]"
        if axis == "hidden":
            out[axis] = _score_array(name, value, layout.hidden_dim)
            continue
        if not isinstance(value, (list, tuple)) or (
            len(value) != layout.num_layers
        ):
            fail(
                name,
                f"a list of {layout.num_layers} arrays (one per layer)",
                value,
            )
        sizes = layout.widths[axis]
        arrays = []
        for i, layer_scores in enumerate(value):
            allowed = [sizes[i]]
            if axis == "heads":  # per query head, summed per group
                allowed.append(sizes[i] * layout.group_size)
            array = _score_array(f"{name}[{i}]", layer_scores, allowed)
            if axis == "heads" and len(array) != sizes[i]:
                array = array.reshape(sizes[i], -1).sum(axis=1)
            arrays.append(array)
        out[axis] = arrays
    return out


def _score_array(name, value, sizes):
    sizes = sizes if isinstance(sizes, list) else [sizes]
    array = np.asarray(keras.ops.convert_to_numpy(value), dtype="float64")
    lengths = " or ".join(str(n) for n in sizes)
    if (
        array.ndim != 1
        or len(array) not in sizes
        or not np.all(np.isfinite(array))
    ):
        fail(name, f"a 1-D array of finite scores of length {lengths}", value)
    return array


def _ratios(layout, ratio, axis_ratios):
    """The fraction to remove of each axis, and the axes given explicitly."""
    if ratio is not None:
        ratio = check_fraction("ratio", ratio)
    out, given = {}, set()
    for axis, value in axis_ratios.items():
        name = {"ffn": "ffn_ratio", "heads": "head_ratio"}.get(
            axis, f"{axis}_ratio"
        )
        if value is not None:
            out[axis] = check_fraction(name, value)
            given.add(axis)
        else:
            out[axis] = ratio
    return out, given


def _counts(layout, ratios, given):
    """The new width of each axis (a list: one per layer), checked against
    the config."""
    widths = layout.widths
    counts = {"hidden": layout.hidden_dim}
    for axis in ("ffn", "heads"):
        if len(set(widths[axis])) > 1 and not layout.family.per_layer:
            fail("model", f"uniform `{axis}` widths", widths[axis])
        counts[axis] = [
            n if ratios[axis] is None else keep_count(n, ratios[axis])
            for n in widths[axis]
        ]
    if ratios["hidden"] is not None:
        counts["hidden"] = keep_count(layout.hidden_dim, ratios["hidden"])
    if not layout.derived_head_dim:
        return counts
    heads = counts["heads"][0]  # these classes hold one width
    # The head size is `hidden_dim / heads`: heads and hidden channels can
    # only go together, in the same proportion.
    per_group = layout.group_size * layout.head_dim
    family, field = layout.family_name, layout.family.heads
    if "hidden" in given and "heads" in given:
        if counts["hidden"] != heads * per_group:
            fail(
                "hidden_ratio",
                f"the share of `head_ratio` on {family}, "
                f"whose head size is `hidden_dim / {field}` (keeping "
                f"{heads} of {widths['heads'][0]} key / value "
                f"groups needs hidden_dim={heads * per_group})",
                ratios["hidden"],
            )
    elif "heads" in given and heads != widths["heads"][0]:
        fail(
            "head_ratio",
            f"None on {family} without `hidden_ratio`: its "
            f"head size is `hidden_dim / {field}`, so removing heads "
            f"(`{field}`) alone changes it; remove hidden channels "
            "(`hidden_dim`) in the same proportion",
            ratios["heads"],
        )
    elif "hidden" in given and counts["hidden"] != layout.hidden_dim:
        fail(
            "hidden_ratio",
            f"None on {family} without `head_ratio`: its "
            f"head size is `hidden_dim / {field}`, so removing hidden "
            f"channels (`hidden_dim`) alone changes it; remove heads "
            f"(`{field}`) in the same proportion",
            ratios["hidden"],
        )
    else:  # the one-call ratio: the hidden width follows the heads
        counts["hidden"] = heads * per_group
    return counts


def _keep(scores, k):
    """Indices of the `k` largest scores, in order (ties: the first)."""
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[:k])


def _keep_across(scores, counts):
    """Per layer, the indices of the `sum(counts)` largest scores of all
    layers, at least one per layer (ties: the first)."""
    best = [int(np.argmax(s)) for s in scores]  # every layer keeps one
    pool = [
        (-float(value), layer, index)
        for layer, s in enumerate(scores)
        for index, value in enumerate(s)
        if index != best[layer]
    ]
    pool.sort()
    kept = [[b] for b in best]
    for _, layer, index in pool[: sum(counts) - len(scores)]:
        kept[layer].append(index)
    return [np.sort(np.asarray(k, dtype="int64")) for k in kept]


def _check_uniform(layout, uniform):
    uniform = check_bool("uniform", uniform)
    if not uniform and not layout.family.per_layer:
        fail(
            "uniform",
            f"True on {layout.family_name} (its config holds one "
            f"`{layout.family.ffn}` and one `{layout.family.heads}` for "
            "every layer)",
            uniform,
        )
    return uniform


def select_transformer_units(
    model: keras.Model,
    ratio: float | None = None,
    ffn_ratio: float | None = None,
    head_ratio: float | None = None,
    hidden_ratio: float | None = None,
    scores: dict | None = None,
    importance: str = "l1",
    uniform: bool = True,
) -> dict:
    """The units `shrink` keeps: the largest by magnitude or by `scores`.

    Args:
        model: a keras-hub task or backbone (GPT-2, BERT, Llama, Mistral,
            Qwen3, Gemma) or a `TransformerLM`.
        ratio: the fraction removed of every axis the class can express
            (`None`: none). On classes whose head size is `hidden_dim /
            num_heads` (GPT-2, BERT, Llama) the hidden width follows the
            heads, so the head size stays.
        ffn_ratio, head_ratio, hidden_ratio: the fraction of one axis
            (over `ratio`).
        scores: optional importance, `{"ffn": [array per layer], "heads":
            [array per layer (per key / value group or per query head)],
            "hidden": array}`, e.g. activation norms or Taylor scores from
            calibration data. Axes not given are scored by magnitude.
        importance: `"l1"` or `"l2"`: the norm of all the weights of a unit
            (magnitude scoring).
        uniform: `True`: every layer loses the same share of its
            feed-forward neurons and heads. `False` (a `TransformerLM`
            only; keras-hub classes hold one width for every layer): the
            axis loses the same share in total, but the units kept are
            the largest scores across all layers (at least one per
            layer), so the layers end with different widths where their
            scores differ. The scores are compared as they are, so give
            them on one scale across layers (magnitude, or activation
            importance from `keras_efficient.compress`).

    Returns:
        `{"ffn": [kept neuron indices per layer], "heads": [kept key /
        value groups per layer], "hidden": kept channel indices}`.
    """
    check_instance("model", model, keras.Model, "a keras.Model")
    check_choice("importance", importance, IMPORTANCES)
    layout = Layout(model)
    uniform = _check_uniform(layout, uniform)
    axis_ratios = {
        "ffn": ffn_ratio,
        "heads": head_ratio,
        "hidden": hidden_ratio,
    }
    ratios, given = _ratios(layout, ratio, axis_ratios)
    counts = _counts(layout, ratios, given)
    user = _check_scores(layout, scores)
    magnitude = unit_scores(layout, importance)
    plan = {}
    for axis in ("ffn", "heads"):
        per_layer = user.get(axis, magnitude[axis])
        if uniform:
            plan[axis] = [_keep(s, k) for s, k in zip(per_layer, counts[axis])]
        else:
            plan[axis] = _keep_across(per_layer, counts[axis])
    plan["hidden"] = _keep(
        user.get("hidden", magnitude["hidden"]), counts["hidden"]
    )
    return plan


def zero_plan(layout: Layout) -> dict:
    """Keep all but the units whose weights are all zero: each layer's own
    zeros where the class holds a width per layer (at least one unit
    stays), else as many per layer as every layer has."""
    magnitude = unit_scores(layout, "l1")
    if layout.family.per_layer:
        plan = {
            axis: [_keep(s, max(int(np.sum(s != 0)), 1)) for s in scores]
            for axis, scores in magnitude.items()
            if axis != "hidden"
        }
        hidden = magnitude["hidden"]
        plan["hidden"] = _keep(hidden, max(int(np.sum(hidden != 0)), 1))
        return plan
    removed = {
        axis: min(int(np.sum(s == 0)) for s in magnitude[axis])
        for axis in ("ffn", "heads")
    }
    removed["hidden"] = int(np.sum(magnitude["hidden"] == 0))
    if layout.derived_head_dim:
        per_group = layout.group_size * layout.head_dim
        groups = min(removed["heads"], removed["hidden"] // per_group)
        removed["heads"], removed["hidden"] = groups, groups * per_group
    plan = {
        axis: [_keep(s, len(s) - removed[axis]) for s in magnitude[axis]]
        for axis in ("ffn", "heads")
    }
    hidden = magnitude["hidden"]
    plan["hidden"] = _keep(hidden, len(hidden) - removed["hidden"])
    return plan
