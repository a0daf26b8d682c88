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
- `AltUpInput` and `AltUpEmbedding` make the widened representation
  (a split of a width-K d vector or embedding table, or Recycled-AltUp: the
  width-d vector replicated K times).
- `AltUpReadout` reduces the K blocks back to width d.
"""

import keras
import numpy as np
from keras import ops

COEFFICIENT_MODES = ("static", "routed")
SCHEDULES = ("alternating", "same")
INPUT_MODES = ("split", "replicate")
READOUT_MODES = ("sum", "mean", "projection")


def _check_positive_int(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < 1
    ):
        raise ValueError(
            f"`{name}` must be an integer >= 1. Received: {name}={value!r}"
        )


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(
            f"`{name}` must be one of {allowed}. Received: {name}={value!r}"
        )


def _check_clip(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise ValueError(
            "`coefficient_clip` must be None or a number > 0. "
            f"Received: coefficient_clip={value!r}"
        )
    if not value > 0:
        raise ValueError(
            "`coefficient_clip` must be None or a number > 0. "
            f"Received: coefficient_clip={value!r}"
        )
    return float(value)


def _check_blocks_shape(input_shape, num_blocks, layer_name):
    if len(input_shape) < 3:
        raise ValueError(
            f"{layer_name} expects a widened input of shape "
            f"(batch, ..., num_blocks, d) (rank >= 3). Received: "
            f"input_shape={tuple(input_shape)}"
        )
    if input_shape[-2] is not None and input_shape[-2] != num_blocks:
        raise ValueError(
            f"{layer_name}: the block axis (second to last) of the input must "
            f"have size num_blocks={num_blocks}. Received: "
            f"input_shape={tuple(input_shape)}"
        )
    if input_shape[-1] is None:
        raise ValueError(
            f"{layer_name}: the last axis (d) of the input must be known. "
            f"Received: input_shape={tuple(input_shape)}"
        )


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

    >>> active_blocks(5, 2)
    [0, 1, 0, 1, 0]
    """
    _check_positive_int("num_blocks", num_blocks)
    _check_choice("schedule", schedule, SCHEDULES)
    if schedule == "same":
        return [0] * num_layers
    return [layer % num_blocks for layer in range(num_layers)]


def _rms_normalize(x, epsilon):
    variance = ops.mean(ops.square(x), axis=-1, keepdims=True)
    return x * ops.rsqrt(variance + epsilon)


@keras.saving.register_keras_serializable(package="keras_efficient")
class AltUp(keras.layers.Layer):
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

    >>> block = keras.layers.Dense(16)
    >>> altup = AltUp(block, num_blocks=2, active_block=1)
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
        super().__init__(**kwargs)
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                "`layer` must be a `keras.layers.Layer` instance. "
                f"Received: layer={layer!r}"
            )
        _check_positive_int("num_blocks", num_blocks)
        if (
            isinstance(active_block, bool)
            or not isinstance(active_block, (int, np.integer))
            or not 0 <= active_block < num_blocks
        ):
            raise ValueError(
                f"`active_block` must be an integer in [0, {num_blocks}) "
                f"(num_blocks={num_blocks}). Received: "
                f"active_block={active_block!r}"
            )
        _check_choice("coefficients", coefficients, COEFFICIENT_MODES)
        self.layer = layer
        self.num_blocks = int(num_blocks)
        self.active_block = int(active_block)
        self.coefficients = coefficients
        self.coefficient_clip = _check_clip(coefficient_clip)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        _check_blocks_shape(input_shape, self.num_blocks, "AltUp")
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
        inner_shape = input_shape[:-2] + (input_shape[-1],)
        if not self.layer.built:
            self.layer.build(inner_shape)

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

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "layer": keras.saving.serialize_keras_object(self.layer),
                "num_blocks": self.num_blocks,
                "active_block": self.active_block,
                "coefficients": self.coefficients,
                "coefficient_clip": self.coefficient_clip,
                "epsilon": self.epsilon,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)


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
        _check_positive_int("num_blocks", num_blocks)
        _check_choice("schedule", schedule, SCHEDULES)
        self.layers = list(layers)
        self.num_blocks = int(num_blocks)
        self.schedule = schedule
        self.coefficients = coefficients
        self.coefficient_clip = _check_clip(coefficient_clip)
        schedule_blocks = active_blocks(len(layers), num_blocks, schedule)
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
        _check_blocks_shape(tuple(input_shape), self.num_blocks, "AltUpStack")
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


def _widen(x, num_blocks, mode):
    if mode == "replicate":
        x = ops.expand_dims(x, axis=-2)
        return ops.repeat(x, num_blocks, axis=-2)
    shape = ops.shape(x)
    width = shape[-1] // num_blocks
    return ops.reshape(x, tuple(shape[:-1]) + (num_blocks, width))


@keras.saving.register_keras_serializable(package="keras_efficient")
class AltUpInput(keras.layers.Layer):
    """Makes the widened representation `(batch, ..., K, d)` from vectors.

    `mode="split"` cuts a vector of width K d (e.g. a widened embedding)
    into K blocks of width d. `mode="replicate"` is Recycled-AltUp: a vector
    of width d is copied into all K blocks, so a width-d embedding serves a
    K-times wider representation with no extra parameters.

    Args:
        num_blocks: number of blocks K, `>= 1`.
        mode: `"split"` or `"replicate"`.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tensor `(batch, ..., D)`; D must be divisible by K for
            `"split"`.

    Example:

    >>> AltUpInput(2, mode="replicate")(np.ones((4, 10, 16))).shape
    (4, 10, 2, 16)
    >>> AltUpInput(2, mode="split")(np.ones((4, 10, 16))).shape
    (4, 10, 2, 8)
    """

    def __init__(self, num_blocks=2, mode="split", **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("num_blocks", num_blocks)
        _check_choice("mode", mode, INPUT_MODES)
        self.num_blocks = int(num_blocks)
        self.mode = mode

    def build(self, input_shape):
        width = input_shape[-1]
        if width is None:
            raise ValueError(
                "AltUpInput: the last axis of the input must be known. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if self.mode == "split" and width % self.num_blocks:
            raise ValueError(
                "AltUpInput(mode='split'): the input width must be divisible "
                f"by num_blocks={self.num_blocks}. Received: input width "
                f"{width} (input_shape={tuple(input_shape)})"
            )

    def call(self, inputs):
        return _widen(inputs, self.num_blocks, self.mode)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        width = input_shape[-1]
        if self.mode == "split":
            width = width // self.num_blocks
        return input_shape[:-1] + (self.num_blocks, width)

    def get_config(self):
        config = super().get_config()
        config.update({"num_blocks": self.num_blocks, "mode": self.mode})
        return config


@keras.saving.register_keras_serializable(package="keras_efficient")
class AltUpEmbedding(keras.layers.Layer):
    """Token embedding into the widened representation `(batch, ..., K, d)`.

    With `recycled=False` the table has width K d and each row is split into
    K blocks (K times the embedding parameters). With `recycled=True`
    (Recycled-AltUp) the table has width d and each row is replicated into
    the K blocks: no extra embedding parameters.

    Args:
        input_dim: vocabulary size, `>= 1`.
        output_dim: block width d, `>= 1`.
        num_blocks: number of blocks K, `>= 1`.
        recycled: whether to replicate a width-d embedding.
        embeddings_initializer: initializer of the table.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: integer token ids `(batch, ...)`.

    Example:

    >>> embedding = AltUpEmbedding(256, 16, num_blocks=2, recycled=True)
    >>> embedding(np.zeros((4, 10), "int32")).shape
    (4, 10, 2, 16)
    """

    def __init__(
        self,
        input_dim,
        output_dim,
        num_blocks=2,
        recycled=False,
        embeddings_initializer="uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("input_dim", input_dim)
        _check_positive_int("output_dim", output_dim)
        _check_positive_int("num_blocks", num_blocks)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.num_blocks = int(num_blocks)
        self.recycled = bool(recycled)
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer
        )

    def build(self, input_shape):
        width = self.output_dim
        if not self.recycled:
            width *= self.num_blocks
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, width),
            initializer=self.embeddings_initializer,
        )

    def call(self, inputs):
        if not backend_is_integer(inputs):
            inputs = ops.cast(inputs, "int32")
        vectors = ops.take(self.embeddings, inputs, axis=0)
        mode = "replicate" if self.recycled else "split"
        return _widen(vectors, self.num_blocks, mode)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.num_blocks, self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "input_dim": self.input_dim,
                "output_dim": self.output_dim,
                "num_blocks": self.num_blocks,
                "recycled": self.recycled,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config


def backend_is_integer(x):
    return "int" in str(keras.backend.standardize_dtype(x.dtype))


@keras.saving.register_keras_serializable(package="keras_efficient")
class AltUpReadout(keras.layers.Layer):
    """Reduces the widened representation `(batch, ..., K, d)` to width d.

    `mode="sum"` or `"mean"` adds or averages the K blocks (the natural
    readout of Recycled-AltUp); `mode="projection"` learns a map from the
    concatenated K d features to d (initialised to the mean of the blocks,
    so the three modes agree at init up to a factor K for `"sum"`).

    Args:
        num_blocks: number of blocks K, `>= 1`.
        mode: `"sum"`, `"mean"` or `"projection"`.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tensor `(batch, ..., K, d)`.

    Example:

    >>> AltUpReadout(2, mode="mean")(np.ones((4, 10, 2, 16))).shape
    (4, 10, 16)
    """

    def __init__(self, num_blocks=2, mode="mean", **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("num_blocks", num_blocks)
        _check_choice("mode", mode, READOUT_MODES)
        self.num_blocks = int(num_blocks)
        self.mode = mode

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        _check_blocks_shape(input_shape, self.num_blocks, "AltUpReadout")
        if self.mode == "projection":
            k, d = self.num_blocks, int(input_shape[-1])
            initial = np.tile(np.eye(d, dtype="float32"), (k, 1)) / k

            def initializer(shape, dtype=None):
                return ops.cast(initial.reshape(shape), dtype or "float32")

            self.kernel = self.add_weight(
                name="kernel", shape=(k * d, d), initializer=initializer
            )

    def call(self, inputs):
        if self.mode == "sum":
            return ops.sum(inputs, axis=-2)
        if self.mode == "mean":
            return ops.mean(inputs, axis=-2)
        shape = ops.shape(inputs)
        flat = ops.reshape(inputs, tuple(shape[:-2]) + (-1,))
        return ops.matmul(flat, self.kernel)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        return input_shape[:-2] + (input_shape[-1],)

    def get_prunable_weights(self):
        """The kernels `MagnitudePruning` may prune (pruning protocol).

        The `(K * d, d)` kernel of `mode="projection"`; none otherwise.
        """
        kernel = getattr(self, "kernel", None)
        return [] if kernel is None else [kernel]

    def get_config(self):
        config = super().get_config()
        config.update({"num_blocks": self.num_blocks, "mode": self.mode})
        return config
