"""Distillation: teacher-accuracy estimation, distillation losses and their
`keras.distillation` adapter; active query selection under a teacher
budget lives in the `active` subpackage.

The active-selection names exported here since 0.1.0 (`ActiveDistillation`,
the strategies, ...) are re-exported from `keras_efficient.distillation.active`,
their public home.
"""

from keras_efficient.distillation.active import ActiveDistillation
from keras_efficient.distillation.active import BADGESelection
from keras_efficient.distillation.active import BALDSelection
from keras_efficient.distillation.active import CoresetSelection
from keras_efficient.distillation.active import EntropySelection
from keras_efficient.distillation.active import MarginSelection
from keras_efficient.distillation.active import QueriedDataset
from keras_efficient.distillation.active import RobustSelection
from keras_efficient.distillation.active import SelectionContext
from keras_efficient.distillation.active import SelectionState
from keras_efficient.distillation.active import SelectionStrategy
from keras_efficient.distillation.active import SleepingExpertsSelection
from keras_efficient.distillation.active import TeacherQueryError
from keras_efficient.distillation.active import UniformSelection
from keras_efficient.distillation.active import dependent_rounding
from keras_efficient.distillation.active import robust_marginals
from keras_efficient.distillation.adapters import DistillationLossAdapter
from keras_efficient.distillation.debiased import DebiasedDistillationLoss
from keras_efficient.distillation.kd import KnowledgeDistillationLoss
from keras_efficient.distillation.pseudo_label import PseudoLabelLoss
from keras_efficient.distillation.slam import SLaMLoss
from keras_efficient.distillation.teacher_accuracy import TeacherAccuracy

__all__ = [
    "ActiveDistillation",
    "BADGESelection",
    "BALDSelection",
    "CoresetSelection",
    "DebiasedDistillationLoss",
    "DistillationLossAdapter",
    "EntropySelection",
    "KnowledgeDistillationLoss",
    "MarginSelection",
    "PseudoLabelLoss",
    "QueriedDataset",
    "RobustSelection",
    "SLaMLoss",
    "SelectionContext",
    "SelectionState",
    "SelectionStrategy",
    "SleepingExpertsSelection",
    "TeacherAccuracy",
    "TeacherQueryError",
    "UniformSelection",
    "dependent_rounding",
    "robust_marginals",
]
