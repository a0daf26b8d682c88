"""Pruning: schedules, masks and structures, the `MagnitudePruning`
callback, strip and report, evaluation beyond test accuracy, structural
removal (`shrink`), sensitivity analysis and a sparsity policy."""

from keras_efficient.pruning.callback import MagnitudePruning
from keras_efficient.pruning.cost import compare_cost
from keras_efficient.pruning.cost import measure_latency
from keras_efficient.pruning.cost import model_cost
from keras_efficient.pruning.evaluation import compare_to_dense
from keras_efficient.pruning.evaluation import noisy_accuracy
from keras_efficient.pruning.evaluation import noisy_prune_potential
from keras_efficient.pruning.evaluation import prune_potential
from keras_efficient.pruning.masks import compute_masks
from keras_efficient.pruning.policy import sparsity_policy
from keras_efficient.pruning.schedules import ConstantSparsity
from keras_efficient.pruning.schedules import IterativePruning
from keras_efficient.pruning.schedules import PolynomialDecay
from keras_efficient.pruning.schedules import PruningSchedule
from keras_efficient.pruning.sensitivity import SensitivityTable
from keras_efficient.pruning.sensitivity import plot_sensitivity
from keras_efficient.pruning.sensitivity import sensitivity_analysis
from keras_efficient.pruning.shrink import find_groups
from keras_efficient.pruning.shrink import shrink
from keras_efficient.pruning.shrink import zero_units
from keras_efficient.pruning.strip import sparsity_report
from keras_efficient.pruning.strip import strip_pruning
from keras_efficient.pruning.transformer_units import select_transformer_units
from keras_efficient.pruning.transformer_units import transformer_widths
from keras_efficient.pruning.transformer_width import shrink_transformer
from keras_efficient.pruning.transformer_width import zero_transformer_units

__all__ = [
    "ConstantSparsity",
    "SensitivityTable",
    "IterativePruning",
    "MagnitudePruning",
    "PolynomialDecay",
    "PruningSchedule",
    "compare_cost",
    "compare_to_dense",
    "compute_masks",
    "find_groups",
    "measure_latency",
    "model_cost",
    "noisy_accuracy",
    "noisy_prune_potential",
    "plot_sensitivity",
    "prune_potential",
    "select_transformer_units",
    "sensitivity_analysis",
    "shrink",
    "shrink_transformer",
    "sparsity_policy",
    "sparsity_report",
    "strip_pruning",
    "transformer_widths",
    "zero_transformer_units",
    "zero_units",
]
