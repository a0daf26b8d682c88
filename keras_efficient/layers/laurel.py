"""LAuReL: learned augmented residual layers.

From "LAuReL: Learned Augmented Residual Layer" (Menghani, Kumar and Kumar,
ICML 2025). The plain residual `x' = f(x) + x` becomes
`x' = alpha * f(x) + g(x, x_{i-1}, ...)` with a learned scalar `alpha` and a
learned, cheap, linear `g`. Every variant is the plain residual at init.
"""

import keras
from keras import ops

VARIANTS = ("rw", "lr", "pa", "rw+lr", "rw+pa", "rw+lr+pa")
NORMALIZATIONS = ("softmax", "sigmoid", "none")
_ORDER = ("rw", "lr", "pa")


def _canonical_variant(variant):
    if not isinstance(variant, str):
        raise ValueError(
            f"`variant` must be one of {VARIANTS}. "
            f"Received: variant={variant!r}"
        )
    parts = [p.strip() for p in variant.lower().split("+")]
    if len(set(parts)) != len(parts) or not set(parts) <= set(_ORDER):
        parts = None
    else:
        canonical = "+".join(p for p in _ORDER if p in parts)
    if parts is None or canonical not in VARIANTS:
        raise ValueError(
            f"`variant` must be one of {VARIANTS}. "
            f"Received: variant={variant!r}"
        )
    return canonical


def _check_data_format(data_format):
    if data_format not in (None, "channels_last", "channels_first"):
        raise ValueError(
            "`data_format` must be None, 'channels_last' or 'channels_first'. "
            f"Received: data_format={data_format!r}"
        )
    if data_format == "channels_first":
        raise ValueError(
            "LAuReL layers project the last axis (channels last). Received: "
            "data_format='channels_first'. Use channels-last tensors "
            "(e.g. transpose the feature maps or build the model with "
            "`keras.config.set_image_data_format('channels_last')`)."
        )


def _as_shape(shape):
    return tuple(shape) if shape is not None else None


def _same_shape(a, b):
    """Static shapes agree where both are known."""
    if len(a) != len(b):
        return False
    return all(p is None or q is None or p == q for p, q in zip(a, b))


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
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        x: the block input (or, in a ResNet with a projection shortcut, the
            projected shortcut), shape `(batch, ..., D)`.
        fx: the block output `f(x)`, same shape as `x`.
        previous: optional list of previous block inputs, most recent first
            (`[x_{i-1}, x_{i-2}, ...]`), at most `num_activations - 1`
            tensors of `x`'s shape. PA variants only. Fewer (or `None`) is
            allowed early in a network: missing ones contribute nothing.

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
        variant="rw+lr",
        rank=16,
        num_activations=3,
        normalization="softmax",
        per_dimension=False,
        lr_initializer="glorot_uniform",
        low_rank_history=False,
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.variant = _canonical_variant(variant)
        parts = self.variant.split("+")
        self._has_rw = "rw" in parts
        self._has_pa = "pa" in parts
        # "rw+lr+pa" folds the LR map into the lag-0 term of PA.
        self._has_lr = "lr" in parts and not self._has_pa
        self._low_rank_pa = self._has_pa and (
            "lr" in parts or bool(low_rank_history)
        )
        uses_rank = self._has_lr or self._low_rank_pa

        if uses_rank and (
            isinstance(rank, bool) or not isinstance(rank, int) or rank < 1
        ):
            raise ValueError(
                "`rank` must be an integer >= 1 (and <= the last axis size) "
                f"for variant={self.variant!r}. Received: rank={rank!r}"
            )
        if (
            isinstance(num_activations, bool)
            or not isinstance(num_activations, int)
            or num_activations < 1
        ):
            raise ValueError(
                "`num_activations` must be an integer >= 1 (the current "
                "input plus up to num_activations - 1 previous block "
                f"inputs). Received: num_activations={num_activations!r}"
            )
        if normalization is None:
            normalization = "none"
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"`normalization` must be one of {NORMALIZATIONS}. "
                f"Received: normalization={normalization!r}"
            )
        _check_data_format(data_format)

        self.rank = rank
        self.num_activations = num_activations
        self.normalization = normalization
        self.per_dimension = bool(per_dimension)
        self.lr_initializer = keras.initializers.get(lr_initializer)
        self.low_rank_history = bool(low_rank_history)
        self.data_format = data_format
        self.supports_masking = True

    def build(self, x_shape, fx_shape=None):
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
        if self._has_pa:
            self.pa_gamma = self.add_weight(
                name="pa_gamma",
                shape=(self.num_activations,),
                initializer="ones" if self._low_rank_pa else "zeros",
                autocast=False,
            )
            self.pa_kernels_a = []
            self.pa_kernels_b = []
            if self._low_rank_pa:
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
        if x_shape[-1] is None:
            raise ValueError(
                "The last axis of `x` must be known. "
                f"Received: x.shape={x_shape}"
            )
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
        if not _same_shape(x_shape, fx_shape):
            raise ValueError(
                "`x` and `fx` must have the same shape. Received: "
                f"x.shape={x_shape}, fx.shape={fx_shape}. If the block "
                "changes the shape (e.g. a strided ResNet block), pass the "
                "projection shortcut as `x`."
            )

    def _standardize_previous(self, previous, x):
        if previous is None:
            return []
        if not isinstance(previous, (list, tuple)):
            previous = [previous]
        previous = list(previous)
        if not previous:
            return []
        if not self._has_pa:
            raise ValueError(
                f"`previous` is only used by PA variants ('pa', 'rw+pa', "
                f"'rw+lr+pa'); this layer has variant={self.variant!r}. "
                f"Received {len(previous)} previous tensor(s)."
            )
        limit = self.num_activations - 1
        if len(previous) > limit:
            raise ValueError(
                f"`previous` may hold at most num_activations - 1 = {limit} "
                f"tensors. Received: {len(previous)} tensors."
            )
        x_shape = tuple(x.shape)
        for j, p in enumerate(previous):
            p_shape = tuple(p.shape)
            if not _same_shape(x_shape, p_shape):
                raise ValueError(
                    "Every entry of `previous` must have the shape of `x`. "
                    f"Received: previous[{j}].shape={p_shape}, "
                    f"x.shape={x_shape}"
                )
        return previous

    def _alpha_beta(self, dtype):
        theta = ops.cast(self.residual_weights, "float32")
        if self.normalization == "softmax":
            weights = 2.0 * ops.softmax(theta, axis=0)
        elif self.normalization == "sigmoid":
            weights = 2.0 * ops.sigmoid(theta)
        else:
            weights = theta
        weights = ops.cast(weights, dtype)
        return weights[0], weights[1]

    def call(self, x, fx, previous=None):
        dtype = self.compute_dtype
        x = ops.cast(x, dtype)
        fx = ops.cast(fx, dtype)
        self._check_shapes(tuple(x.shape), tuple(fx.shape))
        previous = [
            ops.cast(p, dtype) for p in self._standardize_previous(previous, x)
        ]

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

    def compute_output_shape(self, x_shape, fx_shape=None):
        return x_shape

    def get_prunable_weights(self):
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

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "variant": self.variant,
                "rank": self.rank,
                "num_activations": self.num_activations,
                "normalization": self.normalization,
                "per_dimension": self.per_dimension,
                "lr_initializer": keras.initializers.serialize(
                    self.lr_initializer
                ),
                "low_rank_history": self.low_rank_history,
                "data_format": self.data_format,
            }
        )
        return config


def _residual_options(
    variant,
    rank,
    num_activations,
    normalization,
    per_dimension,
    lr_initializer,
    low_rank_history,
    data_format,
):
    return {
        "variant": variant,
        "rank": rank,
        "num_activations": num_activations,
        "normalization": normalization,
        "per_dimension": per_dimension,
        "lr_initializer": lr_initializer,
        "low_rank_history": low_rank_history,
        "data_format": data_format,
    }


def _options_config(layer, serialized_lr_initializer):
    """The LAuReL options a wrapper layer passes on, for its `get_config`."""
    options = {
        name: getattr(layer, name)
        for name in (
            "variant",
            "rank",
            "num_activations",
            "normalization",
            "per_dimension",
            "low_rank_history",
            "data_format",
        )
    }
    options["lr_initializer"] = serialized_lr_initializer
    return options


@keras.saving.register_keras_serializable(package="keras_efficient")
class LaurelBlock(keras.layers.Layer):
    """Wraps a block `f` so that it computes a LAuReL residual around it.

    `LaurelBlock(f, ...)(x)` is `LaurelResidual(...)(x, f(x))`: the plain
    `x + f(x)` of a residual block with learned residual weights, a
    low-rank map and/or previous activations (LAuReL, Menghani et al.,
    ICML 2025). `f` must keep the shape of `x`. At init it computes exactly
    `x + f(x)`. For PA variants over many blocks, `LaurelStack` threads the
    previous block inputs for you.

    Args:
        block: a Keras layer or model `f` with `f(x).shape == x.shape`.
        variant, rank, num_activations, normalization, per_dimension,
        lr_initializer, low_rank_history, data_format: as in
            `LaurelResidual`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        x: the block input, shape `(batch, ..., D)`.
        previous: optional list of previous block inputs, most recent
            first (PA variants only, at most `num_activations - 1`).
        training: forwarded to `block`.

    Returns:
        `x'`, a tensor of `x`'s shape.

    Example:

    ```python
    import keras
    import keras_efficient

    mlp = keras.Sequential(
        [keras.layers.Dense(128, activation="gelu"), keras.layers.Dense(64)]
    )
    block = keras_efficient.layers.LaurelBlock(mlp, variant="rw+lr", rank=8)
    y = block(keras.random.normal((2, 10, 64)))
    ```
    """

    def __init__(
        self,
        block,
        variant="rw+lr",
        rank=16,
        num_activations=3,
        normalization="softmax",
        per_dimension=False,
        lr_initializer="glorot_uniform",
        low_rank_history=False,
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(block, keras.layers.Layer):
            raise ValueError(
                "`block` must be a Keras layer or model. "
                f"Received: block={block!r}"
            )
        self.block = block
        self.residual = LaurelResidual(
            **_residual_options(
                variant,
                rank,
                num_activations,
                normalization,
                per_dimension,
                lr_initializer,
                low_rank_history,
                data_format,
            ),
            dtype=self.dtype_policy,
            name="laurel_residual",
        )
        self.variant = self.residual.variant
        self.rank = rank
        self.num_activations = num_activations
        self.normalization = self.residual.normalization
        self.per_dimension = bool(per_dimension)
        self.lr_initializer = self.residual.lr_initializer
        self.low_rank_history = bool(low_rank_history)
        self.data_format = data_format

    def build(self, input_shape):
        input_shape = _as_shape(input_shape)
        if not self.block.built:
            self.block.build(input_shape)
        fx_shape = _as_shape(self.block.compute_output_shape(input_shape))
        self.residual.build(input_shape, fx_shape)

    def call(self, x, previous=None, training=None):
        fx = self.block(x, training=training)
        return self.residual(x, fx, previous=previous)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        residual = self.residual.get_config()
        config["block"] = keras.saving.serialize_keras_object(self.block)
        config.update(_options_config(self, residual["lr_initializer"]))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["block"] = keras.saving.deserialize_keras_object(config["block"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_efficient")
class LaurelStack(keras.layers.Layer):
    """Applies same-shape blocks in sequence, each with a LAuReL residual.

    Each block `f_i` becomes `x_{i+1} = LaurelResidual(x_i, f_i(x_i),
    previous=[x_{i-1}, x_{i-2}, ...])` (LAuReL, Menghani et al., ICML
    2025). For the previous-activations variants (`"pa"`, `"rw+pa"`,
    `"rw+lr+pa"`) the stack keeps the last `num_activations - 1` block
    inputs and passes them, most recent first, to the next block. Every
    block gets its own LAuReL weights; block `i` (from 0) sees only `i`
    previous inputs, so it is built with
    `num_activations=min(num_activations, i + 1)` and has no unused
    weights.

    Args:
        blocks: non-empty list of Keras layers or models, each keeping the
            shape of its input.
        variant, rank, num_activations, normalization, per_dimension,
        lr_initializer, low_rank_history, data_format: as in
            `LaurelResidual`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        x: the input of the first block, shape `(batch, ..., D)`.
        training: forwarded to the blocks.

    Returns:
        The output of the last block, of `x`'s shape.

    Example:

    ```python
    import keras
    import keras_efficient

    blocks = [keras.layers.Dense(32, activation="relu") for _ in range(4)]
    stack = keras_efficient.layers.LaurelStack(
        blocks, variant="rw+lr+pa", rank=4, num_activations=3
    )
    y = stack(keras.random.normal((2, 32)))
    ```
    """

    def __init__(
        self,
        blocks,
        variant="rw+lr",
        rank=16,
        num_activations=3,
        normalization="softmax",
        per_dimension=False,
        lr_initializer="glorot_uniform",
        low_rank_history=False,
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(blocks, keras.layers.Layer) or not isinstance(
            blocks, (list, tuple)
        ):
            raise ValueError(
                "`blocks` must be a non-empty list of Keras layers. "
                f"Received: blocks={blocks!r}"
            )
        if not blocks:
            raise ValueError(
                "`blocks` must be a non-empty list of Keras layers. "
                "Received: blocks=[]"
            )
        if (
            isinstance(num_activations, bool)
            or not isinstance(num_activations, int)
            or num_activations < 1
        ):
            raise ValueError(
                "`num_activations` must be an integer >= 1. "
                f"Received: num_activations={num_activations!r}"
            )
        options = _residual_options(
            variant,
            rank,
            num_activations,
            normalization,
            per_dimension,
            lr_initializer,
            low_rank_history,
            data_format,
        )
        self.laurel_blocks = []
        for i, block in enumerate(blocks):
            if "pa" in _canonical_variant(variant):
                # Block i sees at most i previous inputs: no dead weights.
                options["num_activations"] = min(num_activations, i + 1)
            self.laurel_blocks.append(
                LaurelBlock(
                    block,
                    **options,
                    dtype=self.dtype_policy,
                    name=f"laurel_block_{i}",
                )
            )
        first = self.laurel_blocks[0]
        self.variant = first.variant
        self.rank = rank
        self.num_activations = num_activations
        self.normalization = first.normalization
        self.per_dimension = bool(per_dimension)
        self.lr_initializer = first.lr_initializer
        self.low_rank_history = bool(low_rank_history)
        self.data_format = data_format
        self._uses_history = "pa" in self.variant

    @property
    def blocks(self):
        """The wrapped blocks, in order."""
        return [b.block for b in self.laurel_blocks]

    def build(self, input_shape):
        input_shape = _as_shape(input_shape)
        for laurel_block in self.laurel_blocks:
            laurel_block.build(input_shape)

    def call(self, x, training=None):
        history = []
        depth = self.num_activations - 1
        for laurel_block in self.laurel_blocks:
            if self._uses_history:
                y = laurel_block(x, previous=history, training=training)
                history = ([x] + history)[:depth]
            else:
                y = laurel_block(x, training=training)
            x = y
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        residual = self.laurel_blocks[0].residual.get_config()
        config["blocks"] = [
            keras.saving.serialize_keras_object(b) for b in self.blocks
        ]
        config.update(_options_config(self, residual["lr_initializer"]))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["blocks"] = [
            keras.saving.deserialize_keras_object(b) for b in config["blocks"]
        ]
        return cls(**config)
