"""Sequence-AltUp: alternating updates along the sequence axis."""

from typing import Any

import keras
from keras import ops

from keras_efficient._validation import check_positive_int
from keras_efficient.layers._shapes import check_call_width
from keras_efficient.layers.wrapper import LayerWrapper


@keras.saving.register_keras_serializable(package="keras_efficient")
class SequenceAltUp(LayerWrapper):
    """Runs a layer on every `stride`-th token and propagates its update.

    Sequence-AltUp applies the AltUp idea along the sequence (Baykal et al.,
    "Alternating Updates for Efficient Transformers", NeurIPS 2023): the
    wrapped layer runs only on the anchor tokens `t = 0, s, 2s, ...` (a
    sequence `s` times shorter), and every token t receives the innovation
    of its anchor `a(t) = s * floor(t / s)`, the nearest anchor at or
    before t:

        x_new[t] = x[t] + g[t mod s] * (y[a(t)] - x[a(t)])

    where `y = layer(x[anchors])` and `g` holds `s` learned scalars
    initialised to 1 (so at init anchors get the layer's output and the
    other tokens copy their anchor's residual update). The paper gives no
    reference code: this is our formulation. It is causal whenever the
    wrapped layer is causal: token t only ever sees anchors at or before
    t. `stride=1` is exactly the wrapped layer.

    The wrapped layer must map `(batch, n, ...)` to the same shape (a
    residual block, typically).

    Args:
        layer: the `keras.layers.Layer` to wrap.
        stride: the anchor spacing s, `>= 1`.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(batch, sequence, ..., d)`; the sequence is
            axis 1.
        training: passed to the wrapped layer.

    Returns:
        A tensor of the input's shape.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_efficient.layers import SequenceAltUp
    >>> layer = SequenceAltUp(keras.layers.Dense(16), stride=2)
    >>> layer(np.ones((4, 10, 16), "float32")).shape
    (4, 10, 16)
    """

    def __init__(
        self, layer: keras.layers.Layer, stride: int = 2, **kwargs: Any
    ):
        super().__init__(layer, **kwargs)
        self.stride = check_positive_int("stride", stride)

    def build(self, input_shape: tuple) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) < 3:
            raise ValueError(
                "SequenceAltUp expects inputs of shape (batch, sequence, ..., "
                f"d) (rank >= 3). Received: input_shape={input_shape}"
            )
        self._built_width = input_shape[-1]
        self.gains = self.add_weight(
            name="gains", shape=(self.stride,), initializer="ones"
        )
        super().build(input_shape)

    def inner_shape(self, input_shape: tuple) -> tuple:
        """The anchors' shape: the sequence is `stride` times shorter."""
        length = input_shape[1]
        if length is not None:
            length = -(-length // self.stride)
        return (input_shape[0], length) + input_shape[2:]

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        check_call_width(self, inputs, getattr(self, "_built_width", None))
        s = self.stride
        anchors = inputs[:, ::s] if s > 1 else inputs
        outputs = self.layer(anchors, training=training)
        if tuple(outputs.shape)[2:] != tuple(anchors.shape)[2:]:
            raise ValueError(
                "The wrapped `layer` must keep the shape of its input. "
                f"Received: layer={self.layer.name} maps shape "
                f"{tuple(anchors.shape)} to {tuple(outputs.shape)}"
            )
        if s == 1:
            return inputs + self.gains[0] * (outputs - inputs)
        length = ops.shape(inputs)[1]
        innovation = ops.repeat(outputs - anchors, s, axis=1)[:, :length]
        gains = ops.take(self.gains, ops.arange(length) % s)
        gains = ops.reshape(gains, (-1,) + (1,) * (len(inputs.shape) - 2))
        return inputs + gains * innovation

    def get_config(self) -> dict:
        config = super().get_config()
        config["stride"] = self.stride
        return config
