"""AltUp: alternating updates of a widened token representation.

"Alternating Updates for Efficient Transformers" (Baykal et al., NeurIPS
2023) widens the representation of every token K times, to K blocks of width
d, while each layer still computes on a single block of width d. The widened
representation is one tensor of shape `(batch, ..., K, d)`: a block axis
before the feature axis. Layers outside AltUp never see it.

`AltUp` wraps one layer: predict all K blocks from each other, run the layer
on the active predicted block only, correct all blocks with the layer's
innovation. How the coefficients are made is one of the algorithms of
`coefficients.py`.
"""

import contextlib
from typing import Any

import keras
from keras import ops
from keras.src.backend import AutocastScope

from keras_efficient._validation import check_bool
from keras_efficient._validation import check_choice
from keras_efficient._validation import check_int
from keras_efficient._validation import check_number
from keras_efficient._validation import check_optional_number
from keras_efficient._validation import check_positive_int
from keras_efficient.layers._shapes import check_blocks_shape
from keras_efficient.layers._shapes import check_call_width
from keras_efficient.layers.altup import block_ops
from keras_efficient.layers.altup.coefficients import AltUpCoefficients
from keras_efficient.layers.altup.coefficients import RoutedCoefficients
from keras_efficient.layers.altup.coefficients import coefficient_algorithm
from keras_efficient.layers.wrapper import LayerWrapper

COEFFICIENT_MODES = ("static", "routed")
ROUTINGS = ("gemma3n", "active_input")
CLIP_MODES = ("weights", None)


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

    `coefficients="routed"` is Gemma 3n's AltUp (keras-hub's and Hugging
    Face's `Gemma3nTextAltUp`): per token, with the router
    `r(z) = tanh((rmsnorm(z) * s / d) @ W_r)` (`s` a learned norm scale),
    `xhat = x + C x` with `C = reshape(r(x_a) @ W_p, (K, K))` (the
    prediction routed on the active *input* block) and
    `x_new_i = xhat_i + (1 + (r(y) @ W_c)_i) * (y - xhat_a)` (the
    correction routed on the *activated* block y). `W_p` and `W_c` start at
    zero, so the layer starts as the static one. `AltUp.from_gemma3n`
    copies a keras-hub layer's weights. `routing="active_input"` keeps the
    form of keras-efficient 0.1 (both coefficients from the active input,
    no norm scale); saved 0.1 configs load with it.

    `coefficient_clip = c`: for static coefficients (and the 0.1 routing)
    the learned deviations `p - I` and `g - 1` are clipped to `[-c, c]`.
    For Gemma 3n routing, `clip_mode="weights"` is Hugging Face's: `W_c`
    (always) and `W_p` (in training) are used clamped to `[-c, c]`, and an
    optimizer constraint keeps them clamped; `clip_mode=None` is keras-hub's
    (the clip is stored and never applied).

    The three algorithms are classes of `altup.coefficients`, picked from
    `coefficients` and `routing` and kept as `coefficient_algorithm`:
    `StaticCoefficients`, `Gemma3nRouting` and `ActiveInputRouting`.

    The wrapped layer must map `(batch, ..., d)` to `(batch, ..., d)`, a
    residual block typically (it returns `x + f(x)`): AltUp replaces the
    residual stream, not the residual connection.

    Args:
        layer: the `keras.layers.Layer` to wrap (called on width d only).
        num_blocks: number of blocks K, `>= 1`.
        active_block: the block the layer computes on, in `[0, K)`.
        coefficients: `"static"` or `"routed"`.
        coefficient_clip: `None` or a number `> 0` (see above).
        epsilon: epsilon of the router's RMS normalisation (routed only).
        routing: `"gemma3n"` (default) or `"active_input"` (routed only).
        clip_mode: `"weights"` (Hugging Face) or `None` (keras-hub); Gemma
            3n routing only.
        output_scale: whether to create Gemma 3n's learned output scale
            `correct_output_scale` (d values, zeros at init), applied by
            `scale_corrected_output` (Gemma 3n scales the active corrected
            block for its per-layer-input branch, not the residual stream;
            `call` does not apply it).
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
        layer: keras.layers.Layer,
        num_blocks: int = 2,
        active_block: int = 0,
        coefficients: str = "static",
        coefficient_clip: float | None = None,
        epsilon: float = 1e-6,
        routing: str = "gemma3n",
        clip_mode: str | None = "weights",
        output_scale: bool = False,
        **kwargs: Any,
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
        self.routing = check_choice("routing", routing, ROUTINGS)
        self.clip_mode = check_choice("clip_mode", clip_mode, CLIP_MODES)
        self.output_scale = check_bool("output_scale", output_scale)
        self.coefficient_algorithm: AltUpCoefficients = coefficient_algorithm(
            self.coefficients,
            self.routing,
            num_blocks=num_blocks,
            clip=self.coefficient_clip,
            epsilon=self.epsilon,
            clip_mode=self.clip_mode,
        )

    def build(self, input_shape: tuple) -> None:
        input_shape = tuple(input_shape)
        check_blocks_shape(input_shape, self.num_blocks, "AltUp")
        self.width = int(input_shape[-1])
        self.coefficient_algorithm.build(self, self.width)
        if self.output_scale:
            self.correct_output_scale = self.add_weight(
                name="correct_output_scale",
                shape=(self.width,),
                initializer="zeros",
            )
        super().build(input_shape)

    def inner_shape(self, input_shape: tuple) -> tuple:
        return input_shape[:-2] + (input_shape[-1],)

    def route(self, z: Any) -> Any:
        """The router of the routed algorithms: K values a token."""
        if not isinstance(self.coefficient_algorithm, RoutedCoefficients):
            raise ValueError(
                "`route` needs routed coefficients. Received: "
                f"coefficients={self.coefficients!r}"
            )
        z = ops.convert_to_tensor(z, dtype=self.compute_dtype)
        return self.coefficient_algorithm.route(self, z)

    def compute_coefficients(
        self, inputs: Any, outputs: Any = None, training: bool | None = None
    ) -> tuple[Any, Any]:
        """Returns `(p, g)`: `(K, K)` and `(K,)`, or per token.

        Routed: `p` of shape `(batch, ..., K, K)` and `g` `(batch, ..., K)`.
        Gemma 3n routing computes `g` from the layer's `outputs` (`None`
        if `outputs` is not given).
        """
        inputs = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        # Read the weights in the compute dtype, as a call does: outside one,
        # a mixed policy's float32 weights met bfloat16 inputs (an error on
        # TensorFlow, float32 results elsewhere).
        with _autocast_scope(self):
            algorithm = self.coefficient_algorithm
            p = algorithm.prediction(self, inputs, training)
            if algorithm.gain_reads_outputs:
                if outputs is None:
                    return p, None
                outputs = ops.convert_to_tensor(outputs, self.compute_dtype)
            return p, algorithm.correction_gain(self, inputs, outputs)

    def predict(self, inputs: Any, p: Any) -> Any:
        """The prediction step: `xhat_i = sum_j p[i, j] x_j`."""
        return block_ops.predict(inputs, p, self.num_blocks)

    def correct(self, predictions: Any, outputs: Any, g: Any) -> Any:
        """The correction step: `xhat_i + g[i] * (y - xhat_a)`."""
        return block_ops.correct(predictions, outputs, g, self.active_block)

    def scale_corrected_output(self, corrected: Any) -> Any:
        """Gemma 3n's learned output scale on a width-d block."""
        corrected = ops.convert_to_tensor(corrected, self.compute_dtype)
        return corrected * ops.cast(self.correct_output_scale, corrected.dtype)

    def _compute(self, predictions, training):
        active = predictions[..., self.active_block, :]
        outputs = self.layer(active, training=training)
        if outputs.shape[-1] != self.width:
            raise ValueError(
                "The wrapped `layer` must keep the width d of its input. "
                f"Received: layer={self.layer.name} maps width {self.width} "
                f"to shape {tuple(outputs.shape)}"
            )
        # A wrapped layer under another policy (e.g. float32 inside a
        # mixed_bfloat16 AltUp) is mixed into the blocks in AltUp's dtype.
        return ops.cast(outputs, predictions.dtype)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        check_call_width(self, inputs, getattr(self, "width", None))
        algorithm = self.coefficient_algorithm
        predictions = algorithm.predict(self, inputs, training)
        outputs = self._compute(predictions, training)
        g = algorithm.correction_gain(self, inputs, outputs)
        return self.correct(predictions, outputs, g)

    @classmethod
    def from_gemma3n(
        cls,
        altup: keras.layers.Layer,
        layer: keras.layers.Layer,
        clip_mode: str | None = "weights",
        **kwargs: Any,
    ) -> "AltUp":
        """An `AltUp` with the weights of keras-hub's `Gemma3nTextAltUp`.

        keras-hub keeps the K blocks on a leading axis `(K, batch, T, d)`,
        this layer on `(batch, T, K, d)`; the outputs are the same.

        Args:
            altup: a built `keras_hub`'s `Gemma3nTextAltUp`.
            layer: the layer to wrap (Gemma 3n's decoder block body).
            clip_mode: `"weights"` or `None`.
            **kwargs: other `AltUp` arguments (`name`, `dtype`, ...).
        """
        if not altup.built:
            raise ValueError(
                "`altup` must be built (its weights are copied). Received: "
                f"an unbuilt {type(altup).__name__}"
            )
        new = cls(
            layer,
            num_blocks=altup.altup_num_inputs,
            active_block=altup.altup_active_idx,
            coefficients="routed",
            coefficient_clip=altup.altup_coef_clip,
            epsilon=altup.rms_norm_eps,
            clip_mode=clip_mode,
            output_scale=bool(altup.altup_correct_scale),
            **kwargs,
        )
        new.build((None, None, altup.altup_num_inputs, altup.hidden_size))
        pairs = [
            (new.router_norm_scale, altup.router_norm.scale),
            (new.router_kernel, altup.modality_router.kernel),
            (new.prediction_kernel, altup.prediction_coefs.kernel),
            (new.correction_kernel, altup.correction_coefs.kernel),
        ]
        if new.output_scale:
            pairs.append((new.correct_output_scale, altup.correct_output_scale))
        for ours, theirs in pairs:
            ours.assign(ops.convert_to_numpy(theirs))
        return new

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_blocks": self.num_blocks,
                "active_block": self.active_block,
                "coefficients": self.coefficients,
                "coefficient_clip": self.coefficient_clip,
                "epsilon": self.epsilon,
                "routing": self.routing,
                "clip_mode": self.clip_mode,
                "output_scale": self.output_scale,
            }
        )
        return config

    @classmethod
    def from_config(
        cls, config: dict, custom_objects: dict | None = None
    ) -> "AltUp":
        config = dict(config)
        # Configs saved before Gemma 3n routing keep their 0.1 behaviour.
        config.setdefault("routing", "active_input")
        return super().from_config(config, custom_objects=custom_objects)


def _autocast_scope(layer: keras.layers.Layer) -> Any:
    """The autocast scope a call of `layer` runs in (none if unmixed)."""
    if layer.compute_dtype == layer.variable_dtype:
        return contextlib.nullcontext()
    return AutocastScope(layer.compute_dtype)
