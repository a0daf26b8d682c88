"""Public losses of keras-efficient."""
