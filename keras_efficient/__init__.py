"""keras-efficient: efficient deep-learning methods for Keras 3.

Layers, losses, callbacks and ready-made models that run on the JAX,
TensorFlow and PyTorch backends:

- `keras_efficient.layers`: LAuReL, AltUp, sparse lookup tables, LSH MoE.
- `keras_efficient.distillation`: teacher-accuracy estimation, SLaM,
  debiased distillation, temperature KD, budgeted active query selection.
- `keras_efficient.pruning`: schedules, structures, the pruning callback,
  strip and report, evaluation beyond test accuracy.
- `keras_efficient.compress`: prune a trained Transformer by importance
  on calibration data, then distil it from the original.
- `keras_efficient.losses`, `keras_efficient.callbacks`: the losses and
  callbacks above, gathered where Keras users look for them.
- `keras_efficient.applications`: ResNets and a Transformer LM that switch
  these methods on by argument.
- `keras_efficient.optimizers`: lazy (touched-row) Adam and SGD for big
  tables.
- `keras_efficient.datasets`: offline data for tutorials and benchmarks.
"""

from keras_efficient import applications
from keras_efficient import callbacks
from keras_efficient import compress
from keras_efficient import datasets
from keras_efficient import distillation
from keras_efficient import layers
from keras_efficient import losses
from keras_efficient import optimizers
from keras_efficient import pruning

__version__ = "0.2.0.dev0"

__all__ = [
    "applications",
    "callbacks",
    "compress",
    "datasets",
    "distillation",
    "layers",
    "losses",
    "optimizers",
    "pruning",
]
