"""The Transformer blocks of `TransformerLM`: attention, feed-forward, block.

A pre-norm causal block (`TransformerBlock`): causal self-attention through
`keras.ops.dot_product_attention` with rotary (`apply_rotary`) or learned
(`PositionEmbedding`) positions, then a feed-forward network
(`make_feedforward`, or any width-preserving layer such as a mixture of
experts). With `laurel=variant` the two residual additions become
`LaurelResidual`s (LAuReL, Menghani et al., ICML 2025); with
`laurel="gemma3n"` the attention residual is Gemma 3n's LAuReL merge and the
feed-forward one stays plain, as in Gemma 3n. The ResNet blocks live in
`resnet_blocks`.
"""

from typing import Any

import keras
from keras import ops

from keras_efficient._validation import check_positive_int
from keras_efficient.layers.laurel import LaurelResidual
from keras_efficient.layers.laurel_options import normalize_variant


def apply_rotary(x: Any, max_wavelength: float = 10000.0) -> Any:
    """Rotary position embedding of `x` of shape `(batch, T, heads, dim)`."""
    x = ops.convert_to_tensor(x)
    length = ops.shape(x)[1]
    dim = x.shape[-1]
    half = dim // 2
    exponents = ops.arange(half, dtype="float32") * (2.0 / dim)
    inverse_frequency = ops.power(max_wavelength, -exponents)
    positions = ops.arange(length, dtype="float32")
    angles = positions[:, None] * inverse_frequency[None, :]
    cos = ops.cast(ops.cos(angles)[None, :, None, :], x.dtype)
    sin = ops.cast(ops.sin(angles)[None, :, None, :], x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return ops.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


@keras.saving.register_keras_serializable(package="keras_efficient")
class CausalSelfAttention(keras.layers.Layer):
    """Multi-head causal self-attention through `dot_product_attention`.

    Args:
        hidden_dim: model width d; must be divisible by `num_heads` unless
            `head_dim` is given.
        num_heads: number of heads.
        rotary: whether to apply rotary position embeddings to q and k.
        head_dim: the width of one head (default `hidden_dim //
            num_heads`); the heads together may then be narrower or wider
            than `hidden_dim` (as after removing heads).
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tensor `(batch, T, d)`.

    Example:

    >>> from keras import ops
    >>> from keras_efficient.applications.blocks import CausalSelfAttention
    >>> CausalSelfAttention(32, num_heads=4)(ops.ones((2, 8, 32))).shape
    (2, 8, 32)
    """

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        rotary: bool = True,
        head_dim: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("num_heads", num_heads)
        if head_dim is None and hidden_dim % num_heads:
            raise ValueError(
                "`hidden_dim` must be divisible by `num_heads` when "
                f"`head_dim` is None. Received: hidden_dim={hidden_dim}, "
                f"num_heads={num_heads}"
            )
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.rotary = bool(rotary)
        if head_dim is None:
            head_dim = hidden_dim // num_heads
        self.head_dim = check_positive_int("head_dim", head_dim)
        self.qkv = keras.layers.Dense(
            3 * self.num_heads * self.head_dim,
            use_bias=False,
            dtype=self.dtype_policy,
            name="qkv",
        )
        self.output_dense = keras.layers.Dense(
            hidden_dim, use_bias=False, dtype=self.dtype_policy, name="output"
        )

    def build(self, input_shape: tuple) -> None:
        self.qkv.build(input_shape)
        heads_width = self.num_heads * self.head_dim
        self.output_dense.build(tuple(input_shape)[:-1] + (heads_width,))

    def call(self, inputs: Any) -> Any:
        shape = ops.shape(inputs)
        qkv = self.qkv(inputs)
        qkv = ops.reshape(
            qkv, (shape[0], shape[1], 3, self.num_heads, self.head_dim)
        )
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.rotary:
            q, k = apply_rotary(q), apply_rotary(k)
        out = ops.dot_product_attention(q, k, v, is_causal=True)
        out = ops.reshape(
            out, (shape[0], shape[1], self.num_heads * self.head_dim)
        )
        return self.output_dense(out)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "rotary": self.rotary,
                "head_dim": self.head_dim,
            }
        )
        return config


def make_feedforward(
    hidden_dim: int,
    intermediate_dim: int,
    dtype: Any | None = None,
    name: str | None = None,
) -> keras.Sequential:
    """The default feed-forward sublayer: Dense -> GELU -> Dense."""
    return keras.Sequential(
        [
            keras.layers.Dense(
                intermediate_dim, activation="gelu", dtype=dtype, name="up"
            ),
            keras.layers.Dense(hidden_dim, dtype=dtype, name="down"),
        ],
        name=name,
    )


@keras.saving.register_keras_serializable(package="keras_efficient")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm Transformer block: causal attention, then feed-forward.

    `h = x + attention(norm(x))`, `out = h + feedforward(norm(h))`; with
    `laurel=variant` each `+` is a `LaurelResidual` (identity at init).
    `laurel="gemma3n"` is Gemma 3n's decoder form: `h = (x +
    attention(norm(x)) + laurel(norm(x))) / sqrt(2)` with Gemma 3n's LAuReL
    branch on the normed input, and a plain feed-forward residual.

    Args:
        hidden_dim: width d.
        num_heads: attention heads.
        feedforward: the feed-forward sublayer, any layer mapping width d to
            d (default: `make_feedforward(hidden_dim, 4 * hidden_dim)`).
        rotary: rotary positions in attention.
        laurel: `None` or a `LaurelResidual` variant (e.g. `"rw+lr"`).
        laurel_rank: rank of the LAuReL low-rank branch.
        epsilon: RMS normalisation epsilon.
        head_dim: the width of one head (default `hidden_dim //
            num_heads`).
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tensor `(batch, T, d)`.

    Example:

    >>> import numpy as np
    >>> from keras_efficient.applications.blocks import TransformerBlock
    >>> block = TransformerBlock(32, num_heads=4)
    >>> block(np.ones((2, 8, 32), "float32")).shape
    (2, 8, 32)
    """

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        feedforward: keras.layers.Layer | None = None,
        rotary: bool = True,
        laurel: str | None = None,
        laurel_rank: int = 32,
        epsilon: float = 1e-6,
        head_dim: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.head_dim = None if head_dim is None else int(head_dim)
        self.rotary = bool(rotary)
        self.laurel = None if laurel is None else normalize_variant(laurel)
        self.laurel_rank = int(laurel_rank)
        self.epsilon = float(epsilon)
        if feedforward is None:
            feedforward = make_feedforward(
                hidden_dim, 4 * hidden_dim, dtype=self.dtype_policy
            )
        if not isinstance(feedforward, keras.layers.Layer):
            raise ValueError(
                "`feedforward` must be a `keras.layers.Layer` or None. "
                f"Received: feedforward={feedforward!r}"
            )
        self.feedforward = feedforward
        self.attention = CausalSelfAttention(
            hidden_dim,
            num_heads,
            rotary=rotary,
            head_dim=head_dim,
            dtype=self.dtype_policy,
            name="attention",
        )
        self.attention_norm = keras.layers.RMSNormalization(
            epsilon=epsilon, dtype=self.dtype_policy, name="attention_norm"
        )
        self.feedforward_norm = keras.layers.RMSNormalization(
            epsilon=epsilon, dtype=self.dtype_policy, name="feedforward_norm"
        )
        self.attention_residual = None
        self.feedforward_residual = None
        parts = () if laurel is None else ("attention", "feedforward")
        if self.laurel == "gemma3n":
            parts = ("attention",)  # Gemma 3n: LAuReL on attention only
        for part in parts:
            residual = LaurelResidual(
                self.laurel,
                rank=laurel_rank,
                epsilon=epsilon,
                dtype=self.dtype_policy,
                name=f"{part}_laurel",
            )
            setattr(self, f"{part}_residual", residual)

    def build(self, input_shape: tuple) -> None:
        input_shape = tuple(input_shape)
        for layer in (
            self.attention_norm,
            self.attention,
            self.feedforward_norm,
            self.feedforward,
        ):
            layer.build(input_shape)
        for layer in (self.attention_residual, self.feedforward_residual):
            if layer is not None:
                layer.build(input_shape, input_shape)

    def _residual(self, combine, x, fx, **kwargs):
        if combine is None:
            return x + fx
        return combine(x, fx, **kwargs)

    def call(self, inputs: Any) -> Any:
        x = inputs
        normed = self.attention_norm(x)
        kwargs = {"branch_input": normed} if self.laurel == "gemma3n" else {}
        h = self._residual(
            self.attention_residual, x, self.attention(normed), **kwargs
        )
        return self._residual(
            self.feedforward_residual,
            h,
            self.feedforward(self.feedforward_norm(h)),
        )

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "feedforward": keras.saving.serialize_keras_object(
                    self.feedforward
                ),
                "rotary": self.rotary,
                "laurel": self.laurel,
                "laurel_rank": self.laurel_rank,
                "epsilon": self.epsilon,
                "head_dim": self.head_dim,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> "TransformerBlock":
        config = dict(config)
        if config.get("feedforward") is not None:
            config["feedforward"] = keras.saving.deserialize_keras_object(
                config["feedforward"]
            )
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_efficient")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute positions added to `(batch, T, ..., d)` inputs.

    Args:
        sequence_length: the largest T.
        **kwargs: base `Layer` arguments.

    Example:

    >>> import numpy as np
    >>> from keras_efficient.applications.blocks import PositionEmbedding
    >>> PositionEmbedding(16)(np.zeros((2, 8, 32), "float32")).shape
    (2, 8, 32)
    """

    def __init__(self, sequence_length: int, **kwargs: Any):
        super().__init__(**kwargs)
        check_positive_int("sequence_length", sequence_length)
        self.sequence_length = int(sequence_length)

    def build(self, input_shape: tuple) -> None:
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, inputs: Any) -> Any:
        length = ops.shape(inputs)[1]
        positions = self.embeddings[:length]
        extra = len(inputs.shape) - 3
        positions = ops.reshape(
            positions, (1, length) + (1,) * extra + (positions.shape[-1],)
        )
        return inputs + ops.cast(positions, inputs.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"sequence_length": self.sequence_length})
        return config
