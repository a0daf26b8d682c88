"""Structural removal: a smaller model without the zeroed units.

Pruning with `structure="filter"` leaves a model of the same shape with
zeros in it; `shrink` removes those units for real, so the model gets
fewer parameters and FLOPs and runs faster. Channels that are added,
concatenated or mixed together (residual `Add`, `Concatenate`,
`LaurelResidual`) form one *group* (the dependency-graph idea of
Torch-Pruning, Fang et al., CVPR 2023; see `graph.py`) and are removed
together: a channel goes only where it is zero in every tensor of its
group, so the smaller model computes exactly what the masked one does.
"""

import keras
import numpy as np

from keras_efficient._validation import check_choice
from keras_efficient._validation import check_fraction
from keras_efficient._validation import check_instance
from keras_efficient._validation import fail
from keras_efficient.pruning import graph
from keras_efficient.pruning import transformer_width
from keras_efficient.pruning import units
from keras_efficient.pruning.masks import keep_count

IMPORTANCES = ("l1", "l2", "bn_scale")


class UnitGroup:
    """Units removed together: coupled channels, or one layer's heads."""

    def __init__(
        self,
        name: str,
        size: int,
        analysis: "Analysis",
        gid: int | None = None,
        node: graph.Node | None = None,
    ):
        self.name, self.size = name, size
        self.analysis, self.gid, self.node = analysis, gid, node
        self.members = []  # (node, offset) of every tensor in the group


class Analysis:
    """The channel groups of one (possibly nested) model."""

    def __init__(self, model: keras.Model, prefix: str = ""):
        self.model = model
        config, nodes, inputs, outputs, seq = graph.read_graph(model)
        self.config, self.nodes, self.sequential = config, nodes, seq
        self.groups = graph.Groups()
        widths = graph.input_widths(model)
        self.layouts = graph.trace_layouts(nodes, inputs, widths, self.groups)
        for ref in outputs:
            self.groups.lock(self.layouts[ref])
        self.inputs = inputs
        self.children, self.transformers = [], []
        for node in nodes:
            if node.kind != "container":
                continue
            if transformer_width.is_nested_transformer(node.layer):
                self.transformers.append(node)  # shrunk by width removal
                continue
            inner = graph.nested_models(node.layer)
            if isinstance(node.layer, keras.Model):
                inner = [(None, node.layer)]
            for key, m in inner:
                sub = f"{prefix}{node.layer.name}/"
                if m is not node.layer:
                    sub += f"{m.name}/"
                self.children.append((node, key, Analysis(m, sub)))
        self.unit_groups = self._collect(prefix)

    def _collect(self, prefix):
        by_root = {}
        out = []
        for node in self.nodes:
            offset = 0
            for gid, size in node.out_layout:
                root = self.groups.find(gid)
                if not self.groups.locked[root]:
                    if root not in by_root:
                        name = prefix + node.layer.name
                        by_root[root] = UnitGroup(name, size, self, gid=root)
                        out.append(by_root[root])
                    by_root[root].members.append((node, offset))
                offset += size
            if node.kind == "attention":
                heads = node.layer.num_heads
                name = f"{prefix}{node.layer.name}/heads"
                out.append(UnitGroup(name, heads, self, node=node))
        for _, _, child in self.children:
            out.extend(child.unit_groups)
        return out

    def zeros(self) -> dict:
        """Which channels of every tensor are identically zero."""
        zero = {}
        for ref in self.inputs:
            zero[ref] = np.zeros(sum(n for _, n in self.layouts[ref]), bool)
        for node in self.nodes:
            ins = [zero[r] for r in node.inputs]
            z = units.zero_outputs(node, ins)
            for ref in node.outputs:
                width = sum(n for _, n in self.layouts[ref])
                zero[ref] = z if len(z) == width else np.zeros(width, bool)
        return zero


def removable(group: UnitGroup, zero: dict) -> bool:
    """Units of `group` that are zero everywhere (boolean vector)."""
    if group.node is not None:
        return units.head_zero(group.node.layer)
    out = np.ones(group.size, bool)
    for node, offset in group.members:
        out &= zero[node.outputs[0]][offset : offset + group.size]
    return out


def group_scores(group: UnitGroup, importance: str) -> np.ndarray:
    """Importance of each unit of a group (summed over its producers)."""
    if group.node is not None:
        return units.head_scores(group.node.layer, importance)
    total = np.zeros(group.size)
    for node, offset in group.members:
        s = units.scores(node, importance)
        if s is not None:
            total += s[offset : offset + group.size]
    return total


def zero_group(group: UnitGroup, channels: np.ndarray) -> None:
    """Zero `channels` of `group` in the model's variables (in place)."""
    channels = np.asarray(channels, int)
    if group.node is not None:
        units.zero_heads(group.node.layer, channels)
        return
    for node, offset in group.members:
        units.zero_channels(node, channels + offset)


def select_units(
    group: UnitGroup, sparsity: float, importance: str
) -> np.ndarray:
    """The `n - k` least important units, `k = max(round(n (1 - s)), 1)`."""
    if sparsity <= 0:
        return np.zeros(0, int)
    scores = group_scores(group, importance)
    k = keep_count(group.size, sparsity)
    order = np.argsort(scores, kind="stable")
    return np.sort(order[: group.size - k])


def find_groups(model: keras.Model) -> dict[str, int]:
    """The prunable unit groups of a model: `{name: size}`.

    Each group is named after its first layer (a prefix `outer/inner/`
    for layers inside a container layer); attention heads are named
    `"{layer}/heads"`. Groups that touch the model inputs or outputs or a
    normalisation over channels are kept whole and not listed.

    Example:

    ```python
    import keras
    from keras_efficient.pruning.shrink import find_groups

    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    assert find_groups(model) == {"hidden": 16}
    ```
    """
    check_instance("model", model, keras.Model, "a keras.Model")
    return {g.name: g.size for g in Analysis(model).unit_groups}


def _ratios(groups, ratio):
    if isinstance(ratio, dict):
        names = {g.name for g in groups}
        for name in ratio:
            if name not in names:
                fail("ratio", f"a dict keyed by group names {sorted(names)}",
                     ratio)  # fmt: skip
        return {
            g.name: check_fraction(f"ratio[{g.name!r}]", ratio.get(g.name, 0))
            for g in groups
        }
    ratio = check_fraction("ratio", ratio)
    return {g.name: ratio for g in groups}


def zero_units(
    model: keras.Model,
    ratio: float | dict[str, float] | None,
    importance: str = "l1",
) -> keras.Model:
    """A copy of `model` with the least important units of each group zeroed.

    Selects, per group (see `find_groups`), the `n - k` units of smallest
    importance, `k = max(round(n * (1 - ratio)), 1)`, and zeroes every
    parameter that makes them zero (producer kernel columns and biases,
    batch-norm scale and offset, LAuReL up-projection columns, the value
    and output projections of attention heads). `shrink` of the result
    removes them exactly.

    Args:
        model: a functional or Sequential `keras.Model` (left untouched).
        ratio: fraction of units to zero in every group, or a dict
            `{group name: fraction}` (other groups are kept).
        importance: `"l1"` / `"l2"` norm of the producers' kernel columns
            summed over the group, or `"bn_scale"` (|gamma| of the batch
            norms in the group, as in network slimming).

    Returns:
        A new `keras.Model` with the same architecture.

    Example:

    ```python
    import keras
    from keras_efficient.pruning.shrink import zero_units

    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    masked = zero_units(model, 0.5)
    ```
    """
    check_instance("model", model, keras.Model, "a keras.Model")
    check_choice("importance", importance, IMPORTANCES)
    graph.check_readable(model)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    groups = Analysis(copy).unit_groups
    ratios = _ratios(groups, ratio)
    for group in groups:
        channels = select_units(group, ratios[group.name], importance)
        if len(channels):
            zero_group(group, channels)
    return copy


def _keeps(analysis):
    """Kept channels of each group and kept heads of each attention."""
    zero = analysis.zeros()
    keep, heads = {}, {}
    for group in analysis.unit_groups:
        if group.analysis is not analysis:
            continue
        kept = np.flatnonzero(~removable(group, zero))
        kept = kept if len(kept) else np.zeros(1, int)
        if group.node is not None:
            heads[id(group.node)] = kept
        else:
            keep[group.gid] = kept
    return keep, heads


def _shrink_config(analysis, ratio, importance):
    """The edited config of one model and `{id(variable): new value}`.

    A keras-hub model inside is shrunk by `transformer_width.shrink_nested`
    with a float `ratio` (None otherwise: its zeroed units go)."""
    keep, heads = _keeps(analysis)
    groups = analysis.groups

    def keep_of(ref):
        parts, offset = [], 0
        for gid, size in analysis.layouts[ref]:
            kept = keep.get(groups.find(gid), np.arange(size))
            parts.append(kept + offset)
            offset += size
        return np.concatenate(parts) if parts else np.zeros(0, int)

    new = {}
    for node in analysis.nodes:
        node.config.pop("build_config", None)
        node_heads = heads.get(id(node))
        new.update(units.slice_node(node, keep_of, node_heads))
    for node in analysis.transformers:
        nested_ratio = None if isinstance(ratio, dict) else ratio
        small = transformer_width.shrink_nested(
            node.layer, nested_ratio, importance
        )
        node.config["config"] = small.get_config()
        for old, variable in zip(node.layer.weights, small.weights):
            new[id(old)] = units.value(variable)
    for node, key, child in analysis.children:
        config, values = _shrink_config(child, ratio, importance)
        new.update(values)
        config["name"] = child.model.name
        if key is None:  # the layer is itself a nested model
            node.config["config"] = config
        else:
            node.config["config"][key]["config"] = config
    return analysis.config, new


def shrink(
    model: keras.Model,
    ratio: float | dict[str, float] | None = None,
    importance: str = "l1",
    *,
    ffn_ratio: float | None = None,
    head_ratio: float | None = None,
    hidden_ratio: float | None = None,
    scores: dict | None = None,
    uniform: bool = True,
) -> keras.Model:
    """A new, smaller model without the zeroed units of `model`.

    Removes every output unit (Dense unit, convolution filter, embedding
    dimension, attention head) that is zero in every tensor of its group,
    together with the matching batch-norm channels, depthwise channels,
    LAuReL projection rows / columns and the input rows of every consumer.
    Coupled channels (residual `Add`, `Concatenate`, `LaurelResidual`, ...)
    are found by walking the functional graph and removed as one group.
    The model's inputs, outputs and channels normalised by a
    `LayerNormalization` / `RMSNormalization` are kept whole (removing a
    channel would change the normalisation statistics). Layers holding a
    nested Keras model (e.g. a Transformer block's feed-forward network)
    are shrunk inside; a keras-hub task or backbone inside keeps its
    hidden width (the enclosing model's interface) and loses feed-forward
    neurons, and heads where its config holds the head size (see
    `transformer_width.shrink_nested`). A LAuReL rank above the new width
    is folded exactly into a smaller rank.

    The smaller model computes what `model` computes (up to float
    rounding). With `ratio`, the units are first selected and zeroed by
    `zero_units(model, ratio, importance)`. The argument is never changed.

    Args:
        model: a functional or Sequential `keras.Model` (a subclass built
            with the functional API, like `TransformerLM`, comes back as a
            plain functional model).
        ratio: `None` (remove the units that are already zero), a fraction
            in `[0, 1)` for every group, or `{group name: fraction}` (e.g.
            from `sparsity_policy`).
        importance: how `ratio` selects units: `"l1"`, `"l2"`, `"bn_scale"`.
        ffn_ratio, head_ratio, hidden_ratio: Transformers only (a
            keras-hub task or backbone, a `TransformerLM`): the fraction
            of feed-forward neurons, attention heads (key / value groups)
            or hidden channels removed, over `ratio`. A Transformer comes
            back as the same class with smaller widths; see
            `transformer_width` for what each class can express.
        scores: Transformers only: importance scores `{"ffn": [array per
            layer], "heads": [...], "hidden": array}` used in place of the
            weight magnitude (e.g. activation norms from calibration).
        uniform: Transformers only: `True` removes the same share of
            feed-forward neurons and heads from every layer; `False` (a
            `TransformerLM`, whose config holds a width per layer) keeps
            the largest units across all layers, so each layer ends with
            the width its scores earn (see `select_transformer_units`).

    Returns:
        A new, uncompiled `keras.Model`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_efficient.pruning.shrink import shrink

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    small = shrink(model, ratio=0.5)
    assert small.get_layer("conv").filters == 8
    ```
    """
    check_instance("model", model, keras.Model, "a keras.Model")
    widths = (ffn_ratio, head_ratio, hidden_ratio, scores)
    if transformer_width.takes(model, ratio, *widths, uniform=uniform):
        return transformer_width.shrink_by_ratio(
            model, ratio, importance, *widths, uniform=uniform
        )
    check_choice("importance", importance, IMPORTANCES)
    graph.check_readable(model)
    if ratio is not None:
        model = zero_units(model, ratio, importance)
    analysis = Analysis(model)
    config, new = _shrink_config(analysis, ratio, importance)
    config["name"] = model.name
    cls = keras.Sequential if analysis.sequential else keras.Model
    small = cls.from_config(config)
    for layer in model.layers:
        if layer.weights:
            values = [new.get(id(v), units.value(v)) for v in layer.weights]
            small.get_layer(layer.name).set_weights(values)
    return small
