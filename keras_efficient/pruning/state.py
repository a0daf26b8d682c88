"""Pruning state held by the optimizer and updated inside the train step.

The masks, the pruning step and the current target sparsity are optimizer
variables (`optimizer.add_variable_from_reference` / `add_variable`): they
are tracked, part of the JAX train state (so changing them never retraces
the step), saved by `save_weights` (so `BackupAndRestore` restores them),
and laid out like their kernel under `keras.distribution`.

Keras optimizers apply `variable.constraint` inside `optimizer.apply`,
after the gradient update and before `iterations` is incremented. Each
target kernel gets a `MaskConstraint` (`w -> original(w) * mask`); the
first target kernel's constraint (in the order of
`model.trainable_variables`, the order the optimizer applies constraints
in) first runs `PruningState.update_in_step`, which recomputes all masks
with `keras.ops` when the schedule says so.

Steps follow tfmot: batch `i` (0-based) of training runs with the masks of
step `s = i + 1`. At the end of batch `i` (`optimizer.iterations == i`
there) the update computes the masks batch `i + 1` uses, from
`schedule(iterations + 2)` and the just-updated kernels; the masks batch 0
uses (`schedule(iterations + 1)`) are computed once, in NumPy, by
`initial_update` before the training loop. The `step` variable holds the
step the current masks belong to, so a resumed run (restored optimizer)
does not recompute them.
"""

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_efficient.pruning import mask_ops
from keras_efficient.pruning import masks as masks_lib


def innermost_optimizer(optimizer: keras.Optimizer) -> keras.Optimizer:
    """The optimizer that applies the constraints (unwraps loss scaling)."""
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer


class MaskConstraint:
    """`w -> original(w) * mask`, applied by the optimizer in the step.

    The leader (the first target kernel's constraint) first runs the
    in-step pruning update of `state`.
    """

    def __init__(
        self,
        state: "PruningState",
        mask: keras.Variable,
        original: Any | None = None,
        leader: bool = False,
    ):
        self.state = state
        self.mask = mask
        self.original = original
        self.leader = leader

    def __call__(self, w: Any) -> Any:
        if self.leader:
            self.state.update_in_step()
        if self.original is not None:
            w = self.original(w)
        return w * ops.cast(self.mask, w.dtype)


class ChannelMaskConstraint(MaskConstraint):
    """`w -> original(w) * channel_mask` for a per-channel variable (the
    gamma / beta of a BatchNormalization after a filter-pruned kernel).

    `mask` is the kernel mask's output channels (1 where a channel keeps
    any weight), so `strip_pruning` zeroes those channels as well.
    """

    def __init__(
        self,
        state: "PruningState",
        kernel_mask: keras.Variable,
        original: Any | None = None,
    ):
        super().__init__(state, kernel_mask, original, leader=False)
        self.kernel_mask = kernel_mask

    @property
    def mask(self) -> Any:
        m = ops.convert_to_tensor(self.kernel_mask)
        n_out = tuple(m.shape)[-1]
        return ops.max(ops.reshape(m, (-1, n_out)), axis=0)

    @mask.setter
    def mask(self, value: Any) -> Any:
        pass


def _value(variable):
    return keras.ops.convert_to_numpy(variable)


def unmasked_constraint(variable: keras.Variable) -> Any:
    """The user's own constraint of a follower variable (under any
    `ChannelMaskConstraint` a pruning state put on it)."""
    c = variable.constraint
    return c.original if isinstance(c, ChannelMaskConstraint) else c


class PruningState:
    """Masks, step and target sparsity of one (model, optimizer) pair."""

    def __init__(
        self,
        optimizer: keras.Optimizer,
        kernels: list,
        options: dict,
        previous: Any | None = None,
        followers: Sequence = (),
    ):
        previous = previous or {}
        self.optimizer = optimizer
        self.kernels = list(kernels)
        self.options = dict(options)
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
        for kernel, mask in zip(self.kernels, self.masks):
            old = previous.get(id(kernel))
            original = old.original if old is not None else kernel.constraint
            kernel.constraint = MaskConstraint(
                self, mask, original, leader=kernel is self.kernels[0]
            )
        self.followers = []
        self.set_followers(followers)

    def set_followers(self, followers: Sequence) -> None:
        """Mask per-channel variables with their kernel's output channels.

        `followers` is a list of `(variable, kernel index)`: e.g. the gamma
        and beta of a BatchNormalization right after a filter-pruned kernel
        (zero in the pruned channels, so `shrink` can remove them).
        """
        self._detach_followers()
        self.followers = list(followers)
        for variable, i in self.followers:
            variable.constraint = ChannelMaskConstraint(
                self, self.masks[i], unmasked_constraint(variable)
            )

    def _detach_followers(self):
        for variable, _ in self.followers:
            c = variable.constraint
            if isinstance(c, ChannelMaskConstraint) and c.state is self:
                variable.constraint = c.original
        self.followers = []

    def detach(self) -> None:
        """Give the kernels back their own constraints (masks stay zeros)."""
        self._detach_followers()
        for kernel in self.kernels:
            c = kernel.constraint
            if isinstance(c, MaskConstraint) and c.state is self:
                kernel.constraint = c.original

    def _masks(self, kernels, sparsity, compute):
        o = self.options

        def run(ks, s):
            return compute(
                ks,
                s,
                o["structure"],
                scope=o["scope"],
                block=o["block"],
                n_m=o["n_m"],
                pooling=o["block_pooling"],
            )

        factors = o.get("factors")
        if factors is None:
            return run(kernels, sparsity)
        # Per-layer targets: each kernel at `sparsity * factor` (scope
        # "layer" only, checked by the callback).
        out = []
        for kernel, factor in zip(kernels, factors):
            if factor == 1.0:
                out.extend(run([kernel], sparsity))
            else:
                out.extend(run([kernel], sparsity * factor))
        return out

    def update_in_step(self) -> None:
        """Recompute the masks batch `iterations + 1` uses (traced)."""
        it = ops.cast(ops.convert_to_tensor(self.optimizer.iterations), "int32")
        step = it + 2
        should, sparsity = self.options["schedule"].tensor_call(step)
        kernels = [ops.convert_to_tensor(k) for k in self.kernels]
        old = [ops.convert_to_tensor(m) for m in self.masks]

        def prune():
            new = self._masks(kernels, sparsity, mask_ops.compute_masks)
            return [ops.cast(n, o.dtype) for n, o in zip(new, old)]

        new = ops.cond(should, prune, lambda: old)
        for variable, value in zip(self.masks, new):
            variable.assign(value)
        self.step.assign(step)
        current = ops.convert_to_tensor(self.sparsity)
        self.sparsity.assign(ops.where(should, sparsity, current))

    def initial_update(self) -> None:
        """Masks for the next batch, in NumPy, before the training loop.

        Skipped when the masks already belong to the next step (a resumed
        or continued run). Returns whether masks were recomputed.
        """
        step = int(_value(self.optimizer.iterations)) + 1
        if int(_value(self.step)) == step:
            return False
        should, sparsity = self.options["schedule"](step)
        if should:
            values = [_value(k) for k in self.kernels]
            new = self._masks(values, sparsity, masks_lib.compute_masks)
            for kernel, mask, w, m in zip(
                self.kernels, self.masks, values, new
            ):
                mask.assign(m.astype(mask.dtype))
                kernel.assign((w * m).astype(w.dtype))
            for variable, _ in self.followers:
                c = variable.constraint
                channels = _value(c.mask).astype(variable.dtype)
                variable.assign(_value(variable) * channels)
            self.sparsity.assign(sparsity)
        self.step.assign(step)
        return bool(should)

    def target_sparsity(self) -> Any:
        """Target sparsity of the current masks (`1 - n/m` for N:M)."""
        s = float(_value(self.sparsity))
        n_m = self.options["n_m"]
        if self.options["structure"] == "n_m" and s > 0:
            return 1.0 - n_m[0] / n_m[1]
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
