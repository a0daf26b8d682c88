"""Pruning: schedules, masks and structures, the `MagnitudePruning`
callback, strip and report, evaluation beyond test accuracy."""

from keras_efficient.pruning.callback import MagnitudePruning
from keras_efficient.pruning.evaluation import compare_to_dense
from keras_efficient.pruning.evaluation import noisy_accuracy
from keras_efficient.pruning.evaluation import prune_potential
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
    "MagnitudePruning",
    "PolynomialDecay",
    "PruningSchedule",
    "compare_to_dense",
    "compute_masks",
    "noisy_accuracy",
    "prune_potential",
    "sparsity_report",
    "strip_pruning",
]
