"""Settings of `MagnitudePruning` that cannot act on this `fit` (private).

`check_before_fit` runs in `on_train_begin`, when the number of steps of
the coming `fit` (Keras's `callback.params`) and the target kernels are
known. A setting that can never act raises a `ValueError`; one that cannot
act within this `fit` (a later `fit` may continue the schedule) warns.
Each message names the setting and what would make it act.
"""

import math
import warnings
from collections.abc import Sequence

import numpy as np

from keras_efficient.pruning.plan import PruningPlan
from keras_efficient.pruning.schedules import IterativePruning
from keras_efficient.pruning.schedules import PruningSchedule


def check_before_fit(plan: PruningPlan, params: dict, iterations: int) -> None:
    """Raises or warns for settings that cannot act (see the module doc).

    Args:
        plan: the callback's `PruningPlan`.
        params: Keras's `callback.params` (`epochs`, `steps`).
        iterations: optimizer steps taken before this `fit`.
    """
    schedule = plan.options.schedule
    check_sparsities_increase(schedule)
    if plan.options.structure == "block":
        check_blocks_can_act(plan)
    steps, epochs = (params or {}).get("steps"), (params or {}).get("epochs")
    if steps and epochs:
        check_schedule_reached(schedule, int(iterations), steps * epochs)


def first_pruning_step(schedule: PruningSchedule) -> int:
    """The first tfmot step `s >= 1` at which `schedule` prunes."""
    begin, frequency = schedule.begin_step, schedule.frequency
    if begin >= 1:
        return begin
    return begin + frequency * math.ceil((1 - begin) / frequency)


def check_schedule_reached(
    schedule: PruningSchedule, iterations: int, num_steps: int
) -> None:
    """Warns when the schedule prunes nothing, or stops short of its peak,
    within the steps `iterations + 1 ... iterations + num_steps`."""
    # The update of the fit's last batch computes the masks of the step
    # after it (they apply to the weights the fit leaves).
    last = iterations + num_steps + 1
    first = max(first_pruning_step(schedule), iterations + 1)
    begin, frequency = schedule.begin_step, schedule.frequency
    if first > begin:  # the next step of the progression
        first = begin + frequency * math.ceil((first - begin) / frequency)
    stop = last if schedule.end_step == -1 else min(last, schedule.end_step)
    span = (
        f"this fit's {num_steps} steps (epochs x steps per epoch) compute "
        f"the masks of steps {iterations + 1} to {last}"
    )
    if first > stop:
        warnings.warn(
            f"`schedule` cannot prune in this fit: its first pruning step "
            f"is {first} (begin_step={begin}, frequency={frequency}) and "
            f"{span}. Lower `begin_step` or train for at least "
            f"{first - iterations - 1} steps. Received: "
            f"schedule={schedule!r}",
            UserWarning,
            stacklevel=3,
        )
        return
    final = first + frequency * ((stop - first) // frequency)
    reached, peak = float(schedule.sparsity(final)), schedule.peak_sparsity()
    if reached < peak - 1e-6:
        end = schedule.end_step
        warnings.warn(
            f"`schedule` reaches sparsity {reached:.3g} of its peak "
            f"{peak:.3g} in this fit: its last pruning step is {end} and "
            f"{span}. Train for at least {end - iterations - 1} steps or lower "
            f"`end_step`. Received: schedule={schedule!r}",
            UserWarning,
            stacklevel=3,
        )


def check_sparsities_increase(schedule: PruningSchedule) -> None:
    """`IterativePruning.sparsities` must not decrease."""
    if not isinstance(schedule, IterativePruning):
        return
    values = schedule.sparsities
    for cycle, (before, after) in enumerate(zip(values, values[1:]), 1):
        if after < before:
            raise ValueError(
                "`sparsities` of `IterativePruning` must not decrease: a "
                "cycle recomputes the masks from magnitudes, so cycle "
                f"{cycle} would unmask weights pruned at {before} to "
                f"reach {after} (they regrow from zero). Sort them "
                f"ascending. Received: sparsities={list(values)}"
            )


def _block_counts(shape: Sequence[int], block: tuple[int, int]) -> int:
    n_out = shape[-1] if len(shape) > 1 else 1
    n_in = int(np.prod(shape)) // max(n_out, 1)
    return math.ceil(n_in / block[0]) * math.ceil(n_out / block[1])


def check_blocks_can_act(plan: PruningPlan) -> None:
    """A `block` so large that a kernel keeps every block at the peak
    sparsity (`k = max(round(n * (1 - s)), 1)` of `n` blocks) prunes
    nothing in it: raise when no kernel can be pruned, warn when some
    cannot."""
    options = plan.options
    peak = float(options.schedule.peak_sparsity())
    factors = plan.factors or (1.0,) * len(plan.kernels)
    counts = [
        _block_counts(tuple(k.shape), options.block) for k in plan.kernels
    ]
    if options.scope == "global":  # one ranking over all blocks
        counts, factors = [sum(counts)], (1.0,)
        kernels = [f"all {len(plan.kernels)} targets"]
    else:
        kernels = [f"{k.path} {tuple(k.shape)}" for k in plan.kernels]
    idle, active = [], 0
    for name, n, factor in zip(kernels, counts, factors):
        if not factor * peak:
            continue  # kept dense on purpose (`layer_sparsity` 0.0)
        if max(round(n * (1 - factor * peak)), 1) >= n:
            idle.append(f"{name}: {n} block(s)")
        else:
            active += 1
    if not idle:
        return
    text = (
        f"`block={options.block}` leaves nothing to prune at sparsity "
        f"{peak:g} in {len(idle)} kernel(s) ({'; '.join(idle[:4])}): a "
        "kernel of n blocks keeps max(round(n * (1 - sparsity)), 1). Use "
        "a block that tiles each kernel several times, or leave those "
        "layers out of `targets`."
    )
    if not active:
        raise ValueError(f"{text} Received: block={options.block}")
    warnings.warn(text, UserWarning, stacklevel=3)
