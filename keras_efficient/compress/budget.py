"""A parameter budget as the target of `compress`.

`ratio_for_params(model, params)` finds the removal fraction `r` that
`compress(model, data, params=...)` applies: the same share `r` of every
axis the class expresses (feed-forward neurons, key / value groups and
hidden channels; where the head size is `hidden_dim / num_heads` the
hidden width follows the heads, as `shrink(model, ratio=r)` does). It is
the smallest `r` whose result has at most `params` times the parameters
of `model`, found by bisection on `r` over the exact count of the shrunk
weights (every weight's kept rows and columns, read from the layout
`shrink` uses; nothing is built).
"""

import math

import keras

from keras_efficient._validation import check_fraction
from keras_efficient._validation import fail
from keras_efficient.pruning.transformer_families import Layout
from keras_efficient.pruning.transformer_units import _counts

# Bisection steps on r: 2^-40 is far below one unit of any real width.
STEPS = 40


def parameters_at(layout: Layout, counts: dict) -> int:
    """Parameters of the model `layout` describes at the widths `counts`."""
    total = 0
    for variable, dims in layout.entries:
        shape = list(variable.shape)
        for index, (axis, layer, parts, unit) in dims.items():
            count = counts[axis]
            if layer is not None and isinstance(count, (list, tuple)):
                count = count[layer]  # a width per layer
            shape[index] = parts * count * unit
        total += math.prod(shape)
    return total


def counts_at(layout: Layout, ratio: float) -> dict:
    """The uniform widths `shrink(model, ratio=ratio)` gives."""
    return _counts(
        layout, dict.fromkeys(("ffn", "heads", "hidden"), ratio), set()
    )


def ratio_for_params(model: keras.Model, params: float) -> float:
    """The smallest share to remove of every axis to meet `params`.

    Args:
        model: a Transformer that `shrink` knows.
        params: the budget, a fraction in (0, 1] of the parameters of
            `model`.

    Returns:
        The removal fraction `r` in [0, 1) (`0`: `model` already fits).
    """
    params = check_fraction("params", params, allow_zero=False, allow_one=True)
    layout = Layout(model)
    full = parameters_at(layout, counts_at(layout, 0.0))
    budget = params * full

    def fits(ratio):
        return parameters_at(layout, counts_at(layout, ratio)) <= budget

    if fits(0.0):
        return 0.0
    high = 1.0 - 2.0**-STEPS
    if not fits(high):
        smallest = parameters_at(layout, counts_at(layout, high)) / full
        fail(
            "params",
            f"at least {smallest:.3f} for this {layout.family_name} (one "
            "unit of every axis kept, the embeddings and norms stay)",
            params,
        )
    low = 0.0
    for _ in range(STEPS):
        middle = (low + high) / 2
        if fits(middle):
            high = middle
        else:
            low = middle
    return high
