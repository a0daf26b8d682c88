"""Sensitivity analysis: prune one group at a time, see what it costs.

Each layer (or coupled channel group, see `shrink.find_groups`) is pruned
alone at each sparsity, the model is evaluated on the user's validation
data and the weights are restored. The table tells which layers tolerate
pruning; `sparsity_policy` turns it into per-layer sparsities.
"""

import os
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_efficient._data_checks import check_evaluation_data
from keras_efficient._validation import check_choice
from keras_efficient._validation import check_fraction
from keras_efficient._validation import check_instance
from keras_efficient._validation import check_int
from keras_efficient._validation import check_positive_int
from keras_efficient._validation import fail
from keras_efficient.pruning import graph
from keras_efficient.pruning import units
from keras_efficient.pruning.cost import layer_flops
from keras_efficient.pruning.masks import compute_masks
from keras_efficient.pruning.masks import keep_count
from keras_efficient.pruning.sensitivity_costs import KernelGroup
from keras_efficient.pruning.sensitivity_costs import cost_terms
from keras_efficient.pruning.sensitivity_costs import unit_costs
from keras_efficient.pruning.shrink import IMPORTANCES
from keras_efficient.pruning.shrink import Analysis
from keras_efficient.pruning.shrink import select_units
from keras_efficient.pruning.shrink import zero_group
from keras_efficient.pruning.targets import find_target_weights

STRUCTURES = ("filter", "unstructured")
COLUMNS = ("layer", "sparsity", "metric", "drop", "params", "flops")


class SensitivityTable(dict):
    """Columns `layer, sparsity, metric, drop, params, flops` (lists of
    equal length; `pandas.DataFrame(table)` reads it as is), plus
    `base_metric`, `total_params` and `total_flops` of the dense model.
    `params` / `flops` are what removing that fraction of the group's
    units alone saves. `terms` (one per layer with weights: its params
    and FLOPs and the groups its input and output units belong to) lets
    `sparsity_policy` count the savings of several groups together
    exactly (a kernel between two pruned groups shrinks on both axes)."""

    def __init__(
        self,
        base_metric: float,
        total_params: int,
        total_flops: float,
        terms: list | None = None,
        sizes: dict | None = None,
    ):
        super().__init__({c: [] for c in COLUMNS})
        self.base_metric = base_metric
        self.total_params = total_params
        self.total_flops = total_flops
        self.terms = terms
        self.group_sizes = sizes or {}

    def rows(self) -> list[dict]:
        """The table as a list of dicts, one per (layer, sparsity)."""
        return [dict(zip(self, values)) for values in zip(*self.values())]


def _evaluate(model, x, y, metric, batch_size):
    y_pred = model.predict(x, batch_size=batch_size, verbose=0)
    if metric == "accuracy":
        y_true = np.asarray(y)
        if y_true.ndim == y_pred.ndim and y_true.shape[-1] > 1:
            y_true = y_true.argmax(-1)
        return float(np.mean(y_pred.argmax(-1) == y_true.reshape(-1)))
    if isinstance(metric, keras.metrics.Metric):
        metric.reset_state()
        metric.update_state(y, y_pred)
        return float(keras.ops.convert_to_numpy(metric.result()))
    return float(metric(y, y_pred))


def _variables(group):
    if isinstance(group, KernelGroup):
        return [group.kernel]
    layers = [node.layer for node, _ in group.members]
    if group.node is not None:
        layers = [group.node.layer]
    return [v for layer in layers for v in layer.weights]


def _prune(group, sparsity, structure, importance):
    if structure == "filter":
        zero_group(group, select_units(group, sparsity, importance))
        return
    layers = [n.layer for n, _ in group.members if n.kind == "producer"]
    if group.node is not None:
        layers = [group.node.layer.output_dense]
    kernels = [getattr(layer, "kernel", None) for layer in layers]
    # A separable convolution or embedding keeps its own output kernel.
    kernels = [
        k if k is not None else units.out_kernel(layer)[0]
        for k, layer in zip(kernels, layers)
    ]
    if isinstance(group, KernelGroup):
        kernels = [group.kernel]
    for kernel in kernels:
        mask = compute_masks([units.value(kernel)], sparsity, "unstructured")
        kernel.assign(units.value(kernel) * mask[0])


def _check(model, sparsities, metric, structure, importance, verbose):
    """The arguments of `sensitivity_analysis` checked; the sorted
    sparsities."""
    check_instance("model", model, keras.Model, "a keras.Model")
    if isinstance(sparsities, (int, float)) or not len(sparsities):
        fail("sparsities", "a non-empty list of fractions in [0, 1)",
             sparsities)  # fmt: skip
    sparsities = sorted(check_fraction("sparsities", s) for s in sparsities)
    if (
        metric != "accuracy"
        and not callable(metric)
        and not isinstance(metric, keras.metrics.Metric)
    ):
        fail("metric", '"accuracy", a keras.metrics.Metric or a callable',
             metric)  # fmt: skip
    check_choice("structure", structure, STRUCTURES)
    check_choice("importance", importance, IMPORTANCES)
    check_int("verbose", verbose, 0, 2)
    return sparsities


def sensitivity_analysis(
    model: keras.Model,
    x_val: np.ndarray,
    y_val: np.ndarray,
    sparsities: Sequence[float] = (0.25, 0.5, 0.75),
    groups: Sequence[str] | None = None,
    metric: str | Callable | keras.metrics.Metric = "accuracy",
    structure: str = "filter",
    importance: str = "l1",
    batch_size: int = 256,
    verbose: int = 1,
) -> "SensitivityTable":
    """Prune each layer (coupled group) alone and measure the metric drop.

    For every group of `find_groups(model)` and every sparsity, the group
    is pruned in place (`"filter"`: its least important units zeroed as
    `zero_units` would; `"unstructured"`: the smallest weights of its
    kernels), the model is evaluated on `(x_val, y_val)` and the weights
    are restored, so `model` ends as it began.

    With `structure="unstructured"`, every prunable kernel no channel
    group covers (inside a subclassed layer or a keras-hub model; any
    kernel of a subclassed model) is analysed too, named by its
    `variable.path`.

    Args:
        model: a functional or Sequential `keras.Model` (any model with
            `structure="unstructured"`).
        x_val, y_val: validation data (NumPy arrays, or a dict of them)
            with the same number of rows, at least one; with
            `metric="accuracy"`, `y_val` holds class ids in `[0, classes)`
            (0-based) or one-hot rows.
        sparsities: fractions of units (weights) to prune.
        groups: names of the groups to analyse (default: all).
        metric: `"accuracy"` (top-1; integer or one-hot labels), a
            `keras.metrics.Metric`, or a callable `(y_true, y_pred) ->
            float`; higher is better, `drop = base - metric`.
        structure: `"filter"` or `"unstructured"`.
        importance: unit importance for `"filter"` (`"l1"`, `"l2"`,
            `"bn_scale"`).
        batch_size: prediction batch size.
        verbose: 0 (silent), 1 (progress bar) or 2 (one line at the end).

    Returns:
        A `SensitivityTable` (columns `layer`, `sparsity`, `metric`,
        `drop`, `params`, `flops`).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_efficient.pruning.sensitivity import sensitivity_analysis

    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    x_val, y_val = np.random.rand(32, 8), np.random.randint(0, 3, 32)
    table = sensitivity_analysis(model, x_val, y_val, verbose=0)
    assert table["layer"] == ["hidden"] * 3
    ```
    """
    sparsities = _check(
        model, sparsities, metric, structure, importance, verbose
    )
    batch_size = check_positive_int("batch_size", batch_size)
    check_evaluation_data(model, x_val, y_val, metric)
    found, terms = _analyse(model, structure)
    found = _selected_groups(found, groups)

    def evaluate():
        return _evaluate(model, x_val, y_val, metric, batch_size)

    base = evaluate()
    table = SensitivityTable(
        base,
        int(model.count_params()),
        sum(layer_flops(layer) for layer in model.layers),
        terms,
        {g.name: g.size for g in found},
    )
    bar = keras.utils.Progbar(len(found) * len(sparsities), verbose=verbose)
    for group in found:
        for sparsity, value, params, flops in _pruned_metrics(
            group, sparsities, structure, importance, evaluate, bar
        ):
            row = (group.name, sparsity, value, base - value, params, flops)
            for column, entry in zip(COLUMNS, row):
                table[column].append(entry)
    return table


def _analyse(model, structure):
    """The groups to prune one at a time, and the table's cost terms.

    `"unstructured"` adds every prunable kernel (found as `MagnitudePruning`
    finds them) that no channel group covers, and takes all of them when
    the graph cannot be read (a subclassed model, keras-hub layers)."""
    try:
        analysis = Analysis(model)
    except graph.UnreadableGraphError as e:
        if structure == "filter":
            fail(
                "structure",
                '"unstructured" for a model whose channel graph cannot be '
                f"read ({e})",
                structure,
            )
        analysis = None
    found = analysis.unit_groups if analysis is not None else []
    if structure == "unstructured":
        covered = {id(v) for g in found for v in _variables(g)}
        extra = [
            KernelGroup(layer, kernel)
            for layer, kernel in find_target_weights(model)
            if id(kernel) not in covered
        ]
        if extra or analysis is None:  # savings add up, kernel by kernel
            return found + extra, None
    return found, cost_terms(analysis)


def _selected_groups(found, names):
    """The groups named in `names` (None: all), checked."""
    if names is None:
        return found
    known = [g.name for g in found]
    for name in names:
        check_choice("groups", name, known)
    return [g for g in found if g.name in set(names)]


def _pruned_metrics(group, sparsities, structure, importance, evaluate, bar):
    """`(sparsity, metric, params saved, FLOPs saved)` per sparsity, with
    `group` alone pruned; its weights are restored after each."""
    saved = [(v, units.value(v)) for v in _variables(group)]
    per_params, per_flops = unit_costs(group)
    out = []
    for s in sparsities:
        _prune(group, s, structure, importance)
        value = evaluate()
        for v, w in saved:
            v.assign(w)
        removed = group.size - keep_count(group.size, s)
        if structure == "unstructured":
            removed = s * group.size
        out.append((s, value, removed * per_params, removed * per_flops))
        bar.add(1)
    return out


def plot_sensitivity(
    table: SensitivityTable, path: str | os.PathLike | None = None
) -> Any:
    """Metric drop against sparsity, one line per layer / group.

    Builds a `matplotlib.figure.Figure` (no pyplot state, no backend
    switch) and saves it to `path` if given.

    Returns:
        The `Figure`.

    Example:

    ```python
    from keras_efficient.pruning.sensitivity import SensitivityTable
    from keras_efficient.pruning.sensitivity import plot_sensitivity

    table = SensitivityTable(0.9, 100, 1000)
    for s, drop in ((0.25, 0.0), (0.5, 0.1)):
        for column, v in zip(table, ("dense", s, 0.9 - drop, drop, 1, 1)):
            table[column].append(v)
    figure = plot_sensitivity(table)
    ```
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    ax = figure.add_subplot()
    for i, name in enumerate(dict.fromkeys(table["layer"])):
        rows = [r for r in table.rows() if r["layer"] == name]
        sparsity = [0.0] + [r["sparsity"] for r in rows]
        drop = [0.0] + [r["drop"] for r in rows]
        style = ("-", "--", ":")[(i // 10) % 3]  # 10 colours, then styles
        ax.plot(sparsity, drop, marker="o", linestyle=style, label=name)
    ax.set_xlabel("sparsity of the layer / group alone")
    ax.set_ylabel("metric drop (base - pruned)")
    ax.set_title(f"Pruning sensitivity (base metric {table.base_metric:.4f})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
