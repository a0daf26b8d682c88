"""Pruning state held by the optimizer: mask, step and sparsity variables,
the constraints that apply the masks, and the `PruningUpdate` that
recomputes them inside the train step.

The masks, the pruning step and the current target sparsity are optimizer
variables (`optimizer.add_variable_from_reference` / `add_variable`): they
are tracked, part of the JAX train state (so changing them never retraces
the step), saved by `save_weights` (so `BackupAndRestore` restores them),
and laid out like their kernel under `keras.distribution`.

Each target kernel gets a `MaskConstraint` and each follower of the plan a
`FollowerConstraint`; the first target kernel gets `UpdateThenMask`, the
hook that runs `PruningState.update.in_step()` first (see `update.py`).
"""

import keras
import numpy as np

from keras_efficient.pruning.constraints import FollowerConstraint
from keras_efficient.pruning.constraints import MaskConstraint
from keras_efficient.pruning.constraints import unmasked_constraint
from keras_efficient.pruning.plan import PruningPlan
from keras_efficient.pruning.update import PruningUpdate
from keras_efficient.pruning.update import UpdateThenMask


def innermost_optimizer(optimizer: keras.Optimizer) -> keras.Optimizer:
    """The optimizer that applies the constraints (unwraps loss scaling)."""
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer


def _value(variable):
    return keras.ops.convert_to_numpy(variable)


class PruningState:
    """Masks, step and target sparsity of one (plan, optimizer) pair.

    Args:
        optimizer: the optimizer that applies the constraints (see
            `innermost_optimizer`); the variables are its variables.
        plan: the `PruningPlan`.
        previous: `{id(kernel): MaskConstraint}` of a former state of
            another optimizer, whose masks and original constraints are
            carried over.
    """

    def __init__(
        self,
        optimizer: keras.Optimizer,
        plan: PruningPlan,
        previous: dict | None = None,
    ):
        previous = previous or {}
        self.optimizer = optimizer
        self.plan = plan
        self.kernels = list(plan.kernels)
        self.masks = []
        for kernel in self.kernels:
            mask = optimizer.add_variable_from_reference(
                kernel, name="pruning_mask", initializer="ones"
            )
            old = previous.get(id(kernel))
            if old is not None:  # keep the pruning of a former optimizer
                mask.assign(_value(old.mask))
            self.masks.append(mask)
        self.step = optimizer.add_variable(
            shape=(), dtype="int32", name="pruning_step"
        )
        self.sparsity = optimizer.add_variable(
            shape=(), dtype="float32", name="pruning_target_sparsity"
        )
        self.epoch_end = None
        if plan.options.remask_at_epoch_end:
            # The iteration of the current epoch's last batch (set by the
            # callback at each epoch's start; -1: none).
            self.epoch_end = optimizer.add_variable(
                shape=(), dtype="int32", name="pruning_epoch_end"
            )
            self.epoch_end.assign(-1)
        self.update = PruningUpdate(self)
        for i, (kernel, mask) in enumerate(zip(self.kernels, self.masks)):
            old = previous.get(id(kernel))
            original = old.original if old is not None else kernel.constraint
            if i == 0:  # first in the optimizer's order: see update.py
                kernel.constraint = UpdateThenMask(self.update, mask, original)
            else:
                kernel.constraint = MaskConstraint(self, mask, original)
        self._followers = ()
        self._attach_followers()

    def _attach_followers(self):
        self._detach_followers()
        self._followers = tuple(self.plan.followers)
        for follower in self._followers:
            variable = follower.variable
            variable.constraint = FollowerConstraint(
                self, follower.segments, unmasked_constraint(variable)
            )

    def _detach_followers(self):
        for follower in self._followers:
            c = follower.variable.constraint
            if isinstance(c, FollowerConstraint) and c.state is self:
                follower.variable.constraint = c.original
        self._followers = ()

    def replan(self, plan: PruningPlan) -> bool:
        """Use `plan` (same kernels); returns whether the masks it
        computes differ (the train function must then be rebuilt)."""
        changed = not self.plan.masks_like(plan)
        self.plan = plan
        self._attach_followers()
        return changed

    def detach(self) -> None:
        """Give the kernels back their own constraints (masks stay zeros)."""
        self._detach_followers()
        for kernel in self.kernels:
            c = kernel.constraint
            if isinstance(c, MaskConstraint) and c.state is self:
                kernel.constraint = c.original

    def target_sparsity(self) -> float:
        """Target sparsity of the current masks (`1 - n/m` for N:M)."""
        s = float(_value(self.sparsity))
        options = self.plan.options
        if options.structure == "n_m" and s > 0:
            return 1.0 - options.n_m[0] / options.n_m[1]
        return s

    def kernel_sparsity(self) -> tuple:
        """`{variable.path: fraction of zeros}` and the overall fraction."""
        per, zeros, total = {}, 0, 0
        for kernel in self.kernels:
            w = _value(kernel)
            z = int(np.count_nonzero(w == 0))
            per[kernel.path] = z / max(w.size, 1)
            zeros, total = zeros + z, total + w.size
        return per, zeros / max(total, 1)


def attach_state(
    optimizer: keras.optimizers.Optimizer, plan: PruningPlan
) -> tuple[PruningState, bool]:
    """The `PruningState` of `plan` under `optimizer`, and whether the
    train function must be rebuilt (new variables or other masks).

    Reuses the state (and its variables) already attached for the same
    optimizer and kernels; otherwise builds one, carrying over the masks
    and original constraints of a state of another optimizer.
    """
    kernels = plan.kernels
    olds = [k.constraint for k in kernels]
    olds = [c for c in olds if isinstance(c, MaskConstraint)]
    state = olds[0].state if olds else None
    if (
        state is not None
        and state.optimizer is optimizer
        and len(olds) == len(kernels)
        and [id(k) for k in state.kernels] == [id(k) for k in kernels]
        and (
            state.epoch_end is not None or not plan.options.remask_at_epoch_end
        )
    ):
        return state, state.replan(plan)
    previous = {
        id(k): k.constraint
        for k in kernels
        if isinstance(k.constraint, MaskConstraint)
    }
    for old in {id(c.state): c.state for c in olds}.values():
        old.detach()
    return PruningState(optimizer, plan, previous), True
