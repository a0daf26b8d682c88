"""Compression of trained Transformers: prune by importance, then distil.

- `transformer_importance`: activation (Minitron), first-order Taylor
  (LLM-Pruner) or magnitude importance of every feed-forward neuron,
  attention head and hidden channel, in the format `shrink` takes.
- `compress`: a trained model and calibration data in, the same class at
  the target widths out.
- `distill`: knowledge distillation from the original model into the
  compressed one (logits, optionally block outputs through a learned
  projection).
"""

from keras_efficient.compress.calibration import calibration_batches
from keras_efficient.compress.distill import distill
from keras_efficient.compress.distill import make_distiller
from keras_efficient.compress.importance import transformer_importance
from keras_efficient.compress.prune import compress
from keras_efficient.compress.prune import compress_plan

__all__ = [
    "calibration_batches",
    "compress",
    "compress_plan",
    "distill",
    "make_distiller",
    "transformer_importance",
]
