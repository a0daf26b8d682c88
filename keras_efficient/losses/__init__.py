"""Losses for `model.compile`: a public face re-exporting from
`keras_efficient.distillation`, where they live."""

from keras_efficient.distillation import DebiasedDistillationLoss
from keras_efficient.distillation import DistillationLossAdapter
from keras_efficient.distillation import KnowledgeDistillationLoss
from keras_efficient.distillation import PseudoLabelLoss
from keras_efficient.distillation import SLaMLoss

# Not a loss; importable from here since 0.1.0.
from keras_efficient.distillation import TeacherAccuracy

__all__ = [
    "DebiasedDistillationLoss",
    "DistillationLossAdapter",
    "KnowledgeDistillationLoss",
    "PseudoLabelLoss",
    "SLaMLoss",
    "TeacherAccuracy",
]
