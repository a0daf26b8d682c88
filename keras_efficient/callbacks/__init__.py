"""Public callbacks of keras-efficient."""
