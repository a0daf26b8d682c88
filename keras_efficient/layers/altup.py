"""AltUp: alternating updates of a widened token representation.

"Alternating Updates for Efficient Transformers" (Baykal et al., NeurIPS
2023) widens the representation of every token K times, to K blocks of width
d, while each layer still computes on a single block of width d. The widened
representation is one tensor of shape `(batch, ..., K, d)`: a block axis
before the feature axis. Layers outside AltUp never see it.

- `AltUp` wraps one layer: predict all K blocks from each other, run the
  layer on the active predicted block only, correct all blocks with the
  layer's innovation.
- `AltUpStack` wraps a list of layers and assigns the active-block schedule.
- `AltUpInput`, `AltUpEmbedding` and `AltUpReadout` (in `altup_io`, also
  importable from here) make the widened representation and reduce it.
"""

import keras
from keras import ops

from keras_efficient._validation import check_choice
from keras_efficient._validation import check_int
from keras_efficient._validation import check_number
from keras_efficient._validation import check_optional_number
from keras_efficient._validation import check_positive_int
from keras_efficient.layers.altup_io import AltUpEmbedding  # noqa: F401
from keras_efficient.layers.altup_io import AltUpInput  # noqa: F401
from keras_efficient.layers.altup_io import AltUpReadout  # noqa: F401
from keras_efficient.layers.altup_io import check_blocks_shape
from keras_efficient.layers.wrapper import LayerWrapper

COEFFICIENT_MODES = ("static", "routed")
SCHEDULES = ("alternating", "same")


def active_blocks(num_layers, num_blocks, schedule="alternating"):
    """The active block of each layer of an AltUp stack.

    Args:
        num_layers: number of layers.
        num_blocks: number of blocks K.
        schedule: `"alternating"` (layer l computes on block `l mod K`) or
            `"same"` (always block 0).

    Returns:
        A list of `num_layers` integers in `[0, num_blocks)`.

    Example:

    >>> from keras_efficient.layers.altup import active_blocks
    >>> active_blocks(5, 2)
    [0, 1, 0, 1, 0]
    """
    check_positive_int("num_blocks", num_blocks)
    check_choice("schedule", schedule, SCHEDULES)
    if schedule == "same":
        return [0] * num_layers
    return [layer % num_blocks for layer in range(num_layers)]


def _rms_normalize(x, epsilon):
    variance = ops.mean(ops.square(x), axis=-1, keepdims=True)
    return x * ops.rsqrt(variance + epsilon)


@keras.saving.register_keras_serializable(package="keras_efficient")
class AltUp(LayerWrapper):
    """Alternating-updates wrapper: a layer of width d on K blocks of width d.

    The input is a widened representation of shape `(batch, ..., K, d)`.
    With coefficients `p` (K x K) and `g` (K), the wrapper computes (Baykal
    et al., "Alternating Updates for Efficient Transformers", NeurIPS 2023):

    1. predict: `xhat_i = sum_j p[i, j] x_j` for every block i;
    2. compute: `y = layer(xhat_a)` on the active block a only, at width d;
    3. correct: `x_new_i = xhat_i + g[i] * (y - xhat_a)` for every block i.

    `coefficients="static"` learns `p` and `g` per layer (K^2 + K scalars),
    initialised to `p = I`, `g = 1`, so at init every block receives the same
    residual update and `K = 1` is exactly the wrapped layer.
    `coefficients="routed"` (the form Gemma 3n uses) makes them per token
    from the active input block: `r = tanh(W_r rmsnorm(x_a) / d)` (K values),
    `p = I + reshape(W_p r, (K, K))`, `g = 1 + W_c r`, with `W_p` and `W_c`
    initialised to zeros (so the layer starts as the static one at init).
    In both modes `coefficient_clip = c` clips the learned deviations
    `p - I` and `g - 1` elementwise to `[-c, c]` in every call.

    The wrapped layer must map `(batch, ..., d)` to `(batch, ..., d)`, a
    residual block typically (it returns `x + f(x)`): AltUp replaces the
    residual stream, not the residual connection.

    Args:
        layer: the `keras.layers.Layer` to wrap (called on width d only).
        num_blocks: number of blocks K, `>= 1`.
        active_block: the block the layer computes on, in `[0, K)`.
        coefficients: `"static"` or `"routed"`.
        coefficient_clip: `None` or a number `> 0` bounding `|p - I|` and
            `|g - 1|` elementwise.
        epsilon: epsilon of the router's RMS normalisation (routed only).
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(batch, ..., K, d)`.
        training: passed to the wrapped layer.

    Returns:
        A tensor of the input's shape.

    Example:

    >>> import keras, numpy as np
    >>> from keras_efficient.layers import AltUp
    >>> altup = AltUp(keras.layers.Dense(16), num_blocks=2, active_block=1)
    >>> altup(np.ones((4, 10, 2, 16), "float32")).shape
    (4, 10, 2, 16)
    """

    def __init__(
        self,
        layer,
        num_blocks=2,
        active_block=0,
        coefficients="static",
        coefficient_clip=None,
        epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(layer, **kwargs)
        num_blocks = check_positive_int("num_blocks", num_blocks)
        self.num_blocks = num_blocks
        self.active_block = check_int(
            "active_block", active_block, 0, num_blocks - 1
        )
        self.coefficients = check_choice(
            "coefficients", coefficients, COEFFICIENT_MODES
        )
        self.coefficient_clip = check_optional_number(
            "coefficient_clip",
            coefficient_clip,
            min_value=0,
            min_inclusive=False,
        )
        self.epsilon = check_number("epsilon", epsilon, min_value=0)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        check_blocks_shape(input_shape, self.num_blocks, "AltUp")
        k = self.num_blocks
        self.width = int(input_shape[-1])
        if self.coefficients == "static":
            self.prediction_coefficients = self.add_weight(
                name="prediction_coefficients",
                shape=(k, k),
                initializer="identity",
            )
            self.correction_coefficients = self.add_weight(
                name="correction_coefficients",
                shape=(k,),
                initializer="ones",
            )
        else:
            self.router_kernel = self.add_weight(
                name="router_kernel",
                shape=(self.width, k),
                initializer="glorot_uniform",
            )
            self.prediction_kernel = self.add_weight(
                name="prediction_kernel", shape=(k, k * k), initializer="zeros"
            )
            self.correction_kernel = self.add_weight(
                name="correction_kernel", shape=(k, k), initializer="zeros"
            )
        super().build(input_shape)

    def inner_shape(self, input_shape):
        return input_shape[:-2] + (input_shape[-1],)

    def _clip(self, delta):
        if self.coefficient_clip is None:
            return delta
        return ops.clip(delta, -self.coefficient_clip, self.coefficient_clip)

    def compute_coefficients(self, inputs):
        """Returns `(p, g)` for `inputs`.

        Static: `p` of shape `(K, K)` and `g` of shape `(K,)`. Routed: per
        token, `p` of shape `(batch, ..., K, K)` and `g` `(batch, ..., K)`.
        """
        inputs = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        k = self.num_blocks
        eye = ops.eye(k, dtype=self.compute_dtype)
        if self.coefficients == "static":
            p = eye + self._clip(self.prediction_coefficients - eye)
            g = 1.0 + self._clip(self.correction_coefficients - 1.0)
            return p, g
        active = inputs[..., self.active_block, :]
        normed = _rms_normalize(active, self.epsilon)
        router = ops.tanh(ops.matmul(normed / self.width, self.router_kernel))
        delta_p = ops.matmul(router, self.prediction_kernel)
        delta_p = ops.reshape(delta_p, ops.shape(router)[:-1] + (k, k))
        p = eye + self._clip(delta_p)
        g = 1.0 + self._clip(ops.matmul(router, self.correction_kernel))
        return p, g

    def predict(self, inputs, p):
        """The prediction step: `xhat_i = sum_j p[i, j] x_j`."""
        # A broadcast multiply-and-sum over the K blocks: XLA fuses it into
        # one loop, where an einsum / matmul with a contraction of size K
        # costs transposes (measured ~1.5x slower on CPU).
        products = ops.expand_dims(p, -1) * ops.expand_dims(inputs, -3)
        return ops.sum(products, axis=-2)

    def correct(self, predictions, outputs, g):
        """The correction step: `xhat_i + g[i] * (y - xhat_a)`."""
        active = predictions[..., self.active_block, :]
        innovation = ops.expand_dims(outputs - active, axis=-2)
        return predictions + ops.expand_dims(g, -1) * innovation

    def call(self, inputs, training=None):
        p, g = self.compute_coefficients(inputs)
        predictions = self.predict(inputs, p)
        active = predictions[..., self.active_block, :]
        outputs = self.layer(active, training=training)
        if outputs.shape[-1] != self.width:
            raise ValueError(
                "The wrapped `layer` must keep the width d of its input. "
                f"Received: layer={self.layer.name} maps width {self.width} "
                f"to shape {tuple(outputs.shape)}"
            )
        return self.correct(predictions, outputs, g)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_blocks": self.num_blocks,
                "active_block": self.active_block,
                "coefficients": self.coefficients,
                "coefficient_clip": self.coefficient_clip,
                "epsilon": self.epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_efficient")
class AltUpStack(keras.layers.Layer):
    """A stack of layers, each wrapped in `AltUp`, with an active schedule.

    Layer l computes on block `l mod K` (`schedule="alternating"`, the
    paper's default) or always on block 0 (`schedule="same"`). Input and
    output are widened representations `(batch, ..., K, d)`; put an
    `AltUpInput` or `AltUpEmbedding` before and an `AltUpReadout` after.

    Args:
        layers: list of `keras.layers.Layer`, each mapping width d to d.
        num_blocks: number of blocks K, `>= 1`.
        schedule: `"alternating"` or `"same"`.
        coefficients: `"static"` or `"routed"` (see `AltUp`).
        coefficient_clip: `None` or a number `> 0` (see `AltUp`).
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tensor of shape `(batch, ..., K, d)`.
        training: passed to the wrapped layers.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_efficient.layers import AltUpStack
    >>> blocks = [keras.layers.Dense(16, activation="relu") for _ in range(3)]
    >>> stack = AltUpStack(blocks, num_blocks=2)
    >>> stack(np.ones((4, 10, 2, 16), "float32")).shape
    (4, 10, 2, 16)
    """

    def __init__(
        self,
        layers,
        num_blocks=2,
        schedule="alternating",
        coefficients="static",
        coefficient_clip=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(layers, keras.layers.Layer) or not isinstance(
            layers, (list, tuple)
        ):
            raise ValueError(
                "`layers` must be a list of `keras.layers.Layer`. "
                f"Received: layers={layers!r}"
            )
        if not layers:
            raise ValueError("`layers` must not be empty. Received: layers=[]")
        schedule_blocks = active_blocks(len(layers), num_blocks, schedule)
        self.layers = list(layers)
        self.num_blocks = int(num_blocks)
        self.schedule = schedule
        self.coefficients = coefficients
        self.coefficient_clip = coefficient_clip
        self.altup_layers = [
            AltUp(
                layer,
                num_blocks=num_blocks,
                active_block=active,
                coefficients=coefficients,
                coefficient_clip=coefficient_clip,
                dtype=self.dtype_policy,
                name=f"altup_{index}",
            )
            for index, (layer, active) in enumerate(
                zip(self.layers, schedule_blocks)
            )
        ]

    def build(self, input_shape):
        check_blocks_shape(tuple(input_shape), self.num_blocks, "AltUpStack")
        for layer in self.altup_layers:
            layer.build(input_shape)

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.altup_layers:
            x = layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "layers": [
                    keras.saving.serialize_keras_object(layer)
                    for layer in self.layers
                ],
                "num_blocks": self.num_blocks,
                "schedule": self.schedule,
                "coefficients": self.coefficients,
                "coefficient_clip": self.coefficient_clip,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layers"] = [
            keras.saving.deserialize_keras_object(layer)
            for layer in config["layers"]
        ]
        return cls(**config)
