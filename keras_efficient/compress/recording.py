"""Minitron's activation importance, read by a recording call.

`activation_scores(model, batches)` calls the public model on calibration
batches while three kinds of its sublayers record what passes through
them, found from the weight layout `shrink` uses (`Layout`):

- a feed-forward output projection (its kernel's rows are the neurons of
  one layer) records its input: the activation of every neuron;
- an attention output projection (rows = heads, columns = hidden) records
  its input: every head's output before the projection, whose l2 norm
  is the head's score (summed over the query heads of a key / value
  group);
- a normalization layer over the hidden width records its output: the
  hidden channels after the layer norms (every block's, the final one
  and, in BERT, the embedding norm).

The sublayers record through their instances only: `call` of each
chosen instance is shadowed for the duration of one model call and
restored after it (`Recording`); no class is changed and the model runs
its own `call`. Tokens with `padding_mask == 0` (keras-hub inputs) are
left out of the means. Every family `shrink` knows is read the same way:
`TransformerLM` and the keras-hub GPT-2, BERT, Llama, Mistral, Qwen3 and
Gemma backbones and tasks.
"""

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_efficient._validation import fail
from keras_efficient.pruning.targets import walk_layers
from keras_efficient.pruning.transformer_families import Layout

HIDDEN = ("hidden", None, 1, 1)


def _own_variable(layer, *names):
    for name in names:
        value = getattr(layer, name, None)
        if isinstance(value, keras.Variable):
            return value
    return None


def recording_sites(layout: Layout) -> list:
    """`(layer, what, axis, index)` of every sublayer that records.

    `what` is `"input"` or `"output"`; `axis` is `"ffn"`, `"heads"` or
    `"hidden"`; `index` is the layer number (`None` for hidden).
    """
    dims = {v.path: d for v, d in layout.entries}
    sites = []
    for layer in walk_layers(layout.model):
        kernel = _own_variable(layer, "kernel")
        if kernel is not None and kernel.path in dims:
            kernel_dims = dims[kernel.path]
            first = kernel_dims.get(0)
            last = kernel_dims.get(len(kernel.shape) - 1)
            if first and first[0] == "ffn" and last == HIDDEN:
                sites.append((layer, "input", "ffn", first[1]))
            elif first and first[0] == "heads" and last == HIDDEN:
                sites.append((layer, "input", "heads", first[1]))
            continue
        scale = _own_variable(layer, "gamma", "scale")
        if scale is not None and dims.get(scale.path) == {0: HIDDEN}:
            sites.append((layer, "output", "hidden", None))
    found = {(axis, i) for _, _, axis, i in sites}
    for axis in ("ffn", "heads"):
        missing = [
            i for i in range(layout.num_layers) if (axis, i) not in found
        ]
        if missing:
            fail(
                "model",
                f"a {layout.family_name} whose {axis} output projections "
                f"are sublayers Keras tracks (none found for layers "
                f"{missing})",
                type(layout.model).__name__,
            )
    return sites


class Recording:
    """Shadows `call` of chosen layer instances while the block is open.

    Inside `with Recording(sites, record):` every call of a site's layer
    runs its own `call` and then passes `(site, tensor)` to `record`.
    """

    def __init__(self, sites: list, record: Callable[[Any, Any], None]):
        self.sites, self.record = sites, record

    def _shadow(self, site):
        layer, what = site[0], site[1]
        original = layer.call

        def call(*args, **kwargs):
            outputs = original(*args, **kwargs)
            self.record(site, args[0] if what == "input" else outputs)
            return outputs

        # Set on the instance only, past Keras's attribute tracking: the
        # class and every other instance keep their own `call`.
        object.__setattr__(layer, "call", call)

    def __enter__(self):
        # An instance may already carry its own `call`: put it back after.
        self.own = [vars(site[0]).get("call") for site in self.sites]
        for site in self.sites:
            self._shadow(site)
        return self

    def __exit__(self, *exc):
        for site, own in zip(self.sites, self.own):
            if own is not None:
                object.__setattr__(site[0], "call", own)
            elif "call" in vars(site[0]):
                object.__delattr__(site[0], "call")
        return False


def _token_weights(x):
    """`(batch, length)` weights of the tokens of `x` (its padding mask)."""
    if isinstance(x, dict) and "padding_mask" in x:
        return np.asarray(keras.ops.convert_to_numpy(x["padding_mask"]))
    return None


def _per_channel(value, weights, last=1):
    """Weighted sum over the tokens of `value`, as float64 NumPy.

    `value` is `(batch, length, ...)`; `last` trailing axes are kept.
    """
    value = keras.ops.convert_to_numpy(keras.ops.cast(value, "float32"))
    value = value.astype("float64")
    tail = value.shape[value.ndim - last :]
    value = value.reshape((-1, *tail))
    if weights is None:
        return value.sum(axis=0), value.shape[0]
    w = weights.reshape(-1).astype("float64")
    return np.tensordot(w, value, axes=1), w.sum()


def activation_scores(model: keras.Model, batches: list) -> dict:
    """Minitron's activation importance (see the module docstring)."""
    layout = Layout(model)
    sites = recording_sites(layout)
    g, head_dim = layout.group_size, layout.head_dim
    totals = {
        "ffn": [0.0] * layout.num_layers,
        "heads": [0.0] * layout.num_layers,
        "hidden": np.zeros(layout.hidden_dim),
    }
    counts = {"hidden": 0.0}
    weights = None

    def record(site, value):
        _, _, axis, i = site
        value = keras.ops.convert_to_tensor(value)
        if axis == "heads":
            groups = layout.widths["heads"][i]
            shape = keras.ops.shape(value)
            heads = keras.ops.reshape(
                value, (shape[0], shape[1], groups, g, head_dim)
            )
            norms = keras.ops.sqrt(keras.ops.sum(heads * heads, axis=-1))
            total, n = _per_channel(keras.ops.sum(norms, axis=-1), weights)
        else:
            total, n = _per_channel(keras.ops.abs(value), weights)
        if axis == "hidden":
            totals["hidden"] = totals["hidden"] + total
            counts["hidden"] += n
        else:
            totals[axis][i] = totals[axis][i] + total
            counts[axis, i] = counts.get((axis, i), 0.0) + n

    for x, _ in batches:
        weights = _token_weights(x)
        with Recording(sites, record):
            model(x, training=False)
    # Each hidden norm's mean, summed over the norms (every norm counts
    # once per token, whatever the number of norms).
    norms = sum(1 for s in sites if s[2] == "hidden")
    tokens = counts["hidden"] / max(norms, 1)
    return {
        "ffn": [
            totals["ffn"][i] / counts["ffn", i]
            for i in range(layout.num_layers)
        ],
        "heads": [
            totals["heads"][i] / counts["heads", i]
            for i in range(layout.num_layers)
        ],
        "hidden": totals["hidden"] / tokens,
    }
