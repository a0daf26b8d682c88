"""Active selection: spend a teacher-query budget on the points that help.

The public home of `ActiveDistillation` (the callback), its training data
(`QueriedDataset`), its budget ledger (`SelectionState`) and the selection
strategies with what they read (`SelectionContext`) and the rounding they
share. `keras_efficient.distillation` re-exports the names it exported
before; `keras_efficient.selection` is a deprecated alias.
"""

from keras_efficient.distillation.active.baselines import BADGESelection
from keras_efficient.distillation.active.baselines import BALDSelection
from keras_efficient.distillation.active.callback import ActiveDistillation
from keras_efficient.distillation.active.context import SelectionContext
from keras_efficient.distillation.active.context import student_margin
from keras_efficient.distillation.active.coreset import CoresetSelection
from keras_efficient.distillation.active.dataset import QueriedDataset
from keras_efficient.distillation.active.errors import TeacherQueryError
from keras_efficient.distillation.active.ledger import SelectionState
from keras_efficient.distillation.active.rounding import capped_proportional
from keras_efficient.distillation.active.rounding import dependent_rounding
from keras_efficient.distillation.active.rounding import robust_marginals
from keras_efficient.distillation.active.sleeping_experts import (
    SleepingExpertsSelection,
)
from keras_efficient.distillation.active.strategies import STRATEGIES
from keras_efficient.distillation.active.strategies import EntropySelection
from keras_efficient.distillation.active.strategies import MarginSelection
from keras_efficient.distillation.active.strategies import RobustSelection
from keras_efficient.distillation.active.strategies import SelectionStrategy
from keras_efficient.distillation.active.strategies import UniformSelection
from keras_efficient.distillation.active.strategies import get

__all__ = [
    "STRATEGIES",
    "ActiveDistillation",
    "BADGESelection",
    "BALDSelection",
    "CoresetSelection",
    "EntropySelection",
    "MarginSelection",
    "QueriedDataset",
    "RobustSelection",
    "SelectionContext",
    "SelectionState",
    "SelectionStrategy",
    "SleepingExpertsSelection",
    "TeacherQueryError",
    "UniformSelection",
    "capped_proportional",
    "dependent_rounding",
    "get",
    "robust_marginals",
    "student_margin",
]
