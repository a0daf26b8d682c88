"""The checks of `MagnitudePruning`'s arguments that involve several of
them (one message style, from `_validation.py`)."""

from typing import Any

from keras_efficient import _validation as v
from keras_efficient.pruning.schedules import PruningSchedule
from keras_efficient.pruning.transformer_families import AXES

N_M_UPDATES = ("schedule", "first_step")


def check_layer_sparsity(
    layer_sparsity: dict | None,
    scope: str,
    structure: str,
    schedule: PruningSchedule,
) -> dict | None:
    """`layer_sparsity` checked against the scope, structure, schedule."""
    if layer_sparsity is None:
        return None
    if not isinstance(layer_sparsity, dict) or not all(
        isinstance(k, str) for k in layer_sparsity
    ):
        v.fail(
            "layer_sparsity",
            "None or a dict {layer name: sparsity}",
            layer_sparsity,
        )
    out = {
        name: v.check_fraction(f"layer_sparsity[{name!r}]", value)
        for name, value in layer_sparsity.items()
    }
    if scope != "layer":
        raise ValueError(
            "`layer_sparsity` needs `scope='layer'` (one threshold per "
            f"layer). Received: scope={scope!r}"
        )
    if structure in ("n_m", "transformer"):
        raise ValueError(
            f"`layer_sparsity` does not apply to structure={structure!r} "
            "(N:M: its sparsity is fixed at 1 - n/m; transformer: every "
            "layer keeps the same number of units)."
        )
    try:
        peak = float(schedule.peak_sparsity())
    except NotImplementedError:
        peak = None
    if not peak or peak <= 0.0:
        raise ValueError(
            "`layer_sparsity` scales the schedule by layer_target / "
            "schedule.peak_sparsity(), which must be > 0. Received: "
            f"schedule={schedule!r}"
        )
    return out


def check_group_channels(group_channels: Any, structure: str) -> Any:
    """None, or a bool with `structure="filter"`."""
    # `in (None, True, False)` would take 1 and 0.0 for bools.
    if not (group_channels is None or isinstance(group_channels, bool)) or (
        group_channels and structure != "filter"
    ):
        v.fail(
            "group_channels",
            "None, or a bool with structure='filter'",
            group_channels,
        )
    return group_channels


def check_transformer_axes(
    transformer_axes: Any, structure: str, scope: str
) -> tuple | None:
    """None, or a non-empty list of distinct `AXES` with
    `structure="transformer"` (which needs `scope="layer"`)."""
    if structure == "transformer" and scope != "layer":
        v.fail(
            "scope",
            "'layer' with structure='transformer' (every layer keeps the "
            "same number of units)",
            scope,
        )
    if transformer_axes is None:
        return None
    if (
        isinstance(transformer_axes, str)
        or not isinstance(transformer_axes, (list, tuple))
        or not transformer_axes
        or any(a not in AXES for a in transformer_axes)
        or len(set(transformer_axes)) != len(transformer_axes)
        or structure != "transformer"
    ):
        v.fail(
            "transformer_axes",
            f"None, or a list of distinct axes of {AXES} with "
            "structure='transformer'",
            transformer_axes,
        )
    return tuple(transformer_axes)


def check_tfmot_options(
    n_m_update: Any, remask_at_epoch_end: Any, structure: str
) -> tuple:
    """`(n_m_update, remask_at_epoch_end)` checked."""
    v.check_choice("n_m_update", n_m_update, N_M_UPDATES)
    if n_m_update == "first_step" and structure != "n_m":
        v.fail(
            "n_m_update",
            "'schedule' unless the structure is 'n_m' (pass `n_m=` or "
            "`sparsity_m_by_n=`)",
            n_m_update,
        )
    if not isinstance(remask_at_epoch_end, bool):
        v.fail("remask_at_epoch_end", "a bool", remask_at_epoch_end)
    if (
        remask_at_epoch_end
        and structure == "n_m"
        and (n_m_update == "first_step")
    ):
        v.fail(
            "remask_at_epoch_end",
            "False with n_m_update='first_step' (the N:M masks are "
            "computed once, at step 1)",
            remask_at_epoch_end,
        )
    return n_m_update, remask_at_epoch_end
