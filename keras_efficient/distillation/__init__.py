"""Distillation: teacher-accuracy estimation, distillation losses, their
`keras.distillation` adapters, and budgeted active query selection."""

from keras_efficient.distillation.active import ActiveDistillation
from keras_efficient.distillation.active import TeacherQueryError
from keras_efficient.distillation.adapters import DistillationLossAdapter
from keras_efficient.distillation.baselines import BADGESelection
from keras_efficient.distillation.baselines import BALDSelection
from keras_efficient.distillation.coreset import CoresetSelection
from keras_efficient.distillation.dataset import QueriedDataset
from keras_efficient.distillation.debiased import DebiasedDistillationLoss
from keras_efficient.distillation.kd import KnowledgeDistillationLoss
from keras_efficient.distillation.pseudo_label import PseudoLabelLoss
from keras_efficient.distillation.rounding import dependent_rounding
from keras_efficient.distillation.rounding import robust_marginals
from keras_efficient.distillation.slam import SLaMLoss
from keras_efficient.distillation.sleeping_experts import (
    SleepingExpertsSelection,
)
from keras_efficient.distillation.state import SelectionState
from keras_efficient.distillation.strategies import EntropySelection
from keras_efficient.distillation.strategies import MarginSelection
from keras_efficient.distillation.strategies import RobustSelection
from keras_efficient.distillation.strategies import SelectionContext
from keras_efficient.distillation.strategies import SelectionStrategy
from keras_efficient.distillation.strategies import UniformSelection
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
