"""Magnitude pruning callback for Keras 3 (JAX, TensorFlow, PyTorch)."""

import keras
import numpy as np

from keras_efficient.pruning import masks as masks_lib
from keras_efficient.pruning.schedules import PruningSchedule
from keras_efficient.pruning.targets import find_target_weights


class _MaskConstraint:
    """`w -> original(w) * mask`; applied by the optimizer inside the step."""

    def __init__(self, mask, original=None):
        self.mask = mask
        self.original = original
        # The train function last built with this constraint attached, and
        # (JAX, which bakes the mask into the jitted step) the mask then.
        self.traced_function = None
        self.traced_mask = None

    def __call__(self, w):
        if self.original is not None:
            w = self.original(w)
        return w * keras.ops.cast(self.mask, w.dtype)


@keras.saving.register_keras_serializable(package="keras_efficient")
class MagnitudePruning(keras.callbacks.Callback):
    """Magnitude pruning during `fit`, with tfmot-style schedules.

    On each pruning step of `schedule` the callback recomputes a 0/1 mask per
    target kernel, keeping the `k = max(round(n * (1 - s)), 1)` units with the
    largest magnitude (per layer or globally across targets), and zeroes the
    rest. The mask lives in a non-trainable `keras.Variable` and is attached to
    the kernel as a variable constraint `w * mask`, which Keras optimizers
    apply after every update inside the compiled train step: pruned weights
    stay exactly zero under any optimizer (momentum, Adam) with no Python work
    per batch. Masks are recomputed only on pruning steps.

    Structures (the pruned "unit"; kernels are viewed as `(inputs, outputs)`,
    the last axis being the output axis):

    - `"unstructured"`: single weights.
    - `"block"` with `block=(r, c)`: `r x c` blocks of the 2-D kernel, scored
      by the average (or `block_pooling="max"`) of `|w|`.
    - `"n_m"` with `n_m=(n, m)`: `n` nonzeros in every `m` consecutive
      weights along the input axis (2:4 is what sparse tensor cores run).
      The sparsity is then fixed at `1 - n / m`; the schedule only says when
      to apply it (any step with target sparsity > 0).
    - `"filter"`: whole output channels, scored by their L1 norm.

    Passing `block=` or `n_m=` alone selects that structure.

    The step is `optimizer.iterations` at the start of `fit`, so a run resumed
    by `keras.callbacks.BackupAndRestore` (which restores weights and
    optimizer) continues the schedule; masks are rebuilt from the restored
    kernels' zeros. The epoch logs get `pruning_target_sparsity` and
    `pruning_sparsity` (achieved over the targets).

    TensorFlow and PyTorch read the mask variables at every step. JAX bakes
    the masks into the jitted train step, so there the train function is
    rebuilt (retraced and recompiled) on a pruning step only when a mask
    actually changed; `retraces` counts the rebuilds (one more per `fit`
    that first attaches the masks, on every backend).

    Args:
        schedule: a `PruningSchedule` (`ConstantSparsity`, `PolynomialDecay`,
            `IterativePruning`).
        targets: None (kernels of Dense, EinsumDense, Conv1D/2D/3D layers,
            nested ones included, and this package's projections:
            `LaurelResidual`'s low-rank kernels, `MixtureOfExperts`' expert
            kernels, `AltUpReadout`'s kernel), a callable `layer -> bool`,
            or a list of layer names.
        scope: `"layer"` (each kernel at the target sparsity) or `"global"`
            (one magnitude threshold across all targets).
        structure: `"unstructured"`, `"block"`, `"n_m"` or `"filter"`.
        block: `(rows, cols)` block shape for `"block"`.
        n_m: `(n, m)` for `"n_m"`.
        block_pooling: `"avg"` or `"max"` for `"block"`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_efficient.callbacks import MagnitudePruning
    from keras_efficient.pruning import ConstantSparsity, strip_pruning

    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32),
                              keras.layers.Dense(2)])
    model.compile("adam", "mse")
    x, y = np.random.rand(64, 16), np.random.rand(64, 2)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[
        MagnitudePruning(ConstantSparsity(0.8, begin_step=0, frequency=2))])
    deployable = strip_pruning(model)
    ```
    """

    def __init__(
        self,
        schedule,
        targets=None,
        scope="layer",
        structure=None,
        block=None,
        n_m=None,
        block_pooling="avg",
    ):
        super().__init__()
        if not isinstance(schedule, PruningSchedule):
            raise ValueError(
                "`schedule` must be a PruningSchedule (ConstantSparsity, "
                f"PolynomialDecay, IterativePruning). Received: {schedule!r}"
            )
        if scope not in ("layer", "global"):
            raise ValueError(
                "`scope` must be 'layer' or 'global'. "
                f"Received: scope={scope!r}"
            )
        if structure is None:
            structure = (
                "block"
                if block is not None
                else "n_m"
                if n_m is not None
                else "unstructured"
            )
        if structure not in masks_lib.STRUCTURES:
            raise ValueError(
                f"`structure` must be one of {masks_lib.STRUCTURES}. "
                f"Received: structure={structure!r}"
            )
        if structure == "block":
            if block is None or len(block) != 2 or min(block) < 1:
                raise ValueError(
                    "`block` must be a pair of positive integers (rows, cols) "
                    f"for structure='block'. Received: block={block!r}"
                )
            block = tuple(int(b) for b in block)
        if structure == "n_m":
            if n_m is None or len(n_m) != 2 or not 0 < n_m[0] < n_m[1]:
                raise ValueError(
                    "`n_m` must be a pair (n, m) with 0 < n < m for "
                    f"structure='n_m'. Received: n_m={n_m!r}"
                )
            n_m = tuple(int(v) for v in n_m)
        if block_pooling not in ("avg", "max"):
            raise ValueError(
                "`block_pooling` must be 'avg' or 'max'. "
                f"Received: block_pooling={block_pooling!r}"
            )
        self.schedule = schedule
        self.targets = targets
        self.scope = scope
        self.structure = structure
        self.block = block
        self.n_m = n_m
        self.block_pooling = block_pooling
        self.step = 0
        self.target_sparsity = 0.0
        self.retraces = 0
        self._layers = []
        self._keys = []
        self._kernels = []
        self._masks = []
        self._constraints = []

    # -- state -------------------------------------------------------------
    @property
    def mask_variables(self):
        """The non-trainable mask variables, one per target kernel."""
        return list(self._masks)

    @property
    def target_layers(self):
        """The layers with pruned kernels (each listed once)."""
        out = []
        for layer in self._layers:
            if all(layer is not x for x in out):
                out.append(layer)
        return out

    @property
    def target_weights(self):
        """`{key: kernel variable}` of the pruned kernels.

        `key` is the layer name for a layer's `kernel`, `"layer/attr"` for
        other projections (e.g. `MixtureOfExperts`' `"moe/kernel_in"`).
        """
        return dict(zip(self._keys, self._kernels))

    def _attach(self):
        model = self.model
        found = find_target_weights(model, self.targets)
        if not found:
            raise ValueError("The model has no layers to prune (`targets`).")
        self._layers = [f[0] for f in found]
        self._keys = [f[1] for f in found]
        self._kernels = [f[2] for f in found]
        self._masks = []
        self._constraints = []
        step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        resumed = step > getattr(self.schedule, "begin_step", 0)
        for key, kernel in zip(self._keys, self._kernels):
            c = kernel.constraint
            if not isinstance(c, _MaskConstraint):
                mask = keras.Variable(
                    np.ones(kernel.shape, "float32"),
                    trainable=False,
                    dtype="float32",
                    name=f"{key.replace('/', '_')}_prune_mask",
                )
                c = _MaskConstraint(mask, c)
                kernel.constraint = c
                if resumed:
                    # Past a pruning step (e.g. restored by BackupAndRestore):
                    # rebuild the mask from the kernel's zeros. Before any,
                    # keep all weights (zero-initialised kernels such as
                    # LAuReL's `lr_kernel_b` must be free to train).
                    w = keras.ops.convert_to_numpy(kernel.value)
                    mask.assign((w != 0).astype("float32"))
            self._masks.append(c.mask)
            self._constraints.append(c)

    def _needs_retrace(self, masks=None):
        """Whether the train function must be rebuilt to see the masks.

        Always after a constraint is attached to a kernel. On JAX also when
        a mask differs from the one the jitted step was traced with (JAX
        bakes it in as a constant); TensorFlow and PyTorch read the mask
        variable at every step.
        """
        fn = self.model.train_function
        for i, c in enumerate(self._constraints):
            if fn is None or c.traced_function is not fn:
                return True
            if keras.backend.backend() == "jax":
                m = (
                    masks[i]
                    if masks is not None
                    else keras.ops.convert_to_numpy(c.mask)
                )
                if not np.array_equal(c.traced_mask, m):
                    return True
        return False

    def _retrace(self):
        self.model.make_train_function(force=True)
        fn = self.model.train_function
        for c in self._constraints:
            c.traced_function = fn
            c.traced_mask = keras.ops.convert_to_numpy(c.mask).copy()
        self.retraces += 1

    def _prune(self, sparsity):
        self.model  # noqa: B018 (on JAX, syncs the jitted state back)
        kernels = [keras.ops.convert_to_numpy(v.value) for v in self._kernels]
        new = masks_lib.compute_masks(
            kernels,
            sparsity,
            self.structure,
            scope=self.scope,
            block=self.block,
            n_m=self.n_m,
            pooling=self.block_pooling,
        )
        for variable, mask, k, m in zip(
            self._kernels, self._masks, kernels, new
        ):
            mask.assign(m)
            variable.assign((k * m).astype(k.dtype))
        if self._needs_retrace(new):
            self._retrace()

    def achieved_sparsity(self):
        """Fraction of zeros over all target kernels."""
        n = z = 0
        self.model  # noqa: B018 (syncs JAX state)
        for variable in self._kernels:
            w = keras.ops.convert_to_numpy(variable.value)
            n += w.size
            z += int((w == 0).sum())
        return z / max(n, 1)

    # -- callback hooks ----------------------------------------------------
    def on_train_begin(self, logs=None):
        # Attach at the first batch, after other callbacks' on_train_begin
        # (BackupAndRestore restores weights and optimizer there).
        self._started = False

    def _start(self):
        self._attach()
        self.step = int(
            keras.ops.convert_to_numpy(self.model.optimizer.iterations)
        )
        self.target_sparsity = float(self.schedule.sparsity(self.step))
        if self._needs_retrace():
            self._retrace()
        self._started = True

    def on_train_batch_begin(self, batch, logs=None):
        if not getattr(self, "_started", False):
            self._start()
        should_prune, sparsity = self.schedule(self.step)
        if should_prune:
            self.target_sparsity = sparsity
            self._prune(sparsity)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and getattr(self, "_started", False):
            target = self.target_sparsity
            if self.structure == "n_m" and target > 0:
                target = 1.0 - self.n_m[0] / self.n_m[1]
            logs["pruning_target_sparsity"] = float(target)
            logs["pruning_sparsity"] = float(self.achieved_sparsity())

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "targets": self.targets if not callable(self.targets) else None,
            "scope": self.scope,
            "structure": self.structure,
            "block": self.block,
            "n_m": self.n_m,
            "block_pooling": self.block_pooling,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(
            config["schedule"]
        )
        return cls(**config)
