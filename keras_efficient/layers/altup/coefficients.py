"""AltUp's three coefficient algorithms, one class each.

`AltUp` predicts the K blocks with coefficients `p` (K x K) and corrects
them with gains `g` (K). How `p` and `g` are made is one of three
algorithms, chosen from `AltUp`'s `coefficients` and `routing` arguments by
`coefficient_algorithm`:

- `StaticCoefficients`: `p` and `g` learned per layer (Baykal et al.,
  NeurIPS 2023).
- `ActiveInputRouting`: `p` and `g` routed per token on the active input
  block (keras-efficient 0.1's routed AltUp).
- `Gemma3nRouting`: Gemma 3n's AltUp (keras-hub's and Hugging Face's
  `Gemma3nTextAltUp`): `p` routed on the active input block, `g` on the
  layer's output.

An algorithm creates its weights on the `AltUp` layer in `build`, under the
names and in the order 0.1.0 saved them, so `.keras` files keep loading.
"""

import abc
from typing import Any

import keras
from keras import ops


def _rms_normalize(x, epsilon):
    variance = ops.mean(ops.square(x), axis=-1, keepdims=True)
    return x * ops.rsqrt(variance + epsilon)


def _clip(delta, clip):
    if clip is None:
        return delta
    return ops.clip(delta, -clip, clip)


def _straight_through_clip(kernel, clip):
    """`clip(kernel)` in the forward pass, the identity in the backward one.

    Hugging Face clamps the weights in place before using them, so the
    gradient is taken at the clamped value and flows unchanged.
    """
    return kernel + ops.stop_gradient(ops.clip(kernel, -clip, clip) - kernel)


class _ClipWeights(keras.constraints.Constraint):
    """Clamps a weight to `[-clip, clip]` after each optimizer step."""

    def __init__(self, clip: float):
        self.clip = clip

    def __call__(self, w: Any) -> Any:
        return ops.clip(w, -self.clip, self.clip)

    def get_config(self) -> dict:
        return {"clip": self.clip}


class AltUpCoefficients(abc.ABC):
    """How an `AltUp` layer makes its prediction `p` and correction `g`.

    Subclasses create their weights on the layer in `build` and read them
    back in `predict` and `correction_gain`; `AltUp.call` runs
    `predict` -> the wrapped layer -> `correction_gain` -> `AltUp.correct`.

    Args:
        num_blocks: number of blocks K.
        clip: `None` or the bound `c > 0` of the learned deviations.
    """

    # Whether `g` is computed from the wrapped layer's output.
    gain_reads_outputs = False

    def __init__(self, num_blocks: int, clip: float | None):
        self.num_blocks = num_blocks
        self.clip = clip

    @abc.abstractmethod
    def build(self, layer: keras.layers.Layer, width: int) -> None:
        """Creates the coefficient weights on `layer` (block width d)."""

    @abc.abstractmethod
    def prediction(
        self, layer: keras.layers.Layer, inputs: Any, training: bool | None
    ) -> Any:
        """`p`: `(K, K)`, or `(batch, ..., K, K)` when routed per token."""

    @abc.abstractmethod
    def correction_gain(
        self, layer: keras.layers.Layer, inputs: Any, outputs: Any
    ) -> Any:
        """`g`: `(K,)`, or `(batch, ..., K)` when routed per token."""

    def predict(
        self, layer: keras.layers.Layer, inputs: Any, training: bool | None
    ) -> Any:
        """The predicted blocks `xhat_i = sum_j p[i, j] x_j`."""
        return layer.predict(inputs, self.prediction(layer, inputs, training))


class StaticCoefficients(AltUpCoefficients):
    """`p` and `g` learned per layer: K^2 + K scalars, `p = I`, `g = 1` at
    init. With `clip = c`, `p - I` and `g - 1` are clipped to `[-c, c]`."""

    def build(self, layer: keras.layers.Layer, width: int) -> None:
        k = self.num_blocks
        layer.prediction_coefficients = layer.add_weight(
            name="prediction_coefficients",
            shape=(k, k),
            initializer="identity",
        )
        layer.correction_coefficients = layer.add_weight(
            name="correction_coefficients",
            shape=(k,),
            initializer="ones",
        )

    def prediction(
        self, layer: keras.layers.Layer, inputs: Any, training: bool | None
    ) -> Any:
        eye = ops.eye(self.num_blocks, dtype=layer.compute_dtype)
        return eye + _clip(layer.prediction_coefficients - eye, self.clip)

    def correction_gain(
        self, layer: keras.layers.Layer, inputs: Any, outputs: Any
    ) -> Any:
        return 1.0 + _clip(layer.correction_coefficients - 1.0, self.clip)


class RoutedCoefficients(AltUpCoefficients):
    """The router both routed algorithms share: per token,
    `r(z) = tanh(rmsnorm(z) / d @ W_r)`, with the kernels `W_p` (K x K^2)
    and `W_c` (K x K) starting at zero.

    Args:
        num_blocks: number of blocks K.
        clip: `None` or the bound `c > 0` (see the subclasses).
        epsilon: epsilon of the router's RMS normalisation.
    """

    def __init__(self, num_blocks: int, clip: float | None, epsilon: float):
        super().__init__(num_blocks, clip)
        self.epsilon = epsilon

    def build(self, layer: keras.layers.Layer, width: int) -> None:
        self.width = width
        self._build_router_norm(layer, width)
        k = self.num_blocks
        layer.router_kernel = layer.add_weight(
            name="router_kernel",
            shape=(width, k),
            initializer="glorot_uniform",
        )
        constraint = self._kernel_constraint()
        layer.prediction_kernel = layer.add_weight(
            name="prediction_kernel",
            shape=(k, k * k),
            initializer="zeros",
            constraint=constraint,
        )
        layer.correction_kernel = layer.add_weight(
            name="correction_kernel",
            shape=(k, k),
            initializer="zeros",
            constraint=constraint,
        )

    def _build_router_norm(self, layer, width):
        """0.1's router has no learned norm scale."""

    def _kernel_constraint(self):
        return None

    def _normed(self, layer, z):
        return _rms_normalize(z, self.epsilon)

    def route(self, layer: keras.layers.Layer, z: Any) -> Any:
        """The router: K values a token, `tanh` of the normed `z`."""
        normed = self._normed(layer, z)
        routed = ops.matmul(normed * (1.0 / self.width), layer.router_kernel)
        return ops.cast(ops.tanh(ops.cast(routed, "float32")), z.dtype)

    def _route_active(self, layer, inputs):
        return self.route(layer, inputs[..., layer.active_block, :])


class ActiveInputRouting(RoutedCoefficients):
    """keras-efficient 0.1's routed AltUp: `p` and `g` both from the router
    on the active input block, `r = r(x_a)`:
    `p = I + clip(reshape(r @ W_p, (K, K)))`, `g = 1 + clip(r @ W_c)`.

    Args:
        num_blocks: number of blocks K.
        clip: `None` or the bound `c > 0` of `p - I` and `g - 1`.
        epsilon: epsilon of the router's RMS normalisation.
    """

    def prediction(
        self, layer: keras.layers.Layer, inputs: Any, training: bool | None
    ) -> Any:
        router = self._route_active(layer, inputs)
        k = self.num_blocks
        delta = ops.matmul(router, layer.prediction_kernel)
        delta = ops.reshape(delta, ops.shape(router)[:-1] + (k, k))
        return ops.eye(k, dtype=layer.compute_dtype) + _clip(delta, self.clip)

    def correction_gain(
        self, layer: keras.layers.Layer, inputs: Any, outputs: Any
    ) -> Any:
        router = self._route_active(layer, inputs)
        return 1.0 + _clip(
            ops.matmul(router, layer.correction_kernel), self.clip
        )


class Gemma3nRouting(RoutedCoefficients):
    """Gemma 3n's AltUp. With the router `r(z) = tanh((rmsnorm(z) * s / d)
    @ W_r)` (`s` a learned norm scale): `xhat = x + C x` with
    `C = reshape(r(x_a) @ W_p, (K, K))` and `g = 1 + r(y) @ W_c` (routed on
    the layer's output y). `W_p` and `W_c` start at zero.

    Args:
        num_blocks: number of blocks K.
        clip: `None` or the bound `c > 0` of the kernels (see
            `clip_weights`).
        epsilon: epsilon of the router's RMS normalisation.
        clip_weights: Hugging Face's clip: `W_c` (always) and `W_p` (in
            training) are used clamped to `[-c, c]`, and an optimizer
            constraint keeps them clamped. `False` is keras-hub's (the clip
            is stored and never applied).
    """

    def __init__(
        self,
        num_blocks: int,
        clip: float | None,
        epsilon: float,
        clip_weights: bool,
    ):
        super().__init__(num_blocks, clip, epsilon)
        self.clip_weights = bool(clip_weights and clip)

    gain_reads_outputs = True

    def _build_router_norm(self, layer, width):
        layer.router_norm_scale = layer.add_weight(
            name="router_norm_scale",
            shape=(width,),
            initializer="ones",
        )

    def _kernel_constraint(self):
        return _ClipWeights(self.clip) if self.clip_weights else None

    def _normed(self, layer, z):
        return _rms_normalize(z, self.epsilon) * layer.router_norm_scale

    def _kernel(self, kernel, clipped):
        if clipped and self.clip_weights:
            return _straight_through_clip(kernel, self.clip)
        return kernel

    def mix(
        self, layer: keras.layers.Layer, inputs: Any, training: bool | None
    ) -> Any:
        """`C = reshape(r(x_a) @ W_p, (K, K))`, per token."""
        router = self._route_active(layer, inputs)
        w_p = self._kernel(layer.prediction_kernel, bool(training))
        shape = ops.shape(router)[:-1] + (self.num_blocks, self.num_blocks)
        return ops.reshape(ops.matmul(router, w_p), shape)

    def prediction(
        self, layer: keras.layers.Layer, inputs: Any, training: bool | None
    ) -> Any:
        eye = ops.eye(self.num_blocks, dtype=layer.compute_dtype)
        return eye + self.mix(layer, inputs, training)

    def predict(
        self, layer: keras.layers.Layer, inputs: Any, training: bool | None
    ) -> Any:
        # Gemma 3n adds the residual x after the routed mix C x.
        return inputs + layer.predict(inputs, self.mix(layer, inputs, training))

    def correction_gain(
        self, layer: keras.layers.Layer, inputs: Any, outputs: Any
    ) -> Any:
        w_c = self._kernel(layer.correction_kernel, True)
        return ops.matmul(self.route(layer, outputs), w_c) + 1.0


def coefficient_algorithm(
    coefficients: str,
    routing: str,
    num_blocks: int,
    clip: float | None,
    epsilon: float,
    clip_mode: str | None,
) -> AltUpCoefficients:
    """The algorithm `AltUp(coefficients=..., routing=...)` runs."""
    if coefficients == "static":
        return StaticCoefficients(num_blocks, clip)
    if routing == "active_input":
        return ActiveInputRouting(num_blocks, clip, epsilon)
    return Gemma3nRouting(
        num_blocks, clip, epsilon, clip_weights=clip_mode == "weights"
    )
