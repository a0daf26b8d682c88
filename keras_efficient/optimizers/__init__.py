"""Optimizers of keras-efficient: lazy (touched-row) Adam and SGD."""

from keras_efficient.optimizers.lazy import LazyAdam
from keras_efficient.optimizers.lazy import LazySGD

__all__ = ["LazyAdam", "LazySGD"]
