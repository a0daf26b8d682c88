"""LAuReL: learned augmented residual layers.

From "LAuReL: Learned Augmented Residual Layer" (Menghani, Kumar and Kumar,
ICML 2025). The plain residual `x' = f(x) + x` becomes
`x' = alpha * f(x) + g(x, x_{i-1}, ...)` with a learned scalar `alpha` and a
learned, cheap, linear `g`. Every variant is the plain residual at init.

The LAuReL options (`variant`, `rank`, ...) are defined once, by
`laurel_options`; `LaurelResidual`, `LaurelBlock`, `LaurelStack` and the
applications all take them through it. The variant `"gemma3n"` is Gemma
3n's form (an RMS-normed low-rank branch, merged by `/ sqrt(2)`); it is not
the plain residual at init.
"""

import math
from typing import Any

import keras
from keras import ops

from keras_efficient import _backend
from keras_efficient._validation import fail
from keras_efficient.layers._shapes import known_width
from keras_efficient.layers.laurel_ops import rw_lr_fused
from keras_efficient.layers.laurel_ops import rw_lr_reference
from keras_efficient.layers.laurel_ops import rw_lr_softmax_fused
from keras_efficient.layers.laurel_ops import rw_softmax_fused
from keras_efficient.layers.laurel_ops import softmax_weights
from keras_efficient.layers.laurel_options import check_previous
from keras_efficient.layers.laurel_options import laurel_options
from keras_efficient.layers.laurel_options import options_config
from keras_efficient.layers.laurel_options import same_shape
from keras_efficient.layers.laurel_options import set_options

# How `call` computes the RW and RW+LR merges
# (`_backend.resolve_implementation` picks "reference" or "fused"; both give
# the same values and gradients). The fused softmax merges take the logit
# `theta_0 - theta_1`; the reference keeps 0.1.0's expressions.
MERGES = {"reference": rw_lr_reference, "fused": rw_lr_fused}
SOFTMAX_MERGES = {"rw": rw_softmax_fused, "rw+lr": rw_lr_softmax_fused}


def _as_shape(shape):
    return tuple(shape) if shape is not None else None


@keras.saving.register_keras_serializable(package="keras_efficient")
class LaurelResidual(keras.layers.Layer):
    """Learned augmented residual connection (LAuReL), replacing `x + f(x)`.

    LAuReL (Menghani et al., "LAuReL: Learned Augmented Residual Layer",
    ICML 2025) generalises the residual `x' = f(x) + x` to
    `x' = alpha * f(x) + g(x, x_{i-1}, ...)` with learned residual weights
    (RW), a low-rank linear map of `x` (LR) and a learned mix of previous
    block inputs (PA). The six variants are:

    - `"rw"`: `alpha f(x) + beta x`; 2 parameters (2D per-dimension).
    - `"lr"`: `f(x) + x + B(A x)`; 2rD.
    - `"pa"`: `f(x) + x + sum_j gamma_j h_j(x_{i-j})`; k (+ 2rkD if `h_j`
      is low rank).
    - `"rw+lr"`: `alpha f(x) + beta (x + B(A x))`; 2rD + 2.
    - `"rw+pa"`: `alpha f(x) + beta (x + sum_j gamma_j h_j(x_{i-j}))`;
      k + 2 (+ 2rkD if `h_j` is low rank).
    - `"rw+lr+pa"`: `alpha f(x) + beta (x + sum_j gamma_j B_j A_j x_{i-j})`;
      2rkD + k + 2.
    - `"gemma3n"`: Gemma 3n's form (keras-hub's `Gemma3nTextLaurelBlock`
      merged as in its decoder): `(x + f(x) + z + rmsnorm(B(A z)) * s)
      / sqrt(2)`, with `z` the `branch_input` (Gemma 3n passes the
      normed block input; default `x`) and `s` a learned norm scale;
      2rD + D. Not the plain residual at init: `B = 0` gives
      `(x + f(x) + z) / sqrt(2)`. `from_gemma3n` copies keras-hub weights.

    On JAX `"rw"` and `"rw+lr"` compute their merge with a hand-written
    gradient (`laurel_ops`; same values and gradients as the `keras.ops`
    expression): `"rw+lr"` stores only `A x`, and with the softmax
    normalization the residual weights' gradient is one reduction and
    `f(x)` is not stored. The attribute `implementation` (`"auto"`,
    `"reference"` or `"fused"`) picks the path (see `_backend.FAST_PATHS`).

    Here `D` is the size of the last axis, `r` is `rank`, `k` is
    `num_activations`, `x_{i-0} = x` and `x_{i-1}, x_{i-2}, ...` are the
    inputs of the previous blocks (passed as `previous`). The projections
    act on the last axis (a 1x1 projection for conv feature maps), so any
    input of rank >= 2 in channels-last layout works. At init every variant
    computes exactly `x + f(x)`: `alpha = beta = 1`, `B = 0`, `gamma = 0`
    (`gamma = 1` where `h_j` is low rank, as `B_j = 0` already cancels the
    term and `gamma_j = B_j = 0` would leave both without a gradient).

    Args:
        variant: one of `"rw"`, `"lr"`, `"pa"`, `"rw+lr"`, `"rw+pa"`,
            `"rw+lr+pa"` (the order of the parts does not matter).
        rank: int, rank `r` of the low-rank maps, `1 <= rank <= D`. Ignored
            by variants without a low-rank map (`"rw"`, and `"pa"` /
            `"rw+pa"` unless `low_rank_history=True`). The paper uses
            16-32 for ResNets and 32-64 for language models.
        num_activations: int >= 1, the number `k` of activations mixed by
            PA: the current input plus up to `k - 1` previous block inputs
            (the paper uses 3). Ignored by variants without PA.
        normalization: how `alpha, beta` are parametrised, for RW variants:
            `"softmax"` (`alpha, beta = 2 softmax(theta)`), `"sigmoid"`
            (each `2 sigmoid(theta_i)`), both with `theta = 0` at init, or
            `"none"` (free values initialised to 1).
        per_dimension: bool, whether `alpha` and `beta` are vectors of size
            `D` (2D parameters) instead of scalars (2 parameters).
        lr_initializer: initializer of the down-projections `A` (`D -> r`):
            `"glorot_uniform"` (default), `"orthogonal"` (orthonormal
            columns) or any Keras initializer. The up-projections `B` start
            at zero.
        low_rank_history: bool, whether `h_j` in `"pa"` / `"rw+pa"` is a
            low-rank map `B_j A_j` instead of the identity. `"rw+lr+pa"`
            always uses low-rank maps; other variants ignore it.
        data_format: `None` or `"channels_last"`; `"channels_first"` raises
            a `ValueError`. With `None`, inputs of rank >= 4 raise when
            `keras.config.image_data_format()` is `"channels_first"`.
        epsilon: epsilon of the RMS norm of `"gemma3n"` (ignored otherwise).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        x: the block input (or, in a ResNet with a projection shortcut, the
            projected shortcut), shape `(batch, ..., D)`.
        fx: the block output `f(x)`, same shape as `x`.
        previous: optional list of previous block inputs, most recent first
            (`[x_{i-1}, x_{i-2}, ...]`), at most `num_activations - 1`
            tensors of `x`'s shape. PA variants only. Fewer (or `None`) is
            allowed early in a network: missing ones contribute nothing.
        branch_input: `"gemma3n"` only: the input `z` of the low-rank
            branch, `x`'s shape (default `x`).

    Returns:
        `x'`, a tensor of `x`'s shape.

    Example:

    ```python
    import keras
    import keras_efficient

    inputs = keras.Input((16, 64))
    fx = keras.layers.Dense(64, activation="gelu")(inputs)
    outputs = keras_efficient.layers.LaurelResidual("rw+lr", rank=8)(
        inputs, fx
    )
    model = keras.Model(inputs, outputs)
    ```
    """

    def __init__(
        self,
        variant: str = "rw+lr",
        rank: int = 16,
        num_activations: int = 3,
        normalization: str = "softmax",
        per_dimension: bool = False,
        lr_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        low_rank_history: bool = False,
        data_format: str | None = None,
        epsilon: float = 1e-6,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        set_options(
            self,
            laurel_options(
                variant=variant,
                rank=rank,
                num_activations=num_activations,
                normalization=normalization,
                per_dimension=per_dimension,
                lr_initializer=lr_initializer,
                low_rank_history=low_rank_history,
                data_format=data_format,
                epsilon=epsilon,
            ),
        )
        parts = self.variant.split("+")
        self._has_rw = "rw" in parts
        self._has_pa = "pa" in parts
        # "rw+lr+pa" folds the LR map into the lag-0 term of PA.
        self._gemma = self.variant == "gemma3n"
        self._has_lr = ("lr" in parts and not self._has_pa) or self._gemma
        self._low_rank_pa = self._has_pa and (
            "lr" in parts or self.low_rank_history
        )
        self.supports_masking = True
        self.implementation = "auto"

    def build(self, x_shape: tuple, fx_shape: tuple | None = None) -> None:
        x_shape = _as_shape(x_shape)
        fx_shape = _as_shape(fx_shape) if fx_shape is not None else x_shape
        self._check_shapes(x_shape, fx_shape)
        dim = x_shape[-1]
        if self._has_lr or self._low_rank_pa:
            if self.rank > dim:
                raise ValueError(
                    "`rank` must be <= the size of the last axis "
                    f"({dim}). Received: rank={self.rank}"
                )

        if self._has_rw:
            shape = (2, dim) if self.per_dimension else (2,)
            init = "ones" if self.normalization == "none" else "zeros"
            # Kept in float32 (no autocast): alpha and beta are computed in
            # float32 and cast once, so they stay exact in bfloat16.
            self.residual_weights = self.add_weight(
                name="residual_weights",
                shape=shape,
                initializer=init,
                autocast=False,
            )
        if self._has_lr:
            self.lr_kernel_a = self.add_weight(
                name="lr_kernel_a",
                shape=(dim, self.rank),
                initializer=self.lr_initializer,
            )
            self.lr_kernel_b = self.add_weight(
                name="lr_kernel_b",
                shape=(self.rank, dim),
                initializer="zeros",
            )
        if self._gemma:
            self.lr_norm_scale = self.add_weight(
                name="lr_norm_scale", shape=(dim,), initializer="ones"
            )
        if self._has_pa:
            self._build_pa(dim)

    def _build_pa(self, dim):
        """PA's per-activation gains (and low-rank maps when it has them)."""
        self.pa_gamma = self.add_weight(
            name="pa_gamma",
            shape=(self.num_activations,),
            initializer="ones" if self._low_rank_pa else "zeros",
            autocast=False,
        )
        self.pa_kernels_a = []
        self.pa_kernels_b = []
        if not self._low_rank_pa:
            return
        for j in range(self.num_activations):
            self.pa_kernels_a.append(
                self.add_weight(
                    name=f"pa_kernel_a_{j}",
                    shape=(dim, self.rank),
                    initializer=self.lr_initializer,
                )
            )
            self.pa_kernels_b.append(
                self.add_weight(
                    name=f"pa_kernel_b_{j}",
                    shape=(self.rank, dim),
                    initializer="zeros",
                )
            )

    def _check_shapes(self, x_shape, fx_shape):
        if len(x_shape) < 2:
            raise ValueError(
                "LaurelResidual expects inputs of rank >= 2 (batch, ..., "
                f"features). Received: x.shape={x_shape}"
            )
        known_width(x_shape, "LaurelResidual", "x")
        if (
            self.data_format is None
            and len(x_shape) >= 4
            and keras.config.image_data_format() == "channels_first"
        ):
            raise ValueError(
                "LAuReL layers project the last axis (channels last), but "
                "keras.config.image_data_format() is 'channels_first' and "
                f"the input has rank {len(x_shape)} (x.shape={x_shape}). "
                "Use channels-last feature maps, or pass "
                "data_format='channels_last' if the last axis really holds "
                "the channels."
            )
        if not same_shape(x_shape, fx_shape):
            raise ValueError(
                "`x` and `fx` must have the same shape. Received: "
                f"x.shape={x_shape}, fx.shape={fx_shape}. If the block "
                "changes the shape (e.g. a strided ResNet block), pass the "
                "projection shortcut as `x`."
            )

    def _logit(self):
        """`theta_0 - theta_1` in float32 (softmax normalization)."""
        theta = ops.cast(self.residual_weights, "float32")
        return theta[0] - theta[1]

    def _alpha_beta(self, dtype):
        if self.normalization == "softmax":
            alpha, beta, _ = softmax_weights(self._logit(), dtype)
            return alpha, beta
        theta = ops.cast(self.residual_weights, "float32")
        if self.normalization == "sigmoid":
            theta = 2.0 * ops.sigmoid(theta)
        theta = ops.cast(theta, dtype)
        return theta[0], theta[1]

    def branch(self, z: Any) -> Any:
        """Gemma 3n's LAuReL branch `z + rmsnorm(B(A z)) * s`."""
        z = ops.convert_to_tensor(z, dtype=self.compute_dtype)
        h = ops.matmul(ops.matmul(z, self.lr_kernel_a), self.lr_kernel_b)
        variance = ops.mean(ops.square(h), axis=-1, keepdims=True)
        h = h * ops.rsqrt(variance + self.epsilon)
        return z + h * self.lr_norm_scale

    def call(
        self,
        x: Any,
        fx: Any,
        previous: Any | None = None,
        branch_input: Any | None = None,
    ) -> Any:
        dtype = self.compute_dtype
        x = ops.cast(x, dtype)
        fx = ops.cast(fx, dtype)
        self._check_shapes(tuple(x.shape), tuple(fx.shape))
        previous = [
            ops.cast(p, dtype) for p in check_previous(self, previous, x)
        ]

        if self._gemma:
            z = x if branch_input is None else ops.cast(branch_input, dtype)
            return (x + fx + self.branch(z)) / math.sqrt(2)
        if self._has_rw and not self._has_pa:
            return self._rw_merge(x, fx, dtype)
        h = x
        if self._has_lr:
            h = h + ops.matmul(
                ops.matmul(x, self.lr_kernel_a), self.lr_kernel_b
            )
        if self._has_pa:
            gamma = ops.cast(self.pa_gamma, dtype)
            for j, x_j in enumerate([x] + previous):
                if self._low_rank_pa:
                    x_j = ops.matmul(
                        ops.matmul(x_j, self.pa_kernels_a[j]),
                        self.pa_kernels_b[j],
                    )
                h = h + gamma[j] * x_j
        if self._has_rw:
            alpha, beta = self._alpha_beta(dtype)
            return alpha * fx + beta * h
        return fx + h

    def _rw_merge(self, x, fx, dtype):
        """`"rw"` and `"rw+lr"`, through the merge `implementation` picks."""
        implementation = _backend.resolve_implementation(
            self.implementation, ("fused",)
        )
        fused_softmax = (
            implementation == "fused" and self.normalization == "softmax"
        )
        kernels = ()
        if self._has_lr:
            kernels = (
                _backend.read_tensor(self.lr_kernel_a, dtype),
                _backend.read_tensor(self.lr_kernel_b, dtype),
            )
        if fused_softmax:
            merge = SOFTMAX_MERGES["rw+lr" if self._has_lr else "rw"]
            return merge(x, fx, *kernels, self._logit())
        alpha, beta = self._alpha_beta(dtype)
        if self._has_lr:
            return MERGES[implementation](x, fx, *kernels, alpha, beta)
        return alpha * fx + beta * x

    def compute_output_shape(
        self,
        x_shape: tuple,
        fx_shape: tuple | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> tuple:
        return x_shape

    @classmethod
    def from_gemma3n(
        cls, block: keras.layers.Layer, **kwargs: Any
    ) -> "LaurelResidual":
        """A `"gemma3n"` `LaurelResidual` with the weights of keras-hub's
        built `Gemma3nTextLaurelBlock` `block`: `layer.branch(z)` equals
        `block(z)`, and `layer(x, fx, branch_input=z)` is Gemma 3n's
        `(x + fx + block(z)) / sqrt(2)`. `kwargs`: base layer arguments.
        """
        if not block.built:
            fail("block", "a built Gemma3nTextLaurelBlock", block)
        layer = cls(
            "gemma3n",
            rank=block.laurel_rank,
            epsilon=block.rms_norm_eps,
            **kwargs,
        )
        layer.build((None, block.hidden_size))
        pairs = [
            (layer.lr_kernel_a, block.linear_left.kernel),
            (layer.lr_kernel_b, block.linear_right.kernel),
            (layer.lr_norm_scale, block.post_laurel_norm.scale),
        ]
        for ours, theirs in pairs:
            ours.assign(ops.convert_to_numpy(theirs))
        return layer

    def get_prunable_weights(self) -> list:
        """The kernels `MagnitudePruning` may prune (pruning protocol).

        The low-rank kernels `lr_kernel_a` / `lr_kernel_b` and the low-rank
        previous-activation kernels; the learned residual weights and
        `pa_gamma` are scalars and stay dense.
        """
        names = ("lr_kernel_a", "lr_kernel_b")
        weights = [getattr(self, name, None) for name in names]
        weights += list(getattr(self, "pa_kernels_a", None) or [])
        weights += list(getattr(self, "pa_kernels_b", None) or [])
        return [w for w in weights if w is not None]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(options_config(self))
        return config
