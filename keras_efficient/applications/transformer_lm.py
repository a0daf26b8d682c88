"""A decoder-only Transformer language model with the efficiency switches.

`TransformerLM` is a small pre-norm causal Transformer (attention through
`keras.ops.dot_product_attention`, rotary or learned positions) whose
constructor switches on the methods of this package:

- `altup=K`: AltUp (Baykal et al., NeurIPS 2023) widens every token to K
  blocks of width `hidden_dim`; each Transformer block computes on one
  block (`AltUp` wrapper, `alternating` schedule by default).
- `recycled=True`: Recycled-AltUp, a width-`hidden_dim` embedding copied
  into the K blocks (no extra embedding parameters).
- `sequence_altup=s`: Sequence-AltUp on every other block (blocks 1, 3,
  ...): those blocks run on every s-th token and the other tokens receive
  their anchor's update.
- `laurel=variant`: LAuReL residuals (`LaurelResidual`) in place of the two
  residual additions of every block.
- `lookup=N` (or a dict of `SparseLookupTable` arguments): a sparse lookup
  table added to the token embedding, read by hashed bigram ids by default.
- `moe=E` (or a dict of `MixtureOfExperts` arguments): every block's
  feed-forward network becomes a mixture of E experts (LSH router by
  default).

Each block is made by `TransformerLM.make_block(index)` and its feed-forward
sublayer by `TransformerLM.make_feedforward(index)`, so subclasses and
future options can swap the feed-forward network (a lookup table, a mixture
of experts) or add per-block layers in one place.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_efficient.layers.altup import AltUp
from keras_efficient.layers.altup import AltUpEmbedding
from keras_efficient.layers.altup import AltUpReadout
from keras_efficient.layers.altup import active_blocks
from keras_efficient.layers.lookup import SparseLookupTable
from keras_efficient.layers.moe import MixtureOfExperts
from keras_efficient.layers.sequence_altup import SequenceAltUp

POSITIONS = ("rotary", "learned")


def _check_int(name, value, low=1):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < low
    ):
        raise ValueError(
            f"`{name}` must be an integer >= {low}. Received: {name}={value!r}"
        )


def apply_rotary(x, max_wavelength=10000.0):
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
        hidden_dim: model width d; must be divisible by `num_heads`.
        num_heads: number of heads.
        rotary: whether to apply rotary position embeddings to q and k.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tensor `(batch, T, d)`.

    Example:

    >>> attention = CausalSelfAttention(32, num_heads=4)
    >>> attention(np.ones((2, 8, 32), "float32")).shape
    (2, 8, 32)
    """

    def __init__(self, hidden_dim, num_heads, rotary=True, **kwargs):
        super().__init__(**kwargs)
        _check_int("hidden_dim", hidden_dim)
        _check_int("num_heads", num_heads)
        if hidden_dim % num_heads:
            raise ValueError(
                "`hidden_dim` must be divisible by `num_heads`. Received: "
                f"hidden_dim={hidden_dim}, num_heads={num_heads}"
            )
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.rotary = bool(rotary)
        self.head_dim = hidden_dim // num_heads
        self.qkv = keras.layers.Dense(
            3 * hidden_dim, use_bias=False, dtype=self.dtype_policy, name="qkv"
        )
        self.output_dense = keras.layers.Dense(
            hidden_dim, use_bias=False, dtype=self.dtype_policy, name="output"
        )

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.output_dense.build(tuple(input_shape)[:-1] + (self.hidden_dim,))

    def call(self, inputs):
        shape = ops.shape(inputs)
        qkv = self.qkv(inputs)
        qkv = ops.reshape(
            qkv, (shape[0], shape[1], 3, self.num_heads, self.head_dim)
        )
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.rotary:
            q, k = apply_rotary(q), apply_rotary(k)
        out = ops.dot_product_attention(q, k, v, is_causal=True)
        out = ops.reshape(out, (shape[0], shape[1], self.hidden_dim))
        return self.output_dense(out)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "rotary": self.rotary,
            }
        )
        return config


def make_feedforward(hidden_dim, intermediate_dim, dtype=None, name=None):
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


def make_laurel(variant, rank, dtype=None, name=None):
    """A `LaurelResidual(variant, rank)` (imported when first needed)."""
    from keras_efficient.layers.laurel import LaurelResidual

    return LaurelResidual(variant=variant, rank=rank, dtype=dtype, name=name)


@keras.saving.register_keras_serializable(package="keras_efficient")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm Transformer block: causal attention, then feed-forward.

    `h = x + attention(norm(x))`, `out = h + feedforward(norm(h))`; with
    `laurel=variant` each `+` is a `LaurelResidual` (identity at init).

    Args:
        hidden_dim: width d.
        num_heads: attention heads.
        feedforward: the feed-forward sublayer, any layer mapping width d to
            d (default: `make_feedforward(hidden_dim, 4 * hidden_dim)`).
        rotary: rotary positions in attention.
        laurel: `None` or a `LaurelResidual` variant (e.g. `"rw+lr"`).
        laurel_rank: rank of the LAuReL low-rank branch.
        epsilon: RMS normalisation epsilon.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tensor `(batch, T, d)`.

    Example:

    >>> block = TransformerBlock(32, num_heads=4)
    >>> block(np.ones((2, 8, 32), "float32")).shape
    (2, 8, 32)
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        feedforward=None,
        rotary=True,
        laurel=None,
        laurel_rank=32,
        epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.rotary = bool(rotary)
        self.laurel = laurel
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
        if laurel is not None:
            self.attention_residual = make_laurel(
                laurel, laurel_rank, self.dtype_policy, "attention_laurel"
            )
            self.feedforward_residual = make_laurel(
                laurel, laurel_rank, self.dtype_policy, "feedforward_laurel"
            )

    def build(self, input_shape):
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

    def _residual(self, combine, x, fx):
        if combine is None:
            return x + fx
        return combine(x, fx)

    def call(self, inputs):
        x = inputs
        h = self._residual(
            self.attention_residual,
            x,
            self.attention(self.attention_norm(x)),
        )
        return self._residual(
            self.feedforward_residual,
            h,
            self.feedforward(self.feedforward_norm(h)),
        )

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
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
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
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

    >>> PositionEmbedding(16)(np.zeros((2, 8, 32), "float32")).shape
    (2, 8, 32)
    """

    def __init__(self, sequence_length, **kwargs):
        super().__init__(**kwargs)
        _check_int("sequence_length", sequence_length)
        self.sequence_length = int(sequence_length)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, inputs):
        length = ops.shape(inputs)[1]
        positions = self.embeddings[:length]
        extra = len(inputs.shape) - 3
        positions = ops.reshape(
            positions, (1, length) + (1,) * extra + (positions.shape[-1],)
        )
        return inputs + ops.cast(positions, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"sequence_length": self.sequence_length})
        return config


@keras.saving.register_keras_serializable(package="keras_efficient")
class TransformerLM(keras.Model):
    """Decoder-only Transformer LM with AltUp, Sequence-AltUp and LAuReL.

    A pre-norm causal Transformer over token ids: embedding, `num_layers`
    blocks (causal attention through `keras.ops.dot_product_attention`,
    then a feed-forward network), a final RMS norm and a linear head to
    `vocabulary_size` logits (float32).

    With `altup=K > 1` the token representation is widened to K blocks of
    width `hidden_dim` (AltUp, Baykal et al., NeurIPS 2023): an
    `AltUpEmbedding` (a K-times wider table, or with `recycled=True` the
    width-d table replicated), every block wrapped in `AltUp` with the
    `altup_schedule`, and an `AltUpReadout` before the head. The blocks
    still compute at width `hidden_dim`. `sequence_altup=s > 1` wraps every
    other block (1, 3, 5, ...) in `SequenceAltUp(stride=s)`, so every token
    still gets full-resolution attention every second block. `laurel`
    replaces each residual addition by a `LaurelResidual` of that variant.

    Args:
        vocabulary_size: number of token ids (256 for bytes).
        sequence_length: longest input (learned positions and the
            generation window).
        hidden_dim: width d of every block.
        num_layers: number of blocks.
        num_heads: attention heads (must divide `hidden_dim`).
        intermediate_dim: feed-forward width (default `4 * hidden_dim`).
        positions: `"rotary"` or `"learned"`.
        altup: number of AltUp blocks K (`1`: off).
        recycled: Recycled-AltUp input (only with `altup > 1`).
        altup_schedule: `"alternating"` or `"same"`.
        altup_coefficients: `"static"` or `"routed"`.
        altup_readout: `"sum"`, `"mean"` or `"projection"`.
        sequence_altup: Sequence-AltUp stride (`1`: off).
        laurel: `None` or a LAuReL variant (`"rw"`, `"lr"`, `"rw+lr"`).
        laurel_rank: rank of LAuReL's low-rank branch.
        lookup: `None`, a table size N, or a dict of `SparseLookupTable`
            arguments plus `ngram` (1: token ids, 2: bigram ids
            `previous * vocabulary_size + current`, the default). The
            table's entry is added to the token embedding; the default
            lookup is `"token_id"` with `token_mapping="hash"`. Not
            available with `altup > 1`.
        moe: `None`, a number of experts E, or a dict of `MixtureOfExperts`
            arguments (defaults: `hidden_dim=intermediate_dim`,
            `activation="gelu"`, `router="lsh"`): the feed-forward network
            of every block. The softmax router's load-balancing losses
            reach `model.losses`.
        epsilon: RMS normalisation epsilon.
        **kwargs: base `Model` arguments (`name`, `dtype`).

    Call arguments:
        inputs: integer token ids `(batch, T)` with `T <= sequence_length`.

    Returns:
        Logits `(batch, T, vocabulary_size)`.

    Example:

    >>> model = TransformerLM(
    ...     vocabulary_size=256, sequence_length=64, hidden_dim=32,
    ...     num_layers=2, num_heads=2, altup=2, recycled=True)
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> ids = np.random.randint(0, 256, size=(8, 64))
    >>> _ = model.fit(ids[:, :-1], ids[:, 1:], epochs=1, verbose=0)
    >>> model.generate(ids[:1, :5], max_new_tokens=10).shape
    (1, 15)
    """

    def __init__(
        self,
        vocabulary_size=256,
        sequence_length=256,
        hidden_dim=128,
        num_layers=4,
        num_heads=4,
        intermediate_dim=None,
        positions="rotary",
        altup=1,
        recycled=False,
        altup_schedule="alternating",
        altup_coefficients="static",
        altup_readout="mean",
        sequence_altup=1,
        laurel=None,
        laurel_rank=32,
        epsilon=1e-6,
        lookup=None,
        moe=None,
        **kwargs,
    ):
        _check_int("vocabulary_size", vocabulary_size)
        _check_int("sequence_length", sequence_length)
        _check_int("hidden_dim", hidden_dim)
        _check_int("num_layers", num_layers)
        _check_int("num_heads", num_heads)
        if intermediate_dim is not None:
            _check_int("intermediate_dim", intermediate_dim)
        if positions not in POSITIONS:
            raise ValueError(
                f"`positions` must be one of {POSITIONS}. "
                f"Received: positions={positions!r}"
            )
        _check_int("altup", altup)
        _check_int("sequence_altup", sequence_altup)
        if recycled and altup == 1:
            raise ValueError(
                "`recycled=True` needs `altup` >= 2 (Recycled-AltUp replicates "
                f"the embedding into the AltUp blocks). Received: altup={altup}"
            )
        # Validates the schedule early, with AltUp's own message.
        active = active_blocks(num_layers, altup, altup_schedule)

        self.vocabulary_size = int(vocabulary_size)
        self.sequence_length = int(sequence_length)
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.intermediate_dim = (
            int(intermediate_dim) if intermediate_dim else 4 * self.hidden_dim
        )
        self.positions = positions
        self.altup = int(altup)
        self.recycled = bool(recycled)
        self.altup_schedule = altup_schedule
        self.altup_coefficients = altup_coefficients
        self.altup_readout = altup_readout
        self.sequence_altup = int(sequence_altup)
        self.laurel = laurel
        self.laurel_rank = int(laurel_rank)
        self.epsilon = float(epsilon)
        self.lookup = lookup
        self.moe = moe
        self._lookup_options = _options("lookup", lookup, "num_entries")
        self._moe_options = _options("moe", moe, "num_experts")
        if self._lookup_options is not None and self.altup > 1:
            raise ValueError(
                "`lookup` is not available with `altup` > 1 (the table is "
                f"added to a width-d embedding). Received: lookup={lookup!r}, "
                f"altup={altup}"
            )
        dtype = kwargs.pop("dtype", None)
        self._layer_dtype = dtype

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        if self.altup > 1:
            x = AltUpEmbedding(
                vocabulary_size,
                hidden_dim,
                num_blocks=altup,
                recycled=recycled,
                dtype=dtype,
                name="token_embedding",
            )(token_ids)
        else:
            x = keras.layers.Embedding(
                vocabulary_size, hidden_dim, dtype=dtype, name="token_embedding"
            )(token_ids)
        if positions == "learned":
            x = PositionEmbedding(
                sequence_length, dtype=dtype, name="position_embedding"
            )(x)
        if self._lookup_options is not None:
            x = self._add_lookup(x, token_ids)
        for index in range(num_layers):
            block = self.make_block(index)
            if self.sequence_altup > 1 and index % 2 == 1:
                block = SequenceAltUp(
                    block,
                    stride=self.sequence_altup,
                    dtype=dtype,
                    name=f"sequence_altup_{index}",
                )
            if self.altup > 1:
                block = AltUp(
                    block,
                    num_blocks=altup,
                    active_block=active[index],
                    coefficients=altup_coefficients,
                    dtype=dtype,
                    name=f"altup_{index}",
                )
            x = block(x)
        if self.altup > 1:
            x = AltUpReadout(
                altup, mode=altup_readout, dtype=dtype, name="readout"
            )(x)
        x = keras.layers.RMSNormalization(
            epsilon=epsilon, dtype=dtype, name="final_norm"
        )(x)
        logits = keras.layers.Dense(
            vocabulary_size, dtype="float32", name="logits"
        )(x)
        super().__init__(inputs=token_ids, outputs=logits, **kwargs)
        self._generate_step = None

    def _add_lookup(self, x, token_ids):
        options = dict(self._lookup_options)
        ngram = options.pop("ngram", 2)
        if ngram not in (1, 2):
            raise ValueError(
                f"`lookup['ngram']` must be 1 or 2. Received: ngram={ngram!r}"
            )
        options.setdefault("lookup", "token_id")
        options.setdefault("token_mapping", "hash")
        table = SparseLookupTable(
            **options, dtype=self._layer_dtype, name="lookup_table"
        )
        if options["lookup"] != "token_id":
            return table(x)
        ids = token_ids
        if ngram == 2:
            previous = ops.pad(token_ids[:, :-1], [[0, 0], [1, 0]])
            ids = previous * self.vocabulary_size + token_ids
        return table(x, ids)

    def make_feedforward(self, index):
        """The feed-forward sublayer of block `index` (width d to d)."""
        if self._moe_options is not None:
            options = {
                "hidden_dim": self.intermediate_dim,
                "activation": "gelu",
                **self._moe_options,
            }
            return MixtureOfExperts(
                **options, dtype=self._layer_dtype, name=f"feedforward_{index}"
            )
        return make_feedforward(
            self.hidden_dim,
            self.intermediate_dim,
            dtype=self._layer_dtype,
            name=f"feedforward_{index}",
        )

    def make_block(self, index):
        """Transformer block `index` (before any AltUp wrapping)."""
        return TransformerBlock(
            self.hidden_dim,
            self.num_heads,
            feedforward=self.make_feedforward(index),
            rotary=self.positions == "rotary",
            laurel=self.laurel,
            laurel_rank=self.laurel_rank,
            epsilon=self.epsilon,
            dtype=self._layer_dtype,
            name=f"block_{index}",
        )

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "vocabulary_size": self.vocabulary_size,
            "sequence_length": self.sequence_length,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "positions": self.positions,
            "altup": self.altup,
            "recycled": self.recycled,
            "altup_schedule": self.altup_schedule,
            "altup_coefficients": self.altup_coefficients,
            "altup_readout": self.altup_readout,
            "sequence_altup": self.sequence_altup,
            "laurel": self.laurel,
            "laurel_rank": self.laurel_rank,
            "epsilon": self.epsilon,
            "lookup": self.lookup,
            "moe": self.moe,
        }
        if self._layer_dtype is not None:
            config["dtype"] = keras.dtype_policies.serialize(
                keras.dtype_policies.get(self._layer_dtype)
            )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    def _next_token_logits(self, window, position):
        """Logits `(batch, vocab)` at `position` of a full-length window."""
        if keras.backend.backend() == "jax":
            if self._generate_step is None:
                import jax

                def step(trainable, non_trainable, window, position):
                    logits, _ = self.stateless_call(
                        trainable, non_trainable, window
                    )
                    return ops.take(logits, position, axis=1)

                self._generate_step = jax.jit(step)
            return self._generate_step(
                [v.value for v in self.trainable_variables],
                [v.value for v in self.non_trainable_variables],
                window,
                np.int32(position),
            )
        logits = self(window, training=False)
        return ops.take(logits, position, axis=1)

    def generate(
        self, prompt_ids, max_new_tokens=32, temperature=0.0, seed=None
    ):
        """Continues token sequences, greedily or by sampling.

        The model runs on a fixed-length window of `sequence_length` tokens
        (the prompt padded on the right, or the last `sequence_length`
        tokens once it is full), so on JAX one jitted step serves every
        generated token.

        Args:
            prompt_ids: integer array `(T,)` or `(batch, T)`, `T >= 1`.
            max_new_tokens: how many tokens to append, `>= 0`.
            temperature: `0` for greedy decoding, `> 0` to sample from
                `softmax(logits / temperature)`.
            seed: seed of the sampler (NumPy); same seed, same text.

        Returns:
            A NumPy int32 array: the prompt followed by the new tokens, with
            the prompt's rank.
        """
        prompt = np.asarray(prompt_ids)
        squeeze = prompt.ndim == 1
        if squeeze:
            prompt = prompt[None, :]
        if prompt.ndim != 2 or prompt.shape[1] < 1:
            raise ValueError(
                "`prompt_ids` must have shape (T,) or (batch, T) with T >= 1. "
                f"Received: prompt_ids.shape={np.shape(prompt_ids)}"
            )
        _check_int("max_new_tokens", max_new_tokens, low=0)
        if not temperature >= 0:
            raise ValueError(
                "`temperature` must be >= 0. "
                f"Received: temperature={temperature!r}"
            )
        rng = np.random.default_rng(seed)
        tokens = prompt.astype("int32")
        length = self.sequence_length
        for _ in range(max_new_tokens):
            context = tokens[:, -length:]
            position = context.shape[1] - 1
            window = np.zeros((len(tokens), length), dtype="int32")
            window[:, : context.shape[1]] = context
            logits = ops.convert_to_numpy(
                self._next_token_logits(window, position)
            ).astype("float64")
            if temperature == 0:
                next_token = logits.argmax(-1)
            else:
                gumbel = rng.gumbel(size=logits.shape)
                next_token = (logits / temperature + gumbel).argmax(-1)
            tokens = np.concatenate(
                [tokens, next_token[:, None].astype("int32")], axis=1
            )
        return tokens[0] if squeeze else tokens


def _options(name, value, count_key):
    """`None`, an int (the count) or a dict of layer arguments -> dict."""
    if value is None:
        return None
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        _check_int(name, value)
        return {count_key: int(value)}
    raise ValueError(
        f"`{name}` must be None, a positive integer ({count_key}) or a dict "
        f"of layer arguments. Received: {name}={value!r}"
    )


def bits_per_byte(loss):
    """Converts a mean cross-entropy in nats to bits per token."""
    return loss / math.log(2.0)
