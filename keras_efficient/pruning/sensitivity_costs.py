"""What one unit of a sensitivity group costs (private to sensitivity).

`unit_costs` gives the parameters and FLOPs one unit of a channel group (or
one weight of a `KernelGroup`) costs; `cost_terms` says, layer by layer, how
the model's size follows the groups, which `sparsity_policy` reads to meet
a parameter or FLOP budget.
"""

import keras
import numpy as np

from keras_efficient.pruning.cost import layer_flops
from keras_efficient.pruning.shrink import Analysis
from keras_efficient.pruning.shrink import UnitGroup


class KernelGroup:
    """One prunable kernel no channel group covers (inside a subclassed
    layer, a keras-hub model, ...), named by `variable.path`; analysed with
    `structure="unstructured"`."""

    def __init__(self, layer: keras.Layer, kernel: keras.Variable):
        self.name, self.layer, self.kernel = kernel.path, layer, kernel
        self.size = int(np.prod(kernel.shape))
        self.node, self.members = None, []


def _share(layer, rows, kernels_only=False):
    """(params, flops) per unit of a kernel axis of size `rows` (an input
    unit owns kernel rows only, not biases)."""
    params = sum(
        int(np.prod(w.shape))
        for w in layer.weights
        if len(w.shape) > 1 or not kernels_only
    )
    return params / rows, layer_flops(layer) / rows


def unit_costs(group: UnitGroup) -> tuple[float, float]:
    """Parameters and FLOPs (per example) one unit of `group` costs."""
    if isinstance(group, KernelGroup):  # a unit is one weight
        return 1.0, layer_flops(group.layer) / max(group.size, 1)
    if group.node is not None:
        layer = group.node.layer
        return _share(layer, group.size)
    params = flops = 0.0
    roots = group.analysis.groups
    for node in group.analysis.nodes:
        layer = node.layer
        produced = any(n is node for n, _ in group.members)
        if produced and node.kind in ("producer", "attention"):
            p, f = _share(layer, layer.output.shape[-1])
        elif produced and layer.weights:
            p, f = _share(layer, layer.output.shape[-1])
        else:
            count = sum(
                size
                for layout in node.in_layouts
                for gid, size in layout
                if roots.find(gid) == group.gid
            )
            if not count or not layer.weights or node.kind == "merge":
                continue
            width = sum(n for layout in node.in_layouts for _, n in layout)
            p, f = _share(layer, width, kernels_only=True)
            p, f = p * count / group.size, f * count / group.size
        params, flops = params + p, flops + f
    return params, flops


def _parts(analysis, layout, names):
    """`[(group name or None, share of the width)]` of a layout."""
    width = sum(n for _, n in layout) or 1
    return [(names.get(analysis.groups.find(g)), n / width) for g, n in layout]


def cost_terms(analysis: Analysis) -> list[dict]:
    """One term per layer with weights: how its size follows the groups.

    A producer's kernel shrinks with its input and output groups (`in x
    out`), its bias with the output; a batch norm, depthwise or LAuReL
    layer shrinks linearly with its channel group; attention with its
    heads. Layers of nested models are included.
    """
    names = {
        g.gid: g.name for g in analysis.unit_groups if g.analysis is analysis
    }
    heads = {
        id(g.node): g.name for g in analysis.unit_groups if g.node is not None
    }
    terms = []
    for node in analysis.nodes:
        layer = node.layer
        if not layer.weights or node.kind in ("container", "locking"):
            continue
        out = _parts(analysis, node.out_layout, names)
        ins = _parts(analysis, node.in_layouts[0], names)
        if node.kind == "attention":
            ins, out = [(None, 1.0)], [(heads.get(id(node)), 1.0)]
        linear = node.kind != "producer"
        kernels = sum(
            int(np.prod(w.shape)) for w in layer.weights if len(w.shape) > 1
        )
        for w in layer.weights:
            size, vector = int(np.prod(w.shape)), len(w.shape) < 2
            flops = 0.0 if vector else layer_flops(layer) * size / kernels
            inputs = None if linear or vector else ins
            term = {"params": size, "flops": flops, "outputs": out}
            terms.append(dict(term, inputs=inputs))
    for _, _, child in analysis.children:
        terms.extend(cost_terms(child))
    return terms
