"""The documented limits of a table optimizer, checked on a model.

A `SparseLookupTable(table_optimizer=...)` updates its rows inside the
backward pass of its gather and hands the model's optimizer the updated
table to copy in (see `row_update.py`). Two uses break that contract and
would train on wrong numbers without a word:

- the table read twice in one step: the two "updated tables" are added;
- the model optimizer's `gradient_accumulation_steps`: Keras combines the
  updated tables of the accumulated steps by an elementwise maximum.

`check_table_optimizer(model)` raises for both. `TransformerLM.compile`
runs it; call it after `compile` on other models that hold such tables.
"""

import keras


def _row_update_tables(model):
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if getattr(layer, "row_update", None) is not None
    ]


def _graph_reads(model, table):
    """How often `table` is called in the functional graphs of `model`."""
    prefix = f"{id(table)}_ib-"
    reads = 0
    for graph in model._flatten_layers(include_self=True):
        nodes = getattr(graph, "_nodes", None)
        if isinstance(nodes, set):
            reads = max(reads, sum(k.startswith(prefix) for k in nodes))
    return reads


def check_table_optimizer(
    model: keras.Model, optimizer: keras.optimizers.Optimizer | None = None
) -> None:
    """Raises where a table optimizer of `model` would update wrongly.

    Args:
        model: a Keras model (functional graphs are read for repeated
            reads; a subclassed model's `call` cannot be read).
        optimizer: the model's optimizer (default `model.optimizer`).

    Raises:
        ValueError: a table with `table_optimizer` is called more than once
            in the model's graph, or the optimizer accumulates gradients.
    """
    tables = _row_update_tables(model)
    if not tables:
        return
    optimizer = optimizer or getattr(model, "optimizer", None)
    steps = getattr(optimizer, "gradient_accumulation_steps", None)
    if steps:
        raise ValueError(
            "`gradient_accumulation_steps` of the model's optimizer cannot "
            f"be used with a table optimizer (layer `{tables[0].name}`): "
            "the table is updated inside every step and Keras would combine "
            "the updated tables by an elementwise maximum. Use a larger "
            "batch, or `table_optimizer=None`. Received: "
            f"gradient_accumulation_steps={steps}"
        )
    for table in tables:
        reads = _graph_reads(model, table)
        if reads > 1:
            raise ValueError(
                f"Layer `{table.name}` has a `table_optimizer` and must be "
                "called once per training step: each call adds an updated "
                "table to the variable. Use two tables, or "
                f"`table_optimizer=None`. Received: {reads} calls of "
                f"`{table.name}` in model `{model.name}`"
            )
