"""Pruning schedules with tfmot semantics (step -> prune now?, sparsity).

Every schedule answers twice: in Python (`schedule(step)`, for reports and
the batch-0 masks computed before the loop) and with `keras.ops`
(`schedule.tensor_call(step)`, traced into the compiled train step). Steps
follow tfmot: batch `i` (0-based) of training uses step `s = i + 1`.
"""

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_efficient import _validation as v


def _check_sparsity(name, value):
    return v.check_fraction(name, value)


def _check_steps(begin_step, end_step, frequency, end_required):
    begin_step = v.check_int("begin_step", begin_step, min_value=0)
    frequency = v.check_positive_int("frequency", frequency)
    if end_required:
        end_step = v.check_int("end_step", end_step, min_value=begin_step + 1)
    elif not (v.is_integer(end_step) and int(end_step) == -1):
        end_step = v.check_int("end_step", end_step, min_value=begin_step)
    return begin_step, int(end_step), frequency


class PruningSchedule:
    """Base class: `schedule(step)` returns `(should_prune, sparsity)`.

    Subclasses set `begin_step`, `end_step` (-1: no end) and `frequency`,
    and implement `sparsity(step)` (Python) and `tensor_sparsity(step)`
    (`keras.ops`, float32). Pruning happens at step `s` when
    `s >= begin_step`, `s <= end_step` (or `end_step == -1`) and
    `(s - begin_step) % frequency == 0`.
    """

    def _should_prune(self, step):
        return (
            step >= self.begin_step
            and (self.end_step == -1 or step <= self.end_step)
            and (step - self.begin_step) % self.frequency == 0
        )

    def sparsity(self, step: int) -> float:
        raise NotImplementedError

    def tensor_sparsity(self, step: Any) -> Any:
        raise NotImplementedError

    def peak_sparsity(self) -> float:
        """The largest sparsity the schedule reaches (Python float).

        `MagnitudePruning(layer_sparsity=...)` scales the schedule for a
        layer by `layer_target / peak_sparsity()`.
        """
        raise NotImplementedError

    def __call__(self, step: int) -> tuple[bool, float]:
        step = v.check_int("step", step)
        return self._should_prune(step), float(self.sparsity(step))

    def tensor_call(self, step: Any) -> tuple[Any, Any]:
        """`(should_prune, sparsity)` as tensors (bool, float32).

        `step` is an integer tensor (e.g. traced inside the train step);
        the result equals `self(step)` up to float32 rounding.
        """
        step = ops.cast(step, "int32")
        should = ops.logical_and(
            ops.greater_equal(step, self.begin_step),
            ops.equal(ops.mod(step - self.begin_step, self.frequency), 0),
        )
        if self.end_step != -1:
            should = ops.logical_and(
                should, ops.less_equal(step, self.end_step)
            )
        return should, ops.cast(self.tensor_sparsity(step), "float32")

    @classmethod
    def from_config(cls, config: dict) -> "PruningSchedule":
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_efficient")
class ConstantSparsity(PruningSchedule):
    """Prune to a constant sparsity every `frequency` steps.

    Same semantics as tfmot's `ConstantSparsity`: pruning happens at step `s`
    when `s >= begin_step`, `s <= end_step` (or `end_step == -1`) and
    `(s - begin_step) % frequency == 0`.

    Args:
        target_sparsity: fraction of weights set to zero, in [0, 1).
        begin_step: first step (optimizer iteration) at which to prune.
        end_step: last step at which to prune, or -1 for no end;
            `end_step == begin_step` prunes once (one-shot).
        frequency: prune every `frequency` steps.

    Example:

    >>> s = ConstantSparsity(0.9, begin_step=0, frequency=100)
    >>> s(200)
    (True, 0.9)
    """

    def __init__(
        self,
        target_sparsity: float,
        begin_step: int = 0,
        end_step: int = -1,
        frequency: int = 100,
    ):
        self.target_sparsity = _check_sparsity(
            "target_sparsity", target_sparsity
        )
        self.begin_step, self.end_step, self.frequency = _check_steps(
            begin_step, end_step, frequency, end_required=False
        )

    def sparsity(self, step: int) -> float:
        return self.target_sparsity

    def tensor_sparsity(self, step: Any) -> Any:
        return ops.full((), self.target_sparsity, "float32")

    def peak_sparsity(self) -> float:
        return self.target_sparsity

    def get_config(self) -> dict:
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="keras_efficient")
class PolynomialDecay(PruningSchedule):
    """Raise sparsity from `initial_sparsity` to `final_sparsity` polynomially.

    With `p = clip((s - begin_step) / (end_step - begin_step), 0, 1)`, the
    target is `final + (initial - final) * (1 - p) ** power` (tfmot's
    `PolynomialDecay`, Zhu & Gupta 2017).

    Args:
        initial_sparsity: sparsity at `begin_step`, in [0, 1).
        final_sparsity: sparsity at and after `end_step`, in [0, 1).
        begin_step: first pruning step.
        end_step: last pruning step, > `begin_step`.
        power: exponent of the decay (3 is the usual cubic schedule).
        frequency: prune every `frequency` steps.

    Example:

    >>> s = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000)
    >>> round(s(1000)[1], 3)
    0.8
    """

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        power: float = 3,
        frequency: int = 100,
    ):
        self.initial_sparsity = _check_sparsity(
            "initial_sparsity", initial_sparsity
        )
        self.final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        self.begin_step, self.end_step, self.frequency = _check_steps(
            begin_step, end_step, frequency, end_required=True
        )
        self.power = v.check_number("power", power, min_value=0.0)

    def sparsity(self, step: int) -> float:
        p = (step - self.begin_step) / (self.end_step - self.begin_step)
        p = min(max(p, 0.0), 1.0)
        return (
            self.final_sparsity
            + (self.initial_sparsity - self.final_sparsity)
            * (1.0 - p) ** self.power
        )

    def tensor_sparsity(self, step: Any) -> Any:
        span = float(self.end_step - self.begin_step)
        p = ops.cast(step - self.begin_step, "float32") / span
        p = ops.clip(p, 0.0, 1.0)
        return self.final_sparsity + (
            self.initial_sparsity - self.final_sparsity
        ) * ops.power(1.0 - p, self.power)

    def peak_sparsity(self) -> float:
        return max(self.initial_sparsity, self.final_sparsity)

    def get_config(self) -> dict:
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="keras_efficient")
class IterativePruning(PruningSchedule):
    """Prune-retrain cycles: prune to `sparsities[i]`, retrain, repeat.

    Cycle `i` prunes once at step `begin_step + i * steps_per_cycle` (one
    cycle = `retrain_epochs * steps_per_epoch` steps) to `sparsities[i]`, then
    the weights retrain under that mask until the next cycle ("Lost in
    Pruning"'s iterative / torchprune's cascade mode). Build geometric
    sequences with `IterativePruning.geometric`.

    Args:
        sparsities: increasing list of per-cycle sparsities in [0, 1).
        steps_per_cycle: training steps between two pruning events.
        begin_step: step of the first pruning event.

    Example:

    >>> s = IterativePruning.geometric(0.9, prune_fraction=0.5,
    ...                                steps_per_cycle=100)
    >>> first_three = s.sparsities[:3]
    >>> tuple(round(x, 3) for x in first_three)
    (0.5, 0.75, 0.875)
    """

    def __init__(
        self,
        sparsities: Sequence[float],
        steps_per_cycle: int,
        begin_step: int = 0,
    ):
        if isinstance(sparsities, (str, bytes)) or not (
            hasattr(sparsities, "__len__") and len(sparsities)
        ):
            v.fail("sparsities", "a non-empty list of numbers", sparsities)
        self.sparsities = [_check_sparsity("sparsities", s) for s in sparsities]
        self.steps_per_cycle = v.check_positive_int(
            "steps_per_cycle", steps_per_cycle
        )
        self.begin_step = v.check_int("begin_step", begin_step, min_value=0)
        self.frequency = self.steps_per_cycle
        self.end_step = self.begin_step + self.steps_per_cycle * (
            len(self.sparsities) - 1
        )

    @staticmethod
    def geometric_sparsities(
        final_sparsity: float, prune_fraction: float = 0.1
    ) -> list[float]:
        """Sparsities removing `prune_fraction` of remaining weights a cycle.

        Keep ratios are `(1 - prune_fraction) ** i` for `i = 1, 2, ...` until
        the keep ratio reaches `1 - final_sparsity` (the last cycle is clipped
        to `final_sparsity`).
        """
        final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        prune_fraction = v.check_fraction(
            "prune_fraction", prune_fraction, allow_zero=False
        )
        out, keep = [], 1.0
        while True:
            keep *= 1.0 - prune_fraction
            if 1.0 - keep >= final_sparsity - 1e-12:
                out.append(float(final_sparsity))
                return out
            out.append(1.0 - keep)

    @classmethod
    def geometric(
        cls,
        final_sparsity: float,
        prune_fraction: float = 0.1,
        steps_per_cycle: int = 100,
        begin_step: int = 0,
    ) -> "IterativePruning":
        """An `IterativePruning` with `geometric_sparsities` cycles."""
        return cls(
            cls.geometric_sparsities(final_sparsity, prune_fraction),
            steps_per_cycle,
            begin_step,
        )

    def sparsity(self, step: int) -> float:
        i = (step - self.begin_step) // self.steps_per_cycle
        i = min(max(i, 0), len(self.sparsities) - 1)
        return self.sparsities[i] if step >= self.begin_step else 0.0

    def tensor_sparsity(self, step: Any) -> Any:
        i = ops.floor_divide(step - self.begin_step, self.steps_per_cycle)
        i = ops.clip(i, 0, len(self.sparsities) - 1)
        values = ops.convert_to_tensor(self.sparsities, "float32")
        return ops.where(
            ops.greater_equal(step, self.begin_step), ops.take(values, i), 0.0
        )

    def peak_sparsity(self) -> float:
        return max(self.sparsities)

    def get_config(self) -> dict:
        return {
            "sparsities": list(self.sparsities),
            "steps_per_cycle": self.steps_per_cycle,
            "begin_step": self.begin_step,
        }
