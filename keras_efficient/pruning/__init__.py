"""Magnitude pruning: schedules, masks, strip and report, evaluation."""

from keras_efficient.pruning.masks import compute_masks
from keras_efficient.pruning.schedules import ConstantSparsity
from keras_efficient.pruning.schedules import IterativePruning
from keras_efficient.pruning.schedules import PolynomialDecay
from keras_efficient.pruning.schedules import PruningSchedule
from keras_efficient.pruning.strip import sparsity_report
from keras_efficient.pruning.strip import strip_pruning

__all__ = [
    "ConstantSparsity",
    "IterativePruning",
    "PolynomialDecay",
    "PruningSchedule",
    "compute_masks",
    "sparsity_report",
    "strip_pruning",
]
