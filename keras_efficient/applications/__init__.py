"""Public applications of keras-efficient."""
