"""Magnitude pruning callback for Keras 3 (JAX, TensorFlow, PyTorch)."""

from collections.abc import Callable

import keras

from keras_efficient import _validation as v
from keras_efficient.pruning import callback_arguments as args
from keras_efficient.pruning import masks as masks_lib
from keras_efficient.pruning.checks import check_before_fit
from keras_efficient.pruning.plan import PruningOptions
from keras_efficient.pruning.plan import build_plan
from keras_efficient.pruning.schedules import PruningSchedule
from keras_efficient.pruning.state import attach_state
from keras_efficient.pruning.state import innermost_optimizer


@keras.saving.register_keras_serializable(package="keras_efficient")
class MagnitudePruning(keras.callbacks.Callback):
    """Magnitude pruning during `fit`, with tfmot-style schedules.

    On each pruning step of `schedule` the callback recomputes a 0/1 mask per
    target kernel, keeping the `k = max(round(n * (1 - s)), 1)` units with the
    largest magnitude (per layer or globally across targets), and zeroes the
    rest. The masks, the pruning step and the target sparsity are optimizer
    variables (tracked: in the JAX train state, saved by `save_weights` and
    so restored by `BackupAndRestore`). Each kernel gets a constraint
    `w -> w * mask`, which Keras optimizers apply after every update inside
    the compiled train step; the masks are recomputed there with
    `keras.ops` when the schedule says so, by `pruning.update.PruningUpdate`
    (run from the first kernel's constraint, before any mask is applied).
    Changing a mask never retraces the step, and the callback has no batch
    hooks, so Keras keeps dispatching batches asynchronously.

    Steps follow tfmot: batch `i` (0-based) runs at step `s = i + 1`, e.g.
    `ConstantSparsity(0.5, begin_step=0, frequency=4)` prunes at batches 3,
    7, 11, ...; `begin_step=1, end_step=1` prunes once, before the first
    batch. The masks of a batch are computed from the kernels after the
    previous batch's update (the first batch's masks in NumPy, in
    `on_train_begin`), and the step is `optimizer.iterations`, so a resumed
    run continues the schedule exactly.

    Structures (the pruned "unit"; kernels are viewed as `(inputs, outputs)`,
    the last axis being the output axis):

    - `"unstructured"`: single weights.
    - `"block"` with `block=(r, c)`: `r x c` blocks of the 2-D kernel, scored
      by the average (or `block_pooling="max"`) of `|w|`.
    - `"n_m"` with `n_m=(n, m)`: `n` nonzeros in every `m` consecutive
      weights along the input channels (2:4 is what sparse tensor cores
      run), as tfmot's `sparsity_m_by_n`: along `in` of a Dense kernel
      `(in, out)` and along `cin` of a Conv kernel `(*window, cin, cout)`
      at each spatial position and output channel (axis -2 in general).
      Where the input channels are not a multiple of `m`, the last group
      of `r < m` weights keeps its `min(n, r)` largest (tfmot pads it with
      zeros), so such a kernel is a little denser than `n / m`. The
      sparsity is then fixed at `1 - n / m`; the schedule only says when
      to apply it (any step with target sparsity > 0). tfmot's spelling
      `sparsity_m_by_n=(zeros, m)` counts zeros, ours counts nonzeros:
      `n_m=(1, 4)` is `sparsity_m_by_n=(3, 4)`; 2:4 is `(2, 4)` in both.
    - `"filter"`: whole output channels, scored by their L1 norm. When a
      target layer (top level of a Sequential or functional model) feeds
      only a BatchNormalization on its channel axis, that layer's gamma and
      beta are masked too (zero in the pruned channels, kept zero), so
      `strip_pruning` then `shrink` removes those channels. Targets inside
      nested layers or subclassed models get no such follower. On a
      Sequential or functional model filters are pruned *by channel group*
      (unless `group_channels=False`): kernels whose channels are added or
      concatenated (`Add`, `Concatenate`, `LaurelResidual`, grouped as
      `shrink` groups them) keep the same channels, ranked by the L1 norm
      summed over the group, and those channels' biases, batch-norm scale
      / offset and LAuReL up-projections are masked too, so `shrink`
      removes them all. Kernels in no prunable group (model outputs,
      channels under a `LayerNormalization`) are pruned per layer.
    - `"transformer"` (a keras-hub GPT-2 / BERT / Llama / Mistral / Qwen3 /
      Gemma task or backbone, or a `TransformerLM`): whole units of
      `transformer_axes`, scored by the L1 norm of all their weights
      (biases and norms included) and zeroed in all of them: feed-forward
      neurons (up / gate columns, down rows), attention heads (query /
      key / value columns, output rows; with grouped-query attention a
      key / value group with its query heads), hidden channels. Each
      layer keeps `k` of its units, the same `k` in every layer, so
      `shrink(model)` removes exactly what was zeroed (see
      `pruning.transformer_plan`).

    Passing `block=` or `n_m=` (or `sparsity_m_by_n=`) alone selects that
    structure. The epoch logs (so `History`, `CSVLogger` and
    `keras.callbacks.TensorBoard` record them) get
    `pruning_target_sparsity`, `pruning_sparsity` (achieved over the
    targets), `pruning_sparsity/<variable.path>` per target and the
    magnitude threshold: `pruning_threshold/<variable.path>` per target
    with `scope="layer"`, one `pruning_threshold` with `scope="global"`.
    The threshold is the smallest unit score (`|w|`, block average or
    max, filter L1 norm) among the units the current masks keep, scored on
    the kernels at the end of the epoch (`0.0` while nothing is pruned);
    when the masks were updated on the epoch's last batch (e.g.
    `frequency=1`) it is exactly tfmot's threshold, the `k`-th largest
    score. `"n_m"` has no threshold (each group has its own) and logs
    none.

    Args:
        schedule: a `PruningSchedule` (`ConstantSparsity`, `PolynomialDecay`,
            `IterativePruning`).
        targets: None (kernels of Dense, EinsumDense, Conv1D/2D/3D layers,
            nested ones included, and the variables of every layer that
            defines `get_prunable_weights()`, as `LaurelResidual`,
            `MixtureOfExperts` and `AltUpReadout` do), a callable
            `layer -> bool`, or a list of layer names.
        scope: `"layer"` (each kernel at the target sparsity) or `"global"`
            (one magnitude threshold across all targets).
        structure: `"unstructured"`, `"block"`, `"n_m"` or `"filter"`.
        block: `(rows, cols)` block shape for `"block"`.
        n_m: `(n, m)` for `"n_m"`: `n` nonzeros in every `m`.
        block_pooling: `"avg"` or `"max"` for `"block"`.
        layer_sparsity: None, or `{key: final sparsity}` (e.g. the dict
            `sparsity_policy` returns), each key a target layer's name, its
            `layer.path` or a kernel's `variable.path` (e.g.
            `"gpt2_backbone/transformer_layer_0/self_attention/query/
            kernel"`: the names repeat in every block of a keras-hub
            model, the paths do not; the most specific key wins): each
            named kernel is pruned to its own sparsity following the
            schedule's shape, at `schedule_sparsity(step) * layer_target /
            schedule.peak_sparsity()` (so a layer reaches its target when
            the schedule reaches its peak); kernels not named follow the
            schedule unchanged; `0.0` keeps a layer dense. A key that
            names no target raises a `ValueError` listing valid names and
            paths; needs `scope="layer"` and not `"n_m"`.
        sparsity_m_by_n: tfmot's spelling of the N:M pattern,
            `(zeros, m)`: `zeros` zeros in every `m` (for users coming from
            `tfmot.sparsity.keras.prune_low_magnitude`); the same as
            `n_m=(m - zeros, m)`. Give `n_m` or `sparsity_m_by_n`, not
            both.
        group_channels: for `"filter"`: None (by group when the model's
            graph can be read, else per layer with a `UserWarning`), True
            (by group, else a `ValueError`) or False (per layer). With
            `layer_sparsity` a group takes the smallest target of its
            kernels.
        transformer_axes: for `"transformer"`: the axes pruned, some of
            `"ffn"`, `"heads"`, `"hidden"`; None: `("ffn", "heads")`, or
            `("ffn",)` on classes whose head size is `hidden_dim /
            num_heads` (there heads go only with hidden channels).
        n_m_update: `"schedule"` (the N:M masks are recomputed at every
            pruning step of the schedule) or `"first_step"` (tfmot's
            behaviour: computed once, at step 1, whatever the schedule).
        remask_at_epoch_end: as tfmot, which re-masks the kernels at each
            epoch's end: a pruning step that opens an epoch scores the
            kernels masked as the last batch ran (weights that regrew in
            that batch score 0). Needs a known number of steps per epoch.

    `get_config` raises a `ValueError` when `targets` is a callable (a
    function cannot be serialised): pass a list of layer names to save
    the callback's configuration.

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
        MagnitudePruning(ConstantSparsity(0.8, begin_step=1, frequency=2))])
    deployable = strip_pruning(model)
    ```
    """

    def __init__(
        self,
        schedule: PruningSchedule,
        targets: Callable | list[str] | None = None,
        scope: str = "layer",
        structure: str | None = None,
        block: tuple[int, int] | None = None,
        n_m: tuple[int, int] | None = None,
        block_pooling: str = "avg",
        layer_sparsity: dict[str, float] | None = None,
        sparsity_m_by_n: tuple[int, int] | None = None,
        group_channels: bool | None = None,
        transformer_axes: list[str] | None = None,
        n_m_update: str = "schedule",
        remask_at_epoch_end: bool = False,
    ):
        super().__init__()
        self.schedule = v.check_instance(
            "schedule",
            schedule,
            PruningSchedule,
            "a PruningSchedule (ConstantSparsity, PolynomialDecay, "
            "IterativePruning)",
        )
        if targets is not None and not callable(targets):
            if isinstance(targets, str) or not isinstance(
                targets, (list, tuple, set)
            ):
                v.fail(
                    "targets",
                    "None, a callable or a list of layer names",
                    targets,
                )
        self.targets = targets
        self.scope = v.check_choice("scope", scope, ("layer", "global"))
        n_m = masks_lib.resolve_n_m(n_m, sparsity_m_by_n)
        self.sparsity_m_by_n = None
        if sparsity_m_by_n is not None:  # validated: keep the user's form
            self.sparsity_m_by_n = (n_m[1] - n_m[0], n_m[1])
        if structure is None:
            structure = "block" if block is not None else "unstructured"
            structure = "n_m" if n_m is not None else structure
        self.structure = v.check_choice(
            "structure", structure, masks_lib.STRUCTURES + ("transformer",)
        )
        if structure == "block" or block is not None:
            block = v.check_int_tuple("block", block, 2)
        if structure == "n_m" and n_m is None:
            v.fail("n_m", "a pair (n, m) with 0 < n < m", n_m)
        self.block = block
        self.n_m = n_m
        self.block_pooling = v.check_choice(
            "block_pooling", block_pooling, ("avg", "max")
        )
        self.layer_sparsity = args.check_layer_sparsity(
            layer_sparsity, self.scope, self.structure, schedule
        )
        self.group_channels = args.check_group_channels(
            group_channels, self.structure
        )
        self.transformer_axes = args.check_transformer_axes(
            transformer_axes, self.structure, self.scope
        )
        self.n_m_update, self.remask_at_epoch_end = args.check_tfmot_options(
            n_m_update, remask_at_epoch_end, self.structure
        )
        self._plan = None
        self._state = None

    # -- state -------------------------------------------------------------
    @property
    def mask_variables(self) -> list:
        """The mask variables (optimizer variables), one per target."""
        return list(self._state.masks) if self._state else []

    @property
    def target_weights(self) -> dict:
        """`{variable.path: variable}` of the pruned variables."""
        if self._state is None:
            return {}
        return {k.path: k for k in self._state.kernels}

    @property
    def target_layers(self) -> list:
        """The layers with pruned variables (each listed once)."""
        return list(self._plan.layers) if self._plan else []

    @property
    def step(self) -> int:
        """Training steps taken (`iterations` of the masking optimizer)."""
        if self._state is None:
            return 0
        return int(keras.ops.convert_to_numpy(self._state.optimizer.iterations))

    @property
    def pruning_step(self) -> keras.Variable | None:
        """The tfmot step the current masks belong to (a tracked variable:
        `step + 1` after training)."""
        return self._state.step if self._state else None

    def achieved_sparsity(self) -> float:
        """Fraction of zeros over all target variables."""
        self.model  # noqa: B018 (on JAX, syncs the jitted state back)
        return self._state.kernel_sparsity()[1] if self._state else 0.0

    def _options(self) -> PruningOptions:
        return PruningOptions(
            schedule=self.schedule,
            scope=self.scope,
            structure=self.structure,
            block=self.block,
            n_m=self.n_m,
            block_pooling=self.block_pooling,
            n_m_update=self.n_m_update,
            remask_at_epoch_end=self.remask_at_epoch_end,
            transformer_axes=self.transformer_axes,
        )

    def _attach(self, model):
        outer = getattr(model, "optimizer", None)
        if outer is None or not model.trainable_variables:
            return False
        optimizer = innermost_optimizer(outer)
        if not optimizer.built:
            outer.build(model.trainable_variables)
        self._plan = build_plan(
            model,
            self._options(),
            targets=self.targets,
            layer_sparsity=self.layer_sparsity,
            group_channels=self.group_channels,
        )
        self._state, changed = attach_state(optimizer, self._plan)
        if changed and model.train_function is not None:
            model.make_train_function(force=True)
        return True

    # -- callback hooks ----------------------------------------------------
    def set_model(self, model: keras.Model) -> None:
        # `fit` builds its CallbackList after building the model and the
        # optimizer and before `on_train_begin`: the mask variables exist
        # before BackupAndRestore restores the optimizer there.
        super().set_model(model)
        self._attach(model)

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._state is None and not self._attach(self.model):
            raise ValueError("MagnitudePruning needs a compiled model.")
        # Settings that cannot act raise or warn before the first step.
        check_before_fit(self._plan, self.params, self.step)
        self._state.update.before_fit()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if not self.remask_at_epoch_end or self._state is None:
            return
        steps = (self.params or {}).get("steps")
        if not steps:
            raise ValueError(
                "`remask_at_epoch_end=True` needs the number of steps of "
                "an epoch: pass `steps_per_epoch` to `fit` or a dataset "
                f"of known length. Received: steps={steps!r}"
            )
        self._state.epoch_end.assign(self.step + int(steps) - 1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None or self._state is None:
            return
        self.model  # noqa: B018 (on JAX, syncs the jitted state back)
        per_layer, total = self._state.kernel_sparsity()
        logs["pruning_target_sparsity"] = self._state.target_sparsity()
        logs["pruning_sparsity"] = float(total)
        for path, value in per_layer.items():
            logs[f"pruning_sparsity/{path}"] = float(value)
        logs.update(self._thresholds())

    def _thresholds(self):
        """`{log key: threshold}` of the current masks (see the class doc)."""
        if self.structure in ("n_m", "transformer"):
            return {}
        value = keras.ops.convert_to_numpy
        thresholds = masks_lib.mask_thresholds(
            [value(k) for k in self._state.kernels],
            [value(m) for m in self._state.masks],
            self.structure,
            scope=self.scope,
            block=self.block,
            pooling=self.block_pooling,
        )
        if self.scope == "global":
            return {"pruning_threshold": thresholds[0]}
        return {
            f"pruning_threshold/{k.path}": t
            for k, t in zip(self._state.kernels, thresholds)
        }

    def get_config(self) -> dict:
        if callable(self.targets):
            raise ValueError(
                "`MagnitudePruning.get_config` cannot serialise a callable "
                "`targets`; pass a list of layer names instead. Received: "
                f"targets={self.targets!r}"
            )
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "targets": (
                list(self.targets) if self.targets is not None else None
            ),
            "scope": self.scope,
            "structure": self.structure,
            "block": self.block,
            # One spelling only (both is an error): the user's.
            "n_m": None if self.sparsity_m_by_n is not None else self.n_m,
            "block_pooling": self.block_pooling,
            "layer_sparsity": (
                dict(self.layer_sparsity) if self.layer_sparsity else None
            ),
            "sparsity_m_by_n": self.sparsity_m_by_n,
            "group_channels": self.group_channels,
            "transformer_axes": (
                list(self.transformer_axes) if self.transformer_axes else None
            ),
            "n_m_update": self.n_m_update,
            "remask_at_epoch_end": self.remask_at_epoch_end,
        }

    @classmethod
    def from_config(cls, config: dict) -> "MagnitudePruning":
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(
            config["schedule"]
        )
        return cls(**config)
