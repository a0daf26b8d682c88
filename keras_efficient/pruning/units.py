"""Per-layer rules of structural removal (private): which output units are
zero, their importance, how to zero them and how to slice the weights.

Each rule works on one `graph.Node` and NumPy copies of its variables;
variables are found by the layers' public attributes (`kernel`, `bias`,
`gamma`, `moving_mean`, `query_dense`, `lr_kernel_b`, ...).
"""

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_efficient.layers.laurel import LaurelResidual
from keras_efficient.pruning import graph

L = keras.layers


def value(variable: keras.Variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable))


def _maps_zero_to_zero(fn):
    out = keras.ops.convert_to_numpy(fn(keras.ops.zeros((1, 2))))
    return bool(np.all(np.asarray(out) == 0))


def out_kernel(layer: keras.Layer) -> tuple:
    """`(kernel, bias)` whose last axis is the layer's output channel (of a
    `graph.Node` of kind "producer" or "attention")."""
    if isinstance(layer, graph.SEPARABLE):
        return layer.pointwise_kernel, layer.bias
    if isinstance(layer, L.Embedding):
        return layer.embeddings, None
    if isinstance(layer, L.MultiHeadAttention):
        return layer.output_dense.kernel, layer.output_dense.bias
    return layer.kernel, getattr(layer, "bias", None)


def _columns_zero(kernel, bias):
    k = value(kernel)
    zero = np.all(k.reshape(-1, k.shape[-1]) == 0, axis=0)
    if bias is not None:
        zero &= value(bias) == 0
    return zero


def _bn_affine(layer):
    """Inference-mode batch norm as `a * x + b` per channel."""
    var = value(layer.moving_variance)
    a = 1.0 / np.sqrt(var + layer.epsilon)
    if layer.scale:
        a = a * value(layer.gamma)
    b = -a * value(layer.moving_mean)
    if layer.center:
        b = b + value(layer.beta)
    return a, b


def zero_outputs(node: graph.Node | None, zero_ins: Any) -> None:
    """Boolean vector: which output channels are identically zero."""
    layer, kind = node.layer, node.kind
    if kind in ("producer", "attention"):
        zero = _columns_zero(*out_kernel(layer))
        act = getattr(layer, "activation", None)
        if act is not None and not _maps_zero_to_zero(act):
            zero[:] = False
        return zero
    if kind == "elementwise":
        return _elementwise_zero(layer, zero_ins[0])
    if kind == "merge":
        if isinstance(layer, L.Multiply):
            return np.any(zero_ins, axis=0)
        zero = np.all(zero_ins, axis=0)
        for b in laurel_up_kernels(layer):
            zero &= np.all(value(b) == 0, axis=0)
        return zero
    if kind == "concat":
        if node.channel_concat:
            return np.concatenate(zero_ins)
        return np.all(zero_ins, axis=0)
    if kind == "flatten":
        return np.tile(zero_ins[0], len(node.out_layout))
    return np.zeros(sum(n for _, n in node.out_layout), bool)


def _elementwise_zero(layer, zero_in):
    if isinstance(layer, L.BatchNormalization):
        a, b = _bn_affine(layer)
        return (zero_in | (a == 0)) & (b == 0)
    if isinstance(layer, graph.DEPTHWISE):
        k = value(layer.kernel)
        zero = zero_in | np.all(k.reshape(-1, k.shape[-2]) == 0, axis=0)
        if layer.bias is not None:
            zero &= value(layer.bias) == 0
        if not _maps_zero_to_zero(layer.activation):
            zero[:] = False
        return zero
    if isinstance(layer, (L.Activation, L.ReLU, L.LeakyReLU, L.ELU)):
        if not _maps_zero_to_zero(layer):
            return np.zeros_like(zero_in)
    return zero_in


def laurel_up_kernels(layer: keras.Layer) -> list:
    """The up-projections of a `LaurelResidual` (their columns are its
    output channels); `[]` for any other layer."""
    if not isinstance(layer, LaurelResidual):
        return []
    ups = list(getattr(layer, "pa_kernels_b", None) or [])
    if hasattr(layer, "lr_kernel_b"):
        ups.append(layer.lr_kernel_b)
    return ups


def scores(node: graph.Node | None, importance: str) -> np.ndarray | None:
    """Importance of each output channel this node produces, or None."""
    layer = node.layer
    if importance == "bn_scale":
        if isinstance(layer, L.BatchNormalization) and layer.scale:
            return np.abs(value(layer.gamma))
        return None
    if node.kind not in ("producer", "attention"):
        return None
    k = value(out_kernel(layer)[0])
    k = k.reshape(-1, k.shape[-1])
    if importance == "l2":
        return np.sqrt(np.sum(k * k, axis=0))
    return np.sum(np.abs(k), axis=0)


def _assign_columns(variable, channels, axis=-1):
    if variable is None:
        return
    v = value(variable).copy()
    index = [slice(None)] * v.ndim
    index[axis] = channels
    v[tuple(index)] = 0
    variable.assign(v)


def zero_channels(node: graph.Node | None, channels: np.ndarray) -> None:
    """Zero the parameters that make `channels` of the output zero."""
    layer = node.layer
    if node.kind in ("producer", "attention"):
        for variable in out_kernel(layer):
            _assign_columns(variable, channels)
    elif isinstance(layer, L.BatchNormalization):
        if layer.scale:
            _assign_columns(layer.gamma, channels)
        else:
            _assign_columns(layer.moving_mean, channels)
        if layer.center:
            _assign_columns(layer.beta, channels)
    elif isinstance(layer, graph.DEPTHWISE):
        _assign_columns(layer.kernel, channels, axis=-2)
        _assign_columns(layer.bias, channels)
    for b in laurel_up_kernels(layer):
        _assign_columns(b, channels)


def head_zero(layer: keras.Layer) -> np.ndarray:
    """Heads of a MultiHeadAttention whose contribution is zero."""
    out = value(layer.output_dense.kernel)
    zero = np.all(out.reshape(out.shape[0], -1) == 0, axis=1)
    v = value(layer.value_dense.kernel)
    v_zero = np.all(v.transpose(1, 0, 2).reshape(v.shape[1], -1) == 0, 1)
    if layer.value_dense.bias is not None:
        vb = value(layer.value_dense.bias)
        v_zero &= np.all(vb.reshape(vb.shape[0], -1) == 0, axis=1)
    return zero | v_zero


def head_scores(layer: keras.Layer, importance: str) -> np.ndarray:
    out = value(layer.output_dense.kernel)
    out = out.reshape(out.shape[0], -1)
    if importance == "l2":
        return np.sqrt(np.sum(out * out, axis=1))
    return np.sum(np.abs(out), axis=1)


def zero_heads(layer: keras.Layer, heads: Any) -> None:
    _assign_columns(layer.output_dense.kernel, heads, axis=0)
    _assign_columns(layer.value_dense.kernel, heads, axis=1)
    _assign_columns(layer.value_dense.bias, heads, axis=0)


def _take(array, keep, axis):
    return np.take(array, keep, axis=axis)


def slice_node(node: graph.Node | None, keep_of: Callable, heads: Any) -> Any:
    """`{id(variable): sliced value}` for one node; edits `node.config`."""
    layer, config = node.layer, node.config["config"]
    out = keep_of(node.outputs[0])
    new = {}
    if node.kind == "attention":
        return _slice_attention(node, keep_of, heads, out, config)
    if isinstance(layer, graph.SEPARABLE):
        src = keep_of(node.inputs[0])
        m = layer.depth_multiplier
        rows = (src[:, None] * m + np.arange(m)).ravel()
        new[id(layer.depthwise_kernel)] = _take(
            value(layer.depthwise_kernel), src, -2
        )
        pw = _take(value(layer.pointwise_kernel), rows, -2)
        new[id(layer.pointwise_kernel)] = _take(pw, out, -1)
        config["filters"] = len(out)
    elif isinstance(layer, L.Embedding):
        new[id(layer.embeddings)] = _take(value(layer.embeddings), out, -1)
        config["output_dim"] = len(out)
    elif node.kind == "producer":
        src = keep_of(node.inputs[0])
        kernel = _take(value(layer.kernel), src, -2)
        new[id(layer.kernel)] = _take(kernel, out, -1)
        config["units" if isinstance(layer, L.Dense) else "filters"] = len(out)
    elif isinstance(layer, graph.DEPTHWISE):
        new[id(layer.kernel)] = _take(value(layer.kernel), out, -2)
    elif isinstance(layer, L.BatchNormalization):
        for v in (layer.gamma, layer.beta, layer.moving_mean,
                  layer.moving_variance):  # fmt: skip
            if v is not None:
                new[id(v)] = _take(value(v), out, -1)
    elif isinstance(layer, LaurelResidual):
        new.update(_slice_laurel(layer, out, config))
    bias = getattr(layer, "bias", None)
    if node.kind in ("producer", "elementwise") and bias is not None:
        new[id(bias)] = _take(value(bias), out, -1)
    return new


def _slice_attention(node, keep_of, heads, out, config):
    layer = node.layer

    def role(index, name):
        if len(node.args) > index:
            return node.args[index][0]
        return node.named[name][0] if name in node.named else None

    query = role(0, "query")
    val = role(1, "value")
    key = role(2, "key") or val
    new = {}
    for dense, ref in ((layer.query_dense, query), (layer.key_dense, key),
                       (layer.value_dense, val)):  # fmt: skip
        k = _take(value(dense.kernel), keep_of(ref), 0)
        new[id(dense.kernel)] = _take(k, heads, 1)
        if dense.bias is not None:
            new[id(dense.bias)] = _take(value(dense.bias), heads, 0)
    o = layer.output_dense
    new[id(o.kernel)] = _take(_take(value(o.kernel), heads, 0), out, -1)
    if o.bias is not None:
        new[id(o.bias)] = _take(value(o.bias), out, -1)
    config["num_heads"] = len(heads)
    if len(out) != len(keep_of(query)) or config.get("output_shape"):
        config["output_shape"] = len(out)
    return new


def _slice_laurel(layer, keep, config):
    """Rows of the down-, columns of the up-projections; a rank above the
    new width is folded exactly (`A' = I`, `B' = A B`)."""
    new = {}
    if getattr(layer, "residual_weights", None) is not None and (
        layer.per_dimension
    ):
        rw = layer.residual_weights
        new[id(rw)] = _take(value(rw), keep, -1)
    downs = list(getattr(layer, "pa_kernels_a", []))
    ups = list(getattr(layer, "pa_kernels_b", []))
    if hasattr(layer, "lr_kernel_a"):
        downs.append(layer.lr_kernel_a)
        ups.append(layer.lr_kernel_b)
    fold = len(keep) < layer.rank and bool(downs)
    for a, b in zip(downs, ups):
        a_new = _take(value(a), keep, 0)
        b_new = _take(value(b), keep, 1)
        if fold:
            b_new = a_new @ b_new
            a_new = np.eye(len(keep), dtype=b_new.dtype)
        new[id(a)], new[id(b)] = a_new, b_new
    if fold:
        config["rank"] = len(keep)
    return new
