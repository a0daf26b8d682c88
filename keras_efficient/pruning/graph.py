"""The channel dependency graph behind `shrink` and `sensitivity` (private).

The idea is Torch-Pruning's dependency graph (Fang et al., "DepGraph",
CVPR 2023): channels that must be removed together form one *group*.
Every tensor's last (channel) axis is described by a *layout*, a list of
segments `(group id, size)`: a `Dense` / `Conv` / `Embedding` output starts
a new group; element-wise layers (batch norm, activations, pooling,
dropout, a depthwise convolution) pass their input layout through; `Add`,
`Multiply`, ... and `LaurelResidual` unite the groups of their inputs (the
channels are added one to one); `Concatenate` on the channel axis chains
the input layouts; `Flatten` repeats its input layout once per position.

The graph is read through public Keras API only: the functional config
of `keras.Model(model.inputs, model.outputs).get_config()` (each layer's
`inbound_nodes` name the producing layer of every input through the
serialised tensors' `keras_history`), or the layer list of a
`keras.Sequential` config; layer objects come from `model.get_layer`.
Layers that hold a whole nested Keras model in their config (e.g. a
Transformer block's feed-forward `Sequential`) are *containers*: their
interface stays as it is and the nested model is analysed on its own.
"""

from typing import Any

import keras
import numpy as np

from keras_efficient.layers.laurel import LaurelResidual

L = keras.layers
PRODUCERS = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D, L.Embedding)
SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
ELEMENTWISE = (
    L.BatchNormalization, L.Activation, L.ReLU, L.LeakyReLU, L.ELU,
    L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
    L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.Identity,
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D,
    L.AveragePooling2D, L.AveragePooling3D, L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D,
    L.Cropping2D, L.Cropping3D, L.UpSampling1D, L.UpSampling2D,
    L.UpSampling3D,
)  # fmt: skip
MERGES = (
    L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum, L.Multiply,
    LaurelResidual,
)  # fmt: skip
# Normalisations over the channel axis: removing a channel, even a zero
# one, changes their mean / variance, so their group is never pruned.
LOCKING = (
    L.LayerNormalization, L.RMSNormalization, L.GroupNormalization,
    L.UnitNormalization, L.Softmax,
)  # fmt: skip
SUPPORTED = (
    "Dense, Conv1D/2D/3D, SeparableConv1D/2D, DepthwiseConv1D/2D "
    "(depth_multiplier=1), Embedding, MultiHeadAttention (heads), "
    "BatchNormalization, element-wise layers (activations, dropout, "
    "pooling, padding, cropping, up-sampling), Add/Subtract/Average/"
    "Maximum/Minimum/Multiply, Concatenate, Flatten, LaurelResidual, "
    "LayerNormalization/RMSNormalization (their group is kept whole) and "
    "layers holding a nested Keras model (shrunk inside)"
)


class Node:
    """One call of a layer: its inputs and outputs as tensor references."""

    def __init__(
        self,
        layer: keras.Layer,
        config: dict,
        args: list,
        named: dict,
        outputs: list,
    ):
        self.layer = layer
        self.config = config  # the layer's config dict, edited in place
        self.args = args  # positional arguments: a list of refs each
        self.named = named  # call kwargs name -> list of refs
        self.inputs = [r for refs in args for r in refs]
        self.inputs += [r for refs in named.values() for r in refs]
        self.outputs = outputs  # refs (layer name, node, tensor)


class Groups:
    """Union-find over channel groups, with sizes and a `locked` flag."""

    def __init__(self):
        self.parent, self.size, self.locked = [], [], []

    def new(self, size: int, locked: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.size.append(int(size))
        self.locked.append(bool(locked))
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.locked[a] = self.locked[a] or self.locked[b]
        return a

    def lock(self, layout: list) -> None:
        for g, _ in layout:
            self.locked[self.find(g)] = True


def _flatten_refs(value):
    """Tensor references in a serialised call argument, in order."""
    if isinstance(value, dict) and value.get("class_name") == (
        "__keras_tensor__"
    ):
        return [tuple(value["config"]["keras_history"])]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _flatten_refs(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _flatten_refs(v)]
    return []


class UnreadableGraphError(ValueError):
    """The channel graph of a model cannot be read (a subclassed model,
    shared layers, a layer `shrink` does not handle, ...)."""


def _as_refs(spec):
    if isinstance(spec, dict):  # dict inputs, flattened as `model.inputs`
        return [tuple(spec[key]) for key in sorted(spec)]
    spec = list(spec)
    if spec and isinstance(spec[0], (list, tuple)):
        return [tuple(s) for s in spec]
    return [tuple(spec)]


def check_readable(model: keras.Model) -> None:
    """A Sequential model, or one with known inputs (not subclassed)."""
    if isinstance(model, keras.Sequential) or getattr(model, "inputs", None):
        return
    raise UnreadableGraphError(
        "`model` must be a functional or Sequential model with known "
        "inputs: `shrink` reads its layer graph to find which channels "
        "go together. Received: model="
        f"{model.name!r} of class {type(model).__name__} without inputs "
        "(a subclassed model? rebuild it as keras.Model(inputs, outputs))."
    )


def read_graph(model: keras.Model) -> tuple:
    """`(config, nodes, input refs, output refs, is_sequential)`.

    A functional model is read from the config of
    `keras.Model(model.input, model.output)` (the same layers, as a plain
    functional model, so subclasses like `TransformerLM` work too).
    """
    if isinstance(model, keras.Sequential):
        config = model.get_config()
        nodes, previous = [], ("__input__", 0, 0)
        for layer_config in config["layers"]:
            if layer_config["class_name"] == "InputLayer":
                continue
            layer = model.get_layer(layer_config["config"]["name"])
            ref = (layer.name, 0, 0)
            nodes.append(Node(layer, layer_config, [[previous]], {}, [ref]))
            previous = ref
        return config, nodes, [("__input__", 0, 0)], [previous], True
    # A subclassed model has no `inputs` attribute at all.
    check_readable(model)
    config = keras.Model(model.input, model.output).get_config()
    nodes = []
    for layer_config in config["layers"]:
        inbound = layer_config.get("inbound_nodes") or []
        name = layer_config["name"]
        if len(inbound) > 1:
            raise UnreadableGraphError(
                f"`shrink` does not handle shared layers: layer {name!r} is "
                f"called {len(inbound)} times."
            )
        if not inbound:
            continue
        call = inbound[0]
        named = {k: _flatten_refs(v) for k, v in call["kwargs"].items()}
        args = [_flatten_refs(a) for a in call["args"]]
        layer = model.get_layer(name)
        refs = [(name, 0, i) for i in range(_output_count(layer))]
        nodes.append(Node(layer, layer_config, args, named, refs))
    inputs = _as_refs(config["input_layers"])
    outputs = _as_refs(config["output_layers"])
    return config, nodes, inputs, outputs, False


def _output_count(layer):
    """Tensors one call of `layer` returns (a keras-hub backbone may return
    a dict of them, e.g. BERT's sequence and pooled outputs)."""
    try:
        return len(keras.tree.flatten(layer.output))
    except (AttributeError, ValueError):
        return 1


def nested_models(layer: keras.Layer) -> list:
    """`[(config key, nested keras.Model)]` of a container layer.

    Found through the layer's config: an entry holding a serialised Keras
    model whose constructor argument the layer keeps as an attribute of the
    same name (the package's convention for every constructor argument).
    """
    if isinstance(layer, keras.Model):
        return []
    out = []
    for key, entry in layer.get_config().items():
        if isinstance(entry, dict) and "layers" in entry.get("config", {}):
            inner = getattr(layer, key, None)
            if isinstance(inner, keras.Model):
                out.append((key, inner))
    return out


def kind_of(layer: keras.Layer) -> str:
    """How a layer maps its input channels to its output channels."""
    if getattr(layer, "data_format", None) == "channels_first":
        raise UnreadableGraphError(
            f"`shrink` handles channels-last layers only. Layer "
            f"{layer.name!r} has data_format='channels_first'."
        )
    if isinstance(layer, L.MultiHeadAttention):
        return "attention"
    if isinstance(layer, SEPARABLE):
        return "producer"
    if isinstance(layer, DEPTHWISE):
        if layer.depth_multiplier != 1:
            raise UnreadableGraphError(
                f"`shrink` handles depthwise layers with depth_multiplier=1 "
                f"only. Layer {layer.name!r} has "
                f"depth_multiplier={layer.depth_multiplier}."
            )
        return "elementwise"
    if isinstance(layer, PRODUCERS):
        if getattr(layer, "groups", 1) != 1 or getattr(
            layer, "lora_enabled", False
        ):
            raise UnreadableGraphError(
                f"`shrink` does not handle grouped or LoRA layers. Layer "
                f"{layer.name!r} ({type(layer).__name__})."
            )
        return "producer"
    if isinstance(layer, L.BatchNormalization) and layer.axis not in (-1,):
        return "locking"
    if isinstance(layer, ELEMENTWISE):
        return "elementwise"
    if isinstance(layer, MERGES):
        return "merge"
    if isinstance(layer, L.Concatenate):
        return "concat"
    if isinstance(layer, L.Flatten):
        return "flatten"
    if isinstance(layer, LOCKING):
        return "locking"
    if nested_models(layer) or isinstance(layer, keras.Model):
        return "container"
    raise UnreadableGraphError(
        f"`shrink` cannot handle layer {layer.name!r} of type "
        f"{type(layer).__name__}. Supported: {SUPPORTED}."
    )


def _unite(groups, layouts, name):
    """Unite layouts added one to one; mismatched segments are locked."""
    first = layouts[0]
    for other in layouts[1:]:
        same = len(other) == len(first) and all(
            a[1] == b[1] for a, b in zip(first, other)
        )
        if not same:
            for layout in layouts:
                groups.lock(layout)
            continue
        for (a, _), (b, _) in zip(first, other):
            groups.union(a, b)
    return first


def _concat_layout(node, layouts, groups):
    axis = node.layer.axis
    rank = len(node.layer.output.shape)
    node.channel_concat = axis in (-1, rank - 1)
    if node.channel_concat:
        return [s for layout in layouts for s in layout]
    return _unite(groups, layouts, node.layer.name)


def _flatten_layout(node, layout):
    shape = node.layer.input.shape
    positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
    if any(d is None for d in shape[1:]):
        raise UnreadableGraphError(
            f"`shrink` needs the static input shape of Flatten layer "
            f"{node.layer.name!r}. Received: {shape}."
        )
    return layout * positions


def trace_layouts(
    nodes: list, inputs: list, widths: list, groups: Groups
) -> Any:
    """Layout of every tensor: `{ref: [(group, size), ...]}`.

    The model inputs are locked groups (the interface stays), and so are
    the inputs and outputs of normalisations and containers.
    """
    layouts = {}
    for ref, n in zip(inputs, widths):
        layouts[ref] = [(groups.new(n, locked=True), n)]
    for node in nodes:
        node.kind = kind = kind_of(node.layer)
        ins = [layouts[ref] for ref in node.inputs]
        node.in_layouts = ins
        if kind in ("producer", "attention"):
            n = int(node.layer.output.shape[-1])
            out = [(groups.new(n), n)]
        elif kind == "elementwise":
            out = ins[0]
        elif kind == "merge":
            out = _unite(groups, ins, node.layer.name)
        elif kind == "concat":
            out = _concat_layout(node, ins, groups)
        elif kind == "flatten":
            out = _flatten_layout(node, ins[0])
        else:  # locking, container: each output a locked group of its own
            for layout in ins:
                groups.lock(layout)
            if kind == "locking":
                groups.lock(ins[0])
                out = ins[0]
            else:
                widths = [_width(t.shape) for t in tree_outputs(node.layer)]
                outs = [[(groups.new(n, locked=True), n)] for n in widths]
                out = outs[0]
                for ref, layout in zip(node.outputs, outs):
                    layouts[ref] = layout
        node.out_layout = out
        for ref in node.outputs:
            layouts.setdefault(ref, out)
    return layouts


def tree_outputs(layer: keras.Layer) -> list:
    """The output tensors of a layer called once, flattened."""
    return keras.tree.flatten(layer.output)


def _width(shape):
    return int(shape[-1]) if len(shape) > 1 and shape[-1] is not None else 1


def input_widths(model: keras.Model) -> list:
    """Channel widths of the model inputs."""
    return [_width(t.shape) for t in model.inputs]
