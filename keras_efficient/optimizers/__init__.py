"""Optimizers of keras-efficient: lazy (touched-row) Adam and SGD."""
from keras_efficient.optimizers.lazy import LazyAdam  # noqa: F401
from keras_efficient.optimizers.lazy import LazySGD  # noqa: F401
