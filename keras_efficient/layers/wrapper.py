"""One base for the layers that wrap a layer (private)."""

from typing import Any

import keras

from keras_efficient._validation import check_instance


class LayerWrapper(keras.layers.Wrapper):
    """`keras.layers.Wrapper` that keeps the wrapped layer's shape.

    It checks the wrapped layer, builds it on `inner_shape(input_shape)`
    after the subclass has created its own weights (subclasses call
    `super().build(input_shape)` last), and serializes it under the config
    key `layer_key` (`"layer"`, or `"block"` for `LaurelBlock`). The wrapper
    returns a tensor of its input's shape.
    """

    layer_key = "layer"

    def __init__(self, layer: keras.layers.Layer, **kwargs: Any):
        check_instance(
            self.layer_key, layer, keras.layers.Layer, "a Keras layer or model"
        )
        super().__init__(layer, **kwargs)

    def inner_shape(self, input_shape: tuple) -> tuple:
        """The shape the wrapped layer is built on."""
        return input_shape

    def build(self, input_shape: tuple) -> None:
        super().build(self.inner_shape(tuple(input_shape)))

    def compute_output_shape(
        self, input_shape: tuple, *args: Any, **kwargs: Any
    ) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config[self.layer_key] = config.pop("layer")
        return config

    @classmethod
    def from_config(
        cls, config: dict, custom_objects: dict | None = None
    ) -> "LayerWrapper":
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(
            config.pop(cls.layer_key), custom_objects=custom_objects
        )
        return cls(layer, **config)
