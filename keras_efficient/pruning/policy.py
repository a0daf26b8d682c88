"""Per-layer sparsities from a sensitivity table, for a global target."""

from keras_efficient._validation import check_choice
from keras_efficient._validation import check_fraction
from keras_efficient._validation import check_instance
from keras_efficient._validation import fail
from keras_efficient.pruning.masks import keep_count
from keras_efficient.pruning.sensitivity import SensitivityTable

BUDGETS = ("params", "flops", "latency")


def _levels(table, column):
    """`{layer: [(sparsity, drop, saved), ...]}` from 0, sorted by sparsity,
    with the drop made non-decreasing (a higher sparsity never predicts a
    smaller drop than a lower one)."""
    levels = {}
    for row in table.rows():
        levels.setdefault(row["layer"], [(0.0, 0.0, 0.0)])
        levels[row["layer"]].append((row["sparsity"], row["drop"], row[column]))
    for entries in levels.values():
        entries.sort()
        worst = 0.0
        for i, (s, drop, saved) in enumerate(entries):
            worst = max(worst, drop)
            entries[i] = (s, worst, saved)
    return levels


def _kept(parts, keep):
    return sum(share * keep.get(name, 1.0) for name, share in parts)


def _saved(table, column, levels, position):
    """Budget saved by a choice of levels: exact from `table.terms` (a
    kernel between two pruned groups keeps `in x out`), else the sum of
    the table's single-group savings."""
    if not table.terms:
        return sum(levels[n][i][2] for n, i in position.items())
    sizes = table.group_sizes
    keep = {}
    for name, i in position.items():
        n = sizes[name]
        keep[name] = keep_count(n, levels[name][i][0]) / n if i else 1.0
    saved = 0.0
    for term in table.terms:
        kept = _kept(term["outputs"], keep)
        if term["inputs"] is not None:
            kept *= _kept(term["inputs"], keep)
        saved += term[column] * (1.0 - kept)
    return saved


def _best_step(table, column, levels, position):
    """The group whose next level costs the least drop per unit saved."""
    best, best_rate = None, None
    saved0 = _saved(table, column, levels, position)
    for name, entries in levels.items():
        i = position[name]
        if i + 1 >= len(entries):
            continue
        drop0, drop1 = entries[i][1], entries[i + 1][1]
        saved1 = _saved(table, column, levels, {**position, name: i + 1})
        gain = saved1 - saved0
        if gain <= 0:
            continue
        rate = (drop1 - drop0) / gain
        if best_rate is None or rate < best_rate:
            best, best_rate = name, rate
    return best


def sparsity_policy(
    table: SensitivityTable, target: float, budget: str = "params"
) -> dict[str, float]:
    """Per-layer sparsities that reach a global target at the least drop.

    Greedy over the table: every layer / group starts at sparsity 0; each
    step moves the one layer whose next listed sparsity costs the least
    predicted drop per unit of budget saved, until the savings reach
    `target` times the model's total. Savings are counted from the
    layer shapes (`table.terms`), so coupled groups are not counted twice
    and the removed model meets the target. The predicted drop of a
    choice is the sum of the single-layer drops of the table (layers are
    assumed independent; the drop of a layer is made non-decreasing in its
    sparsity). `"latency"` uses FLOPs as its proxy (measure the result
    with `cost.compare_cost`).

    Args:
        table: a `SensitivityTable` from `sensitivity_analysis`.
        target: fraction of the model's parameters (or FLOPs) to remove,
            in `(0, 1)`.
        budget: `"params"`, `"flops"` or `"latency"`.

    Returns:
        `{layer or group name: sparsity}` for every layer of the table
        (0.0 where it stays dense); `shrink(model, ratio=policy)` and the
        pruning callback accept it.

    Example:

    ```python
    from keras_efficient.pruning.policy import sparsity_policy
    from keras_efficient.pruning.sensitivity import SensitivityTable

    table = SensitivityTable(0.9, total_params=100, total_flops=1000)
    rows = [("a", 0.5, 0.0, 30), ("b", 0.5, 0.2, 30)]
    for layer, s, drop, saved in rows:
        for column, v in zip(table, (layer, s, 0.9 - drop, drop, saved, 0)):
            table[column].append(v)
    assert sparsity_policy(table, 0.25) == {"a": 0.5, "b": 0.0}
    ```
    """
    check_instance("table", table, SensitivityTable, "a SensitivityTable")
    target = check_fraction("target", target, allow_zero=False)
    check_choice("budget", budget, BUDGETS)
    column = "params" if budget == "params" else "flops"
    total = table.total_params if column == "params" else table.total_flops
    levels = _levels(table, column)
    position = dict.fromkeys(levels, 0)
    saved = 0.0
    while saved < target * total:
        name = _best_step(table, column, levels, position)
        if name is None:
            reachable = saved / total if total else 0.0
            fail(
                "target",
                f"at most {reachable:.4f} (all the table's layers at their "
                f"largest sparsity save that fraction of the {column})",
                target,
            )
        position[name] += 1
        saved = _saved(table, column, levels, position)
    return {name: levels[name][i][0] for name, i in position.items()}
