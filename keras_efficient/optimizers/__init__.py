"""Optimizers of keras-efficient: lazy (touched-row) Adam and SGD."""

from keras_efficient.optimizers.lazy import LazyAdam
from keras_efficient.optimizers.lazy import LazySGD
from keras_efficient.optimizers.table_limits import check_table_optimizer

__all__ = ["LazyAdam", "LazySGD", "check_table_optimizer"]
