"""Public applications of keras-efficient."""

from keras_efficient.applications.resnet import ResNet  # noqa: F401
from keras_efficient.applications.resnet import ResNet18  # noqa: F401
from keras_efficient.applications.resnet import ResNet20  # noqa: F401
from keras_efficient.applications.resnet import ResNet50  # noqa: F401
from keras_efficient.applications.resnet import ResNet56  # noqa: F401
from keras_efficient.applications.transformer_lm import TransformerLM  # noqa: F401
