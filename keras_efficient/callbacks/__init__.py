"""Callbacks for `model.fit`: a public face re-exporting from their homes,
`keras_efficient.distillation.active` and `keras_efficient.pruning`."""

from keras_efficient.distillation.active import ActiveDistillation
from keras_efficient.pruning import MagnitudePruning

__all__ = ["ActiveDistillation", "MagnitudePruning"]
