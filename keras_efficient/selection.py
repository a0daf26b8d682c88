"""Alias of `keras_efficient.distillation.strategies` (its 0.1.0 home)."""

from keras_efficient.distillation.strategies import *  # noqa: F401,F403
