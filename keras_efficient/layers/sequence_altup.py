"""Sequence-AltUp: alternating updates along the sequence axis."""

import keras
from keras import ops

from keras_efficient.layers.altup import _check_positive_int


@keras.saving.register_keras_serializable(package="keras_efficient")
class SequenceAltUp(keras.layers.Layer):
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

    >>> layer = SequenceAltUp(keras.layers.Dense(16), stride=2)
    >>> layer(np.ones((4, 10, 16), "float32")).shape
    (4, 10, 16)
    """

    def __init__(self, layer, stride=2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                "`layer` must be a `keras.layers.Layer` instance. "
                f"Received: layer={layer!r}"
            )
        _check_positive_int("stride", stride)
        self.layer = layer
        self.stride = int(stride)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 3:
            raise ValueError(
                "SequenceAltUp expects inputs of shape (batch, sequence, ..., "
                f"d) (rank >= 3). Received: input_shape={input_shape}"
            )
        self.gains = self.add_weight(
            name="gains", shape=(self.stride,), initializer="ones"
        )
        length = input_shape[1]
        if length is not None:
            length = -(-length // self.stride)
        if not self.layer.built:
            self.layer.build((input_shape[0], length) + input_shape[2:])

    def call(self, inputs, training=None):
        s = self.stride
        anchors = inputs[:, ::s] if s > 1 else inputs
        outputs = self.layer(anchors, training=training)
        if s == 1:
            return inputs + self.gains[0] * (outputs - inputs)
        length = ops.shape(inputs)[1]
        innovation = ops.repeat(outputs - anchors, s, axis=1)[:, :length]
        gains = ops.take(self.gains, ops.arange(length) % s)
        gains = ops.reshape(gains, (-1,) + (1,) * (len(inputs.shape) - 2))
        return inputs + gains * innovation

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "layer": keras.saving.serialize_keras_object(self.layer),
                "stride": self.stride,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)
