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
from typing import Any

import keras

from keras_efficient import _backend
from keras_efficient._validation import check_choice
from keras_efficient._validation import check_number
from keras_efficient._validation import check_positive_int
from keras_efficient.applications.blocks import TransformerBlock
from keras_efficient.applications.blocks import make_feedforward
from keras_efficient.applications.generation import TokenGenerationMixin
from keras_efficient.applications.lm_arguments import POSITIONS
from keras_efficient.applications.lm_arguments import as_given
from keras_efficient.applications.lm_arguments import check_head_dim
from keras_efficient.applications.lm_arguments import check_recycled
from keras_efficient.applications.lm_arguments import check_token_ids
from keras_efficient.applications.lm_arguments import lookup_options
from keras_efficient.applications.lm_arguments import moe_options
from keras_efficient.applications.lm_arguments import per_layer
from keras_efficient.applications.lm_embedding import embed_tokens
from keras_efficient.layers.altup.ends import AltUpReadout
from keras_efficient.layers.altup.layer import AltUp
from keras_efficient.layers.altup.stack import active_blocks
from keras_efficient.layers.laurel_options import normalize_variant
from keras_efficient.layers.moe import LEGACY_CAPACITY_FACTOR
from keras_efficient.layers.moe import MixtureOfExperts
from keras_efficient.layers.sequence_altup import SequenceAltUp
from keras_efficient.optimizers.table_limits import check_table_optimizer


@keras.saving.register_keras_serializable(package="keras_efficient")
class TransformerLM(TokenGenerationMixin, keras.Model):
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
        num_heads: attention heads (must divide `hidden_dim` unless
            `head_dim` is given), or a list of one count per block.
        intermediate_dim: feed-forward width (default `4 * hidden_dim`),
            or a list of one width per block.
        head_dim: the width of one head (default `hidden_dim //
            num_heads`; needed when `num_heads` differs per block). With
            it, heads can be removed without changing `hidden_dim`, as
            `shrink` does.
        positions: `"rotary"` or `"learned"`.
        altup: number of AltUp blocks K (`1`: off).
        recycled: Recycled-AltUp input (only with `altup > 1`).
        altup_schedule: `"alternating"` or `"same"`.
        altup_coefficients: `"static"` or `"routed"`.
        altup_readout: `"sum"`, `"mean"` or `"projection"`.
        sequence_altup: Sequence-AltUp stride (`1`: off).
        laurel: `None` or a LAuReL variant, spelled as `LaurelResidual`
            accepts it (e.g. `"rw"`, `"lr+rw"`).
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
            reach `model.losses`. The layer is dropless unless a capacity
            factor is given.
        moe_*: `moe_top_k`, `moe_load_balance_weight`,
            `moe_z_loss_weight`, `moe_num_shared_experts`,
            `moe_capacity_factor`: when not `None`, the
            `MixtureOfExperts` argument of the same name (`top_k`, ...)
            for every block's experts (over the `moe` dict's value).
        epsilon: RMS normalisation epsilon.
        **kwargs: base `Model` arguments (`name`, `dtype`).

    Call arguments:
        inputs: integer token ids `(batch, T)` in `[0, vocabulary_size)`
            with `T <= sequence_length` (float ids raise a `TypeError`
            rather than being cast; a longer static `T` or an id outside
            the vocabulary raises a `ValueError`, also from a compiled
            `fit`; the model has no padding id: pad with any id the loss
            then ignores through `sample_weight`).

    Returns:
        Logits `(batch, T, vocabulary_size)`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_efficient.applications import TransformerLM
    >>> model = TransformerLM(
    ...     vocabulary_size=256, sequence_length=64, hidden_dim=32,
    ...     num_layers=2, num_heads=2, altup=2, recycled=True)
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> ids = np.random.randint(0, 256, size=(4, 64))
    >>> _ = model.fit(ids[:, :-1], ids[:, 1:], epochs=1, verbose=0)
    >>> model.generate(
    ...     ids[:1, :5], max_new_tokens=3, temperature=0.8, seed=0).shape
    (1, 8)
    """

    def __init__(
        self,
        vocabulary_size: int = 256,
        sequence_length: int = 256,
        hidden_dim: int = 128,
        num_layers: int = 4,
        num_heads: int | list[int] = 4,
        intermediate_dim: int | list[int] | None = None,
        positions: str = "rotary",
        altup: int = 1,
        recycled: bool = False,
        altup_schedule: str = "alternating",
        altup_coefficients: str = "static",
        altup_readout: str = "mean",
        sequence_altup: int = 1,
        laurel: str | None = None,
        laurel_rank: int = 32,
        epsilon: float = 1e-6,
        lookup: int | dict | None = None,
        moe: int | dict | None = None,
        moe_top_k: int | None = None,
        moe_load_balance_weight: float | None = None,
        moe_z_loss_weight: float | None = None,
        moe_num_shared_experts: int | None = None,
        moe_capacity_factor: float | None = None,
        head_dim: int | None = None,
        **kwargs: Any,
    ):
        self.vocabulary_size = check_positive_int(
            "vocabulary_size", vocabulary_size
        )
        self.sequence_length = check_positive_int(
            "sequence_length", sequence_length
        )
        self.hidden_dim = check_positive_int("hidden_dim", hidden_dim)
        self.num_layers = check_positive_int("num_layers", num_layers)
        if intermediate_dim is None:
            intermediate_dim = 4 * self.hidden_dim
        # Widths per block (as `shrink` leaves them), or one for all.
        self._num_heads = per_layer("num_heads", num_heads, self.num_layers)
        self._intermediate_dims = per_layer(
            "intermediate_dim", intermediate_dim, self.num_layers
        )
        self.num_heads = as_given(num_heads, self._num_heads)
        self.intermediate_dim = as_given(
            intermediate_dim, self._intermediate_dims
        )
        self.head_dim = check_head_dim(head_dim, num_heads)
        self.positions = check_choice("positions", positions, POSITIONS)
        self.altup = check_positive_int("altup", altup)
        self.recycled = check_recycled(recycled, self.altup)
        self.altup_schedule = altup_schedule
        self.altup_coefficients = altup_coefficients
        self.altup_readout = altup_readout
        self.sequence_altup = check_positive_int(
            "sequence_altup", sequence_altup
        )
        self.laurel = (
            None if laurel is None else normalize_variant(laurel, "laurel")
        )
        self.laurel_rank = check_positive_int("laurel_rank", laurel_rank)
        self.epsilon = check_number("epsilon", epsilon, min_value=0)
        self.lookup = lookup
        self.moe = moe
        self.moe_top_k = moe_top_k
        self.moe_load_balance_weight = moe_load_balance_weight
        self.moe_z_loss_weight = moe_z_loss_weight
        self.moe_num_shared_experts = moe_num_shared_experts
        self.moe_capacity_factor = moe_capacity_factor
        # Validates the schedule early, with AltUp's own message.
        self._active = active_blocks(
            self.num_layers, self.altup, self.altup_schedule
        )
        self._lookup_options = lookup_options(lookup, self.altup)
        self._moe_options = moe_options(
            moe,
            top_k=moe_top_k,
            load_balance_weight=moe_load_balance_weight,
            z_loss_weight=moe_z_loss_weight,
            num_shared_experts=moe_num_shared_experts,
            capacity_factor=moe_capacity_factor,
        )
        self._layer_dtype = kwargs.pop("dtype", None)
        if "name" in kwargs:
            kwargs["name"] = _backend.scope_safe_name(kwargs["name"])
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        x = embed_tokens(self, token_ids, self._layer_dtype)
        for index in range(self.num_layers):
            x = self.wrap_block(self.make_block(index), index)(x)
        logits = self._head(x)
        super().__init__(inputs=token_ids, outputs=logits, **kwargs)
        self._generate_step = None

    def call(
        self,
        inputs: Any,
        training: bool | None = None,
        mask: Any | None = None,
        **kwargs: Any,
    ) -> Any:
        inputs = check_token_ids(
            inputs, self.sequence_length, self.vocabulary_size
        )
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """`keras.Model.compile`, then `check_table_optimizer`.

        A lookup table's own optimizer cannot follow gradient accumulation
        or a table read twice a step: those raise here rather than train
        wrongly.
        """
        super().compile(*args, **kwargs)
        check_table_optimizer(self)

    def wrap_block(
        self, block: keras.layers.Layer, index: int
    ) -> keras.layers.Layer:
        """Block `index` in its Sequence-AltUp and AltUp wrappers, if on."""
        if self.sequence_altup > 1 and index % 2 == 1:
            block = SequenceAltUp(
                block,
                stride=self.sequence_altup,
                dtype=self._layer_dtype,
                name=f"sequence_altup_{index}",
            )
        if self.altup > 1:
            block = AltUp(
                block,
                num_blocks=self.altup,
                active_block=self._active[index],
                coefficients=self.altup_coefficients,
                dtype=self._layer_dtype,
                name=f"altup_{index}",
            )
        return block

    def _head(self, x):
        """AltUp readout (if on), final norm and float32 logits."""
        dtype = self._layer_dtype
        if self.altup > 1:
            x = AltUpReadout(
                self.altup, mode=self.altup_readout, dtype=dtype, name="readout"
            )(x)
        x = keras.layers.RMSNormalization(
            epsilon=self.epsilon, dtype=dtype, name="final_norm"
        )(x)
        return keras.layers.Dense(
            self.vocabulary_size, dtype="float32", name="logits"
        )(x)

    def make_feedforward(self, index: int) -> keras.layers.Layer:
        """The feed-forward sublayer of block `index` (width d to d)."""
        if self._moe_options is not None:
            options = {
                "hidden_dim": self._intermediate_dims[index],
                "activation": "gelu",
                **self._moe_options,
            }
            return MixtureOfExperts(
                **options, dtype=self._layer_dtype, name=f"feedforward_{index}"
            )
        return make_feedforward(
            self.hidden_dim,
            self._intermediate_dims[index],
            dtype=self._layer_dtype,
            name=f"feedforward_{index}",
        )

    def make_block(self, index: int) -> TransformerBlock:
        """Transformer block `index` (before any AltUp wrapping)."""
        return TransformerBlock(
            self.hidden_dim,
            self._num_heads[index],
            head_dim=self.head_dim,
            feedforward=self.make_feedforward(index),
            rotary=self.positions == "rotary",
            laurel=self.laurel,
            laurel_rank=self.laurel_rank,
            epsilon=self.epsilon,
            dtype=self._layer_dtype,
            name=f"block_{index}",
        )

    def get_config(self) -> dict:
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
            "moe_top_k": self.moe_top_k,
            "moe_load_balance_weight": self.moe_load_balance_weight,
            "moe_z_loss_weight": self.moe_z_loss_weight,
            "moe_num_shared_experts": self.moe_num_shared_experts,
            "moe_capacity_factor": self.moe_capacity_factor,
            "head_dim": self.head_dim,
        }
        if self._layer_dtype is not None:
            config["dtype"] = keras.dtype_policies.serialize(
                keras.dtype_policies.get(self._layer_dtype)
            )
        return config

    @classmethod
    def from_config(cls, config: dict) -> "TransformerLM":
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        moe = config.get("moe")
        if "moe_capacity_factor" not in config and moe is not None:
            # Saved before MoE became dropless by default.
            if not (isinstance(moe, dict) and "capacity_factor" in moe):
                config["moe_capacity_factor"] = LEGACY_CAPACITY_FACTOR
        return cls(**config)


def bits_per_byte(loss: Any) -> Any:
    """Converts a mean cross-entropy in nats to bits per token."""
    return loss / math.log(2.0)
