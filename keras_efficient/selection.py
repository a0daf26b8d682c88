"""Alias of the selection strategies' modules (their 0.1.0 home).

`keras_efficient.selection.X` keeps working for every strategy, the
rounding functions (`dependent_rounding`, `robust_marginals`,
`capped_proportional`) and `get`.
"""

from keras_efficient.distillation.coreset import CoresetSelection
from keras_efficient.distillation.rounding import capped_proportional
from keras_efficient.distillation.rounding import dependent_rounding
from keras_efficient.distillation.rounding import robust_marginals
from keras_efficient.distillation.sleeping_experts import (
    SleepingExpertsSelection,
)
from keras_efficient.distillation.strategies import STRATEGIES
from keras_efficient.distillation.strategies import EntropySelection
from keras_efficient.distillation.strategies import MarginSelection
from keras_efficient.distillation.strategies import RobustSelection
from keras_efficient.distillation.strategies import SelectionContext
from keras_efficient.distillation.strategies import SelectionStrategy
from keras_efficient.distillation.strategies import UniformSelection
from keras_efficient.distillation.strategies import get
from keras_efficient.distillation.strategies import student_margin

__all__ = [
    "STRATEGIES",
    "CoresetSelection",
    "EntropySelection",
    "MarginSelection",
    "RobustSelection",
    "SelectionContext",
    "SelectionStrategy",
    "SleepingExpertsSelection",
    "UniformSelection",
    "capped_proportional",
    "dependent_rounding",
    "get",
    "robust_marginals",
    "student_margin",
]
