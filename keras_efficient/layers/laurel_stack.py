"""LAuReL around whole blocks: `LaurelBlock` and the PA stack helper.

`LaurelBlock(f)(x)` is `LaurelResidual()(x, f(x))`; `LaurelStack` chains
such blocks and threads the previous block inputs that the PA variants mix
(LAuReL, Menghani et al., ICML 2025).
"""

from typing import Any

import keras

from keras_efficient._validation import fail
from keras_efficient.layers.laurel import LaurelResidual
from keras_efficient.layers.laurel_options import laurel_options
from keras_efficient.layers.laurel_options import options_config
from keras_efficient.layers.laurel_options import set_options
from keras_efficient.layers.wrapper import LayerWrapper


@keras.saving.register_keras_serializable(package="keras_efficient")
class LaurelBlock(LayerWrapper):
    """Wraps a block `f` so that it computes a LAuReL residual around it.

    `LaurelBlock(f, ...)(x)` is `LaurelResidual(...)(x, f(x))`: the plain
    `x + f(x)` of a residual block with learned residual weights, a
    low-rank map and/or previous activations (LAuReL, Menghani et al.,
    ICML 2025). `f` must keep the shape of `x`. At init it computes exactly
    `x + f(x)`. For PA variants over many blocks, `LaurelStack` threads the
    previous block inputs for you.

    Args:
        block: a Keras layer or model `f` with `f(x).shape == x.shape`.
        variant: as in `LaurelResidual`.
        rank: as in `LaurelResidual`.
        num_activations: as in `LaurelResidual`.
        normalization: as in `LaurelResidual`.
        per_dimension: as in `LaurelResidual`.
        lr_initializer: as in `LaurelResidual`.
        low_rank_history: as in `LaurelResidual`.
        data_format: as in `LaurelResidual`.
        epsilon: as in `LaurelResidual`.
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

    layer_key = "block"

    def __init__(
        self,
        block: keras.layers.Layer,
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
        super().__init__(block, **kwargs)
        self.residual = LaurelResidual(
            variant=variant,
            rank=rank,
            num_activations=num_activations,
            normalization=normalization,
            per_dimension=per_dimension,
            lr_initializer=lr_initializer,
            low_rank_history=low_rank_history,
            data_format=data_format,
            epsilon=epsilon,
            dtype=self.dtype_policy,
            name="laurel_residual",
        )
        # The residual checked and normalised them (e.g. the variant).
        residual = self.residual
        self.variant = residual.variant
        self.rank = residual.rank
        self.num_activations = residual.num_activations
        self.normalization = residual.normalization
        self.per_dimension = residual.per_dimension
        self.lr_initializer = residual.lr_initializer
        self.low_rank_history = residual.low_rank_history
        self.data_format = residual.data_format
        self.epsilon = residual.epsilon

    @property
    def block(self) -> keras.layers.Layer:
        """The wrapped block `f`."""
        return self.layer

    def build(self, input_shape: tuple) -> None:
        input_shape = tuple(input_shape)
        super().build(input_shape)
        fx_shape = tuple(self.layer.compute_output_shape(input_shape))
        self.residual.build(input_shape, fx_shape)

    def call(
        self, x: Any, previous: Any | None = None, training: bool | None = None
    ) -> Any:
        fx = self.layer(x, training=training)
        return self.residual(x, fx, previous=previous)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(options_config(self))
        return config


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
        variant: as in `LaurelResidual`.
        rank: as in `LaurelResidual`.
        num_activations: as in `LaurelResidual`.
        normalization: as in `LaurelResidual`.
        per_dimension: as in `LaurelResidual`.
        lr_initializer: as in `LaurelResidual`.
        low_rank_history: as in `LaurelResidual`.
        data_format: as in `LaurelResidual`.
        epsilon: as in `LaurelResidual`.
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
        blocks: list[keras.layers.Layer],
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
        if (
            isinstance(blocks, keras.layers.Layer)
            or not isinstance(blocks, (list, tuple))
            or not blocks
            or not all(isinstance(b, keras.layers.Layer) for b in blocks)
        ):
            fail("blocks", "a non-empty list of Keras layers", blocks)
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
        self._uses_history = "pa" in self.variant.split("+")
        self.laurel_blocks = []
        for i, block in enumerate(blocks):
            block_activations = self.num_activations
            if self._uses_history:
                # Block i sees at most i previous inputs: no dead weights.
                block_activations = min(self.num_activations, i + 1)
            self.laurel_blocks.append(
                LaurelBlock(
                    block,
                    variant=self.variant,
                    rank=self.rank,
                    num_activations=block_activations,
                    normalization=self.normalization,
                    per_dimension=self.per_dimension,
                    # The argument, not the shared instance: each block
                    # gets its own initializer.
                    lr_initializer=lr_initializer,
                    low_rank_history=self.low_rank_history,
                    data_format=self.data_format,
                    epsilon=self.epsilon,
                    dtype=self.dtype_policy,
                    name=f"laurel_block_{i}",
                )
            )

    @property
    def blocks(self) -> list[keras.layers.Layer]:
        """The wrapped blocks, in order."""
        return [b.block for b in self.laurel_blocks]

    def build(self, input_shape: tuple) -> None:
        for laurel_block in self.laurel_blocks:
            laurel_block.build(tuple(input_shape))

    def call(self, x: Any, training: bool | None = None) -> Any:
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

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config["blocks"] = [
            keras.saving.serialize_keras_object(b) for b in self.blocks
        ]
        config.update(options_config(self))
        return config

    @classmethod
    def from_config(cls, config: dict) -> "LaurelStack":
        config = dict(config)
        config["blocks"] = [
            keras.saving.deserialize_keras_object(b) for b in config["blocks"]
        ]
        return cls(**config)
