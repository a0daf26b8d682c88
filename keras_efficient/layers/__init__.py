"""Public layers of keras-efficient."""

from keras_efficient.layers.altup.ends import AltUpEmbedding  # noqa: F401
from keras_efficient.layers.altup.ends import AltUpInput  # noqa: F401
from keras_efficient.layers.altup.ends import AltUpReadout  # noqa: F401
from keras_efficient.layers.altup.layer import AltUp  # noqa: F401
from keras_efficient.layers.altup.stack import AltUpStack  # noqa: F401
from keras_efficient.layers.altup.stack import active_blocks  # noqa: F401
from keras_efficient.layers.laurel import LaurelResidual  # noqa: F401
from keras_efficient.layers.laurel_stack import LaurelBlock  # noqa: F401
from keras_efficient.layers.laurel_stack import LaurelStack  # noqa: F401
from keras_efficient.layers.lookup import SparseLookupTable  # noqa: F401
from keras_efficient.layers.lsh import LSHHash  # noqa: F401
from keras_efficient.layers.moe import MixtureOfExperts  # noqa: F401
from keras_efficient.layers.sequence_altup import SequenceAltUp  # noqa: F401
