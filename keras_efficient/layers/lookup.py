"""Sparse lookup tables: external memory read by token id, LSH or router."""

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_efficient._validation import check_choice
from keras_efficient._validation import check_int
from keras_efficient._validation import check_positive_int
from keras_efficient.layers._shapes import check_call_width
from keras_efficient.layers._shapes import known_width
from keras_efficient.layers.lookup_token_ids import TOKEN_MAPPINGS
from keras_efficient.layers.lookup_token_ids import check_token_ids_shape
from keras_efficient.layers.lookup_token_ids import token_id_rows
from keras_efficient.layers.lsh import LSHHash
from keras_efficient.layers.lsh import bits_for
from keras_efficient.layers.lsh import check_num_bits
from keras_efficient.layers.product_keys import product_key_topk
from keras_efficient.layers.product_keys import sub_key_counts
from keras_efficient.optimizers.row_update import add_row_update_weights
from keras_efficient.optimizers.row_update import gather_rows_with_update
from keras_efficient.optimizers.row_update import row_update_from

LOOKUPS = ("token_id", "lsh", "router")
CONSUMES = ("add", "concat")
ROUTER_TYPES = ("auto", "dense", "product_keys")
# `router_type="auto"` scores every entry up to this size, product keys above.
DENSE_ROUTER_MAX_ENTRIES = 4096
# Half width of a product-key query (each half scores one sub-key set).
PRODUCT_KEY_HALF_DIM = 32


@keras.saving.register_keras_serializable(package="keras_efficient")
class SparseLookupTable(keras.layers.Layer):
    """A large table of parameters that each token reads sparsely.

    The layer holds a table of `num_entries` vectors of size `dim`. Each
    token selects one (or a few) entries and reads them with a gather
    (`ops.take`), so the table can grow to millions of parameters while the
    compute per token stays flat (Baykal et al.'s study of sparse table
    lookups, the work that introduced alternating updates). Three lookup
    functions:

    - `"token_id"`: the entry is indexed by the token id, passed as a second
      input: `id mod num_entries` (`token_mapping="modulo"`), a
      multiplicative hash of the id (`"hash"`), or the id itself
      (`"direct"`: ids must lie in `[0, num_entries)`). Ids are checked in
      eager calls and inside compiled steps (negative ids raise under
      every mapping; TensorFlow with `jit_compile=True` drops the check
      and clips `"direct"` ids into the table).
    - `"lsh"`: the current vector is hashed by `num_tables` (L) independent
      random-hyperplane LSH tables (frozen, seeded); the table is split into
      L sub-tables of `num_entries // L` rows, each hash picks a row of its
      sub-table and the L rows are summed.
    - `"router"`: a learned router picks the `top_k` most likely entries;
      each is scaled by its softmax probability (the gate), so the router
      is trained through the gate. `router_type="dense"` scores all N
      entries (memory tokens x N); `"product_keys"` (Lample et al. 2019,
      see `product_keys.py`) scores two sets of about `sqrt(N)` sub-keys
      and picks among their top-k x top-k sums, so memory and time grow
      with tokens x k plus `sqrt(N)`; `"auto"` (default) is dense up to
      4,096 entries and product keys above.

    The entries are consumed by `"add"` (`x + entry`, needs
    `dim == x.shape[-1]`) or `"concat"` (`[x, entry]`, output width
    `x.shape[-1] + dim`).

    The table is one weight, `embeddings`, of shape `(num_entries, dim)`:
    shard it over devices with `keras.distribution.ModelParallel` and a
    `LayoutMap` entry `layout_map[".*embeddings"] = ("model", None)`.

    Touched-row training (`table_optimizer`): by default the model's
    optimizer updates the table like any weight, and on JAX and torch it
    receives a dense `(num_entries, dim)` gradient, so a step costs
    O(num_entries x dim) however few rows were read. With
    `table_optimizer="adam"` (or `"sgd"`, or a `keras.optimizers.Adam` /
    `SGD` instance for its hyperparameters) the table is updated by its own
    lazy optimizer inside the backward pass of the gather: only the rows
    read this step move (gradients of repeated reads summed, as
    `LazyAdam`), their moments are kept per row, and the model's optimizer
    copies the result in (the table, its moments and a step counter are
    `overwrite_with_gradient` weights). The step then costs
    O(tokens x dim), not O(num_entries x dim) (measured in
    `benchmarks/lookup_moe.py --scale`). Three consequences: call the layer
    once per training step (a second call in the same step would add two
    updated tables); the model's optimizer options (`clipnorm`,
    `weight_decay`, loss scaling: float16 policies raise) do not reach the
    table; and a gradient taken by hand (`GradientTape`, `jax.grad`) of
    these weights is the updated value, not a gradient (on torch the
    backward pass writes the rows in place, so it also updates the table).
    The model optimizer's `gradient_accumulation_steps` is not supported:
    Keras would combine the updated tables by an elementwise maximum.
    `keras_efficient.optimizers.check_table_optimizer(model)` raises for
    both (`TransformerLM.compile` runs it). The
    table and its moments stay in their variable dtype under mixed
    precision.

    Args:
        num_entries: number of table entries N, `>= 1`.
        dim: width of an entry; default the input width (required for
            `"add"`, where it must equal the input width).
        lookup: `"token_id"`, `"lsh"` or `"router"`.
        consume: `"add"` or `"concat"`.
        num_tables: LSH tables L (`lookup="lsh"`); must divide
            `num_entries`.
        num_bits: hyperplanes per LSH table, in `[1, 30]`; default the
            smallest m with `2**m >= num_entries // num_tables`. Bucket ids
            are folded into the sub-table with `mod (num_entries // L)`.
        top_k: entries read per token by the router, in
            `[1, num_entries]`.
        token_mapping: `"modulo"`, `"hash"` or `"direct"` (`"token_id"`).
        router_type: `"auto"`, `"dense"` or `"product_keys"` (`"router"`).
        table_optimizer: `None` (the model's optimizer updates the table),
            `"adam"`, `"sgd"`, or a `keras.optimizers.Adam` / `SGD`
            instance whose learning rate (float or schedule, evaluated at
            the table's own step) and Adam / momentum settings the table's
            lazy row update uses.
        embeddings_initializer: initializer of the table.
        seed: integer seed of the LSH hyperplanes.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(..., D)`, the token vectors.
        token_ids: integer tensor `(...)` with the leading shape of
            `inputs` (only for `lookup="token_id"`).

    Returns:
        `(..., D)` for `"add"`, `(..., D + dim)` for `"concat"`.

    Example:

    ```python
    import numpy as np
    import keras_efficient as ke

    x = np.random.normal(size=(2, 10, 32)).astype("float32")
    ids = np.random.randint(0, 256, size=(2, 10))
    table = ke.layers.SparseLookupTable(4096, lookup="token_id")
    table(x, ids).shape  # (2, 10, 32)
    lsh = ke.layers.SparseLookupTable(4096, lookup="lsh", num_tables=4,
                                      seed=0)
    lsh(x).shape  # (2, 10, 32)
    ```
    """

    def __init__(
        self,
        num_entries: int,
        dim: int | None = None,
        lookup: str = "token_id",
        consume: str = "add",
        num_tables: int = 1,
        num_bits: int | None = None,
        top_k: int = 1,
        token_mapping: str = "modulo",
        embeddings_initializer: str
        | keras.initializers.Initializer
        | None = None,
        seed: int | None = None,
        router_type: str = "auto",
        table_optimizer: str | keras.optimizers.Optimizer | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_entries", num_entries)
        if dim is not None:
            check_positive_int("dim", dim)
        check_choice("lookup", lookup, LOOKUPS)
        check_choice("consume", consume, CONSUMES)
        check_choice("token_mapping", token_mapping, TOKEN_MAPPINGS)
        check_choice("router_type", router_type, ROUTER_TYPES)
        check_positive_int("num_tables", num_tables)
        check_int("top_k", top_k, min_value=1, max_value=num_entries)
        if lookup == "lsh" and num_entries % num_tables:
            raise ValueError(
                "`num_tables` must divide `num_entries` (each LSH table owns "
                f"num_entries // num_tables rows). Received: "
                f"num_tables={num_tables}, num_entries={num_entries}"
            )
        rows = num_entries // num_tables
        if num_bits is not None:
            check_num_bits(num_bits)
        self.num_entries = int(num_entries)
        self.dim = dim
        self.lookup = lookup
        self.consume = consume
        self.num_tables = int(num_tables)
        self.num_bits = num_bits
        self.top_k = int(top_k)
        self.token_mapping = token_mapping
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer
            or keras.initializers.RandomNormal(stddev=0.02)
        )
        self.seed = seed
        self.router_type = router_type
        self.table_optimizer = table_optimizer
        self.row_update = (
            None
            if table_optimizer is None
            else row_update_from(table_optimizer)
        )
        if self.row_update is not None and self.compute_dtype == "float16":
            # A LossScaleOptimizer scales the loss, and the row update would
            # see the scaled gradient; it cannot read the scale.
            raise ValueError(
                "`table_optimizer` does not support float16 loss scaling; "
                "use the 'mixed_bfloat16' or 'float32' policy. Received: "
                f"table_optimizer={table_optimizer!r} with dtype policy "
                f"{self.dtype_policy.name!r}"
            )
        self.rows_per_table = rows
        self.hash = None
        self.router = None
        self._make_addressing()

    def _make_addressing(self):
        """The sublayer that picks entries: an LSH hash or a router."""
        if self.lookup == "lsh":
            self.hash = LSHHash(
                num_tables=self.num_tables,
                num_bits=self.num_bits
                or min(bits_for(self.rows_per_table), 30),
                seed=self.seed,
                dtype=self.dtype_policy,
                name="hash",
            )
        elif self.uses_product_keys:
            self.router = keras.layers.Dense(
                2 * PRODUCT_KEY_HALF_DIM,
                use_bias=False,
                dtype=self.dtype_policy,
                name="query",
            )
        elif self.lookup == "router":
            self.router = keras.layers.Dense(
                self.num_entries, dtype=self.dtype_policy, name="router"
            )

    @property
    def uses_product_keys(self) -> bool:
        """Whether the router reads the table through product keys."""
        if self.lookup != "router" or self.router_type == "dense":
            return False
        return (
            self.router_type == "product_keys"
            or self.num_entries > DENSE_ROUTER_MAX_ENTRIES
        )

    def build(
        self, inputs_shape: tuple, token_ids_shape: tuple | None = None
    ) -> None:
        input_shape = inputs_shape
        width = known_width(input_shape, "SparseLookupTable")
        self._built_width = width
        dim = self.dim if self.dim is not None else width
        if self.consume == "add" and dim != width:
            raise ValueError(
                "`consume='add'` needs `dim` equal to the input width "
                f"{width}; use consume='concat' for another width. Received: "
                f"dim={dim}"
            )
        check_token_ids_shape(self.lookup, input_shape, token_ids_shape)
        self._entry_dim = dim
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_entries, dim),
            initializer=self.embeddings_initializer,
            trainable=True,
            # The row update reads and writes the table in its own dtype.
            autocast=self.row_update is None,
        )
        self.row_slots = []
        if self.row_update is not None:
            self.row_slots, self.row_step = add_row_update_weights(
                self, self.row_update, self.embeddings
            )
        if self.hash is not None and not self.hash.built:
            self.hash.build(input_shape)
        if self.router is not None and not self.router.built:
            self.router.build(input_shape)
        if self.uses_product_keys:
            n_a, n_b = sub_key_counts(self.num_entries)
            init = keras.initializers.RandomNormal(
                stddev=PRODUCT_KEY_HALF_DIM**-0.5, seed=self.seed
            )
            self.sub_keys_a = self.add_weight(
                name="sub_keys_a",
                shape=(n_a, PRODUCT_KEY_HALF_DIM),
                initializer=init,
            )
            self.sub_keys_b = self.add_weight(
                name="sub_keys_b",
                shape=(n_b, PRODUCT_KEY_HALF_DIM),
                initializer=init,
            )
        self.built = True

    def entry_indices(
        self, inputs: Any, token_ids: Any | None = None
    ) -> tuple[Any, Any | None]:
        """Table rows each token reads, int32 of shape `(..., n)`.

        `n` is 1 for `"token_id"`, `num_tables` for `"lsh"` and `top_k` for
        `"router"`. Also returns the gates `(..., n)` (ones except for the
        router).
        """
        if self.lookup == "token_id":
            return (
                token_id_rows(token_ids, self.num_entries, self.token_mapping),
                None,
            )
        if self.lookup == "lsh":
            buckets = self.hash(inputs)
            rows = self.rows_per_table
            if self.hash.num_buckets != rows:
                buckets = ops.mod(buckets, rows)
            offsets = ops.convert_to_tensor(
                (np.arange(self.num_tables) * rows).astype("int32")
            )
            return buckets + offsets, None
        if self.uses_product_keys:
            query = self.router(inputs)
            lead = ops.shape(query)[:-1]
            index, gates = product_key_topk(
                ops.reshape(query, (-1, 2 * PRODUCT_KEY_HALF_DIM)),
                ops.convert_to_tensor(self.sub_keys_a),
                ops.convert_to_tensor(self.sub_keys_b),
                self.top_k,
                self.num_entries,
            )
            shape = tuple(lead) + (self.top_k,)
            return ops.reshape(index, shape), ops.reshape(gates, shape)
        logits = self.router(inputs)
        probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)
        gates, index = ops.top_k(probs, self.top_k)
        return ops.cast(index, "int32"), gates

    def call(self, inputs: Any, token_ids: Any | None = None) -> Any:
        check_call_width(self, inputs, getattr(self, "_built_width", None))
        if token_ids is not None:
            # Static shapes only: no host sync.
            ids_shape = getattr(token_ids, "shape", None)
            if ids_shape is None:
                ids_shape = np.shape(token_ids)
            check_token_ids_shape(
                self.lookup, tuple(inputs.shape), tuple(ids_shape)
            )
        index, gates = self.entry_indices(inputs, token_ids)
        if self.row_update is None:
            entries = ops.take(self.embeddings, index, axis=0)
        else:
            entries = gather_rows_with_update(
                self.row_update,
                self.embeddings,
                self.row_slots,
                self.row_step,
                index,
            )
        entries = ops.cast(entries, self.compute_dtype)
        if gates is not None:
            gates = ops.cast(gates, self.compute_dtype)
            entries = entries * ops.expand_dims(gates, -1)
        entry = ops.sum(entries, axis=-2)
        if self.consume == "add":
            return inputs + entry
        return ops.concatenate([inputs, ops.cast(entry, inputs.dtype)], -1)

    def compute_output_shape(
        self, inputs_shape: tuple, token_ids_shape: tuple | None = None
    ) -> tuple:
        input_shape = inputs_shape
        if self.consume == "add":
            return tuple(input_shape)
        dim = self.dim if self.dim is not None else input_shape[-1]
        width = None if input_shape[-1] is None else input_shape[-1] + dim
        return tuple(input_shape[:-1]) + (width,)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_entries": self.num_entries,
                "dim": self.dim,
                "lookup": self.lookup,
                "consume": self.consume,
                "num_tables": self.num_tables,
                "num_bits": self.num_bits,
                "top_k": self.top_k,
                "token_mapping": self.token_mapping,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
                "seed": self.seed,
                "router_type": self.router_type,
                "table_optimizer": (
                    self.table_optimizer
                    if self.table_optimizer is None
                    or isinstance(self.table_optimizer, str)
                    else keras.optimizers.serialize(self.table_optimizer)
                ),
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> "SparseLookupTable":
        config = dict(config)
        # Configs saved before product keys scored every entry.
        config.setdefault("router_type", "dense")
        if isinstance(config.get("table_optimizer"), dict):
            config["table_optimizer"] = keras.optimizers.deserialize(
                config["table_optimizer"]
            )
        return super().from_config(config)
