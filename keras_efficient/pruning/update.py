"""`PruningUpdate`: the one place where pruning masks are recomputed.

Steps follow tfmot: batch `i` (0-based) of training runs with the masks of
step `s = i + 1`. At the end of batch `i` (`optimizer.iterations == i`
there) `PruningUpdate.in_step` computes the masks batch `i + 1` uses, from
`schedule(iterations + 2)` and the just-updated kernels, with `keras.ops`
inside the compiled train step; the masks batch 0 uses
(`schedule(iterations + 1)`) are computed once, in NumPy, by
`PruningUpdate.before_fit` before the training loop. The `step` variable
holds the step the current masks belong to, so a resumed run (restored
optimizer) does not recompute them.

The hook: `in_step` runs from `UpdateThenMask`, the constraint of the
first target kernel in the order the optimizer applies constraints
(`model.trainable_variables`), so the new masks exist before any kernel is
multiplied by its mask. A constraint is the only place where Keras
optimizers, on every backend and under `LossScaleOptimizer`, run code of
ours inside `optimizer.apply` without replacing `model.optimizer` (see
ARCHITECTURE.md, "Where state lives", for why the optimizer is not
wrapped).
"""

from typing import Any

import keras
from keras import ops

from keras_efficient.pruning.constraints import MaskConstraint
from keras_efficient.pruning.plan_masks import plan_masks


def _value(variable):
    return keras.ops.convert_to_numpy(variable)


class PruningUpdate:
    """Recomputes the masks of a `PruningState` when its schedule says so.

    Args:
        state: the `PruningState` (its plan, optimizer and variables).
    """

    def __init__(self, state: Any):
        self.state = state

    def in_step(self) -> None:
        """Recompute the masks batch `iterations + 1` uses (traced)."""
        state = self.state
        options = state.plan.options
        it = ops.cast(
            ops.convert_to_tensor(state.optimizer.iterations), "int32"
        )
        step = it + 2
        state.step.assign(step)
        if options.n_m_update == "first_step":
            return  # N:M applied once, at step 1, by `before_fit`
        should, sparsity = options.schedule.tensor_call(step)
        kernels = [ops.convert_to_tensor(k) for k in state.kernels]
        old = [ops.convert_to_tensor(m) for m in state.masks]
        if options.remask_at_epoch_end:
            # As tfmot's re-masking at each epoch's end: a step that opens
            # an epoch scores the kernels masked as the last batch ran.
            opens = ops.equal(it, ops.convert_to_tensor(state.epoch_end))
            kernels = [
                ops.where(opens, k * ops.cast(m, k.dtype), k)
                for k, m in zip(kernels, old)
            ]

        def prune():
            new = plan_masks(kernels, sparsity, state.plan, backend="ops")
            return [ops.cast(n, o.dtype) for n, o in zip(new, old)]

        new = ops.cond(should, prune, lambda: old)
        for variable, value in zip(state.masks, new):
            variable.assign(value)
        current = ops.convert_to_tensor(state.sparsity)
        state.sparsity.assign(ops.where(should, sparsity, current))

    def before_fit(self) -> bool:
        """Masks for the next batch, in NumPy, before the training loop;
        the kernels and followers are masked with them at once.

        Skipped when the masks already belong to the next step (a resumed
        or continued run). Returns whether masks were recomputed.
        """
        state = self.state
        step = int(_value(state.optimizer.iterations)) + 1
        if int(_value(state.step)) == step:
            return False
        options = state.plan.options
        should, sparsity = options.schedule(step)
        if options.n_m_update == "first_step":  # tfmot's N:M: step 1 only
            should = step == 1
            sparsity = 1.0 - options.n_m[0] / options.n_m[1]
        if should:
            values = [_value(k) for k in state.kernels]
            new = plan_masks(values, sparsity, state.plan, backend="numpy")
            for kernel, mask, w, m in zip(
                state.kernels, state.masks, values, new
            ):
                mask.assign(m.astype(mask.dtype))
                kernel.assign((w * m).astype(w.dtype))
            for follower in state.plan.followers:
                variable = follower.variable
                channels = _value(variable.constraint.mask)
                variable.assign(
                    _value(variable) * channels.astype(variable.dtype)
                )
            state.sparsity.assign(sparsity)
        state.step.assign(step)
        return bool(should)


class UpdateThenMask(MaskConstraint):
    """The hook of a `PruningUpdate`: the constraint of the first target
    kernel, which runs `update.in_step()` and then masks its kernel.

    Args:
        update: the `PruningUpdate` to run.
        mask: the kernel's mask variable.
        original: the kernel's own constraint, or None.
    """

    def __init__(
        self,
        update: PruningUpdate,
        mask: keras.Variable,
        original: Any | None = None,
    ):
        super().__init__(update.state, mask, original)
        self.update = update

    def __call__(self, w: Any) -> Any:
        self.update.in_step()
        return super().__call__(w)
