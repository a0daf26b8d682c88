"""Public layers of keras-efficient."""
