"""Public callbacks of keras-efficient."""

from keras_efficient.callbacks.active_selection import ActiveDistillation  # noqa: F401
from keras_efficient.callbacks.pruning import MagnitudePruning  # noqa: F401
