"""The constraints that apply pruning masks (`w -> original(w) * mask`).

Keras optimizers apply `variable.constraint` inside `optimizer.apply`,
after the gradient update, in the compiled train step. A pruned kernel's
constraint multiplies it by its mask variable; a follower's (bias,
batch-norm scale / offset, LAuReL up-projection) by the output channels of
the kernel masks it follows. `strip_pruning` bakes `constraint.mask` of
both kinds into a copy of the model.
"""

from typing import Any

import keras
from keras import ops


class MaskConstraint:
    """`w -> original(w) * mask` for a pruned kernel.

    Args:
        state: the `PruningState` that owns `mask`.
        mask: the kernel's mask variable (an optimizer variable).
        original: the kernel's own constraint, applied first, or None.
    """

    def __init__(
        self,
        state: Any,
        mask: keras.Variable | None,
        original: Any | None = None,
    ):
        self.state = state
        self.kernel_mask = mask
        self.original = original

    @property
    def mask(self) -> Any:
        """The mask `w` is multiplied by."""
        return self.kernel_mask

    def __call__(self, w: Any) -> Any:
        if self.original is not None:
            w = self.original(w)
        return w * ops.cast(self.mask, w.dtype)


class FollowerConstraint(MaskConstraint):
    """`w -> original(w) * channels` for a per-channel variable whose last
    axis is `segments`, each `(kernel index or -1, size)`: masked with the
    output channels of `state.masks[kernel index]` (1 where a channel
    keeps any weight), or kept (`-1`).

    Args:
        state: the `PruningState` whose masks are followed.
        segments: the variable's last axis, as in `plan.Follower`.
        original: the variable's own constraint, applied first, or None.
    """

    def __init__(
        self,
        state: Any,
        segments: tuple[tuple[int, int], ...],
        original: Any | None = None,
    ):
        super().__init__(state, None, original)
        self.segments = tuple(segments)

    @property
    def mask(self) -> Any:
        parts = []
        for i, size in self.segments:
            if i < 0:
                parts.append(ops.ones((size,), "float32"))
                continue
            m = ops.cast(ops.convert_to_tensor(self.state.masks[i]), "float32")
            n = tuple(m.shape)[-1]
            parts.append(ops.max(ops.reshape(m, (-1, n)), axis=0))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts)


def unmasked_constraint(variable: keras.Variable) -> Any:
    """The user's own constraint of `variable` (under any mask constraint
    a pruning state put on it)."""
    c = variable.constraint
    return c.original if isinstance(c, MaskConstraint) else c
