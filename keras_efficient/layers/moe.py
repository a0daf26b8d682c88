"""Mixture of experts with an LSH or a softmax router."""

import math

import keras
from keras import ops

from keras_efficient import _backend
from keras_efficient._validation import check_choice
from keras_efficient._validation import check_int
from keras_efficient._validation import check_number
from keras_efficient._validation import check_optional_number
from keras_efficient._validation import check_positive_int
from keras_efficient.layers.lsh import LSHHash
from keras_efficient.layers.lsh import bits_for

ROUTERS = ("lsh", "softmax")
IMPLEMENTATIONS = ("auto", "reference", "ragged")


def resolve_implementation(implementation):
    """Maps `"auto"` to the grouped-matmul path used on this backend."""
    return _backend.resolve_implementation(implementation)


def positions_in_experts(expert, num_experts):
    """Rank of each assignment among the earlier ones to the same expert.

    `position[i]` is the number of `j < i` with `expert[j] == expert[i]`,
    i.e. the assignment's slot in its expert's buffer in arrival order.
    Computed by one stable sort on `(expert, i)` keys rather than a cumsum
    over a `(A, E)` one-hot: on TensorFlow's XLA a cumsum fused with a
    hash-based router took minutes to compile for a few thousand tokens
    (the sort also costs O(A log A) instead of O(A E)).

    Args:
        expert: `(A,)` int32 expert ids in `[0, num_experts)`.
        num_experts: number of experts E.

    Returns:
        `(A,)` int32 positions.
    """
    expert = ops.cast(expert, "int32")
    num = ops.shape(expert)[0]
    index = ops.arange(num, dtype="int32")
    # Unique keys: sorting them groups by expert, arrival order within.
    order = ops.argsort(expert * num + index)
    sorted_expert = ops.take(expert, order)
    counts = ops.sum(ops.one_hot(expert, num_experts, dtype="int32"), axis=0)
    starts = ops.cast(ops.cumsum(counts) - counts, "int32")
    rank = index - ops.take(starts, sorted_expert)
    return ops.cast(
        ops.scatter(ops.expand_dims(order, -1), rank, (num,)), "int32"
    )


def expert_mlp(
    x,
    token,
    expert,
    position,
    keep,
    capacity,
    kernel_in,
    bias_in,
    kernel_out,
    bias_out,
    activation,
    implementation="reference",
):
    """Runs each token-expert assignment through its expert's MLP.

    The one dispatch function of the layer. `"reference"` (`keras.ops`
    only) groups the assignments into an `(E, C, D)` buffer (expert,
    capacity slot, features) with a scatter of token indices and a gather,
    runs one batched matmul per expert weight and gathers the results back.
    `"ragged"` (JAX only) sorts the kept assignments by expert and runs
    `jax.lax.ragged_dot` on the sorted rows: no capacity buffer and no
    padding. Both give the same outputs.

    Args:
        x: `(T, D)` token vectors.
        token: `(A,)` int32 token index of each assignment.
        expert: `(A,)` int32 expert of each assignment.
        position: `(A,)` int32 slot of the assignment in its expert's
            buffer (its rank among the expert's assignments).
        keep: `(A,)` bool, `position < capacity` (else the assignment is
            dropped and its output is zero).
        capacity: slots per expert C (int, or a scalar tensor).
        kernel_in, bias_in, kernel_out, bias_out: `(E, D, H)`, `(E, H)`,
            `(E, H, O)`, `(E, O)` expert weights.
        activation: the hidden activation (a callable).
        implementation: `"reference"` or `"ragged"`.

    Returns:
        `(A, O)` expert outputs, zeros for dropped assignments.
    """
    num_experts = kernel_in.shape[0]
    out_dim = kernel_out.shape[-1]
    if implementation == "ragged":
        weights = (kernel_in, bias_in, kernel_out, bias_out)
        return _expert_mlp_ragged(x, token, expert, keep, weights, activation)
    dim = ops.shape(x)[-1]
    slots = num_experts * capacity
    slot = ops.where(keep, expert * capacity + position, slots)
    # Token (+1) held by each slot; 0 marks an empty slot. Dropped
    # assignments all write the extra last slot, which is discarded.
    slot_token = ops.scatter_update(
        ops.zeros((slots + 1,), "int32"),
        ops.expand_dims(slot, -1),
        token + 1,
    )[:slots]
    x_pad = ops.concatenate([ops.zeros((1, dim), x.dtype), x], axis=0)
    grouped = ops.take(x_pad, slot_token, axis=0)
    grouped = ops.reshape(grouped, (num_experts, capacity, dim))
    hidden = ops.einsum("ecd,edh->ech", grouped, kernel_in)
    hidden = activation(hidden + ops.expand_dims(bias_in, 1))
    out = ops.einsum("ech,eho->eco", hidden, kernel_out)
    out = out + ops.expand_dims(bias_out, 1)
    out = ops.reshape(out, (slots, out_dim))
    out = ops.concatenate([out, ops.zeros((1, out_dim), out.dtype)], axis=0)
    return ops.take(out, slot, axis=0)


def _expert_mlp_ragged(x, token, expert, keep, weights, activation):
    import jax
    import jax.numpy as jnp

    kernel_in, bias_in, kernel_out, bias_out = weights
    num_experts = kernel_in.shape[0]
    token, expert, keep = (jnp.asarray(a) for a in (token, expert, keep))
    # Dropped assignments sort after every expert's group and are masked.
    key = jnp.where(keep, expert, num_experts)
    order = jnp.argsort(key, stable=True)
    sorted_expert = jnp.minimum(key[order], num_experts - 1)
    group_sizes = jnp.sum(
        jax.nn.one_hot(expert, num_experts, dtype="int32")
        * keep[:, None].astype("int32"),
        axis=0,
    ).astype("int32")
    rows = jnp.take(x, token[order], axis=0)
    kernel_in = jnp.asarray(kernel_in, rows.dtype)
    kernel_out = jnp.asarray(kernel_out, rows.dtype)
    hidden = jax.lax.ragged_dot(rows, kernel_in, group_sizes)
    hidden = activation(hidden + jnp.take(bias_in, sorted_expert, axis=0))
    out = jax.lax.ragged_dot(hidden, kernel_out, group_sizes)
    out = out + jnp.take(bias_out, sorted_expert, axis=0)
    out = jnp.where(keep[order][:, None], out, 0)
    inverse = jnp.argsort(order)
    return jnp.take(out, inverse, axis=0)


@keras.saving.register_keras_serializable(package="keras_efficient")
class MixtureOfExperts(keras.layers.Layer):
    """Sparsely activated mixture of expert MLPs with an LSH or softmax router.

    Each token is sent to `top_k` of `num_experts` expert MLPs
    (`D -> hidden_dim -> output_dim`) and their outputs, scaled by gates,
    are summed. With `router="lsh"` a frozen, seeded random-hyperplane hash
    of the token sends it to the expert of its bucket, so each expert
    interpolates the target in its own region of input space ("A
    theoretical view on sparsely activated networks", Baykal et al.,
    NeurIPS 2022); with `top_k > 1` there are `top_k` independent hash
    tables, each picking one expert with gate `1 / top_k`. With
    `router="softmax"` a learned linear router picks the `top_k` most likely
    experts, each gated by its softmax probability, and the Switch
    Transformer load-balancing loss
    `E * sum_e f_e * P_e` (f: fraction of assignments, P: mean router
    probability of expert e) times `load_balance_weight` is added with
    `add_loss`.

    Dispatch has no Python loop over experts: assignments are grouped into
    an `(E, C, D)` buffer of `C = ceil(capacity_factor * T * top_k / E)`
    slots per expert (T tokens per call; first choices are served before
    second choices, then in token order); assignments beyond an expert's
    capacity are dropped (their output is zero, so a residual connection
    around the layer passes the token through). One batched matmul per
    expert weight computes all experts. On JAX with a GPU or TPU the
    default `implementation="auto"` uses `jax.lax.ragged_dot` on the kept
    assignments sorted by expert instead of the padded buffer (on CPU,
    where XLA's `ragged_dot` is slower than the padded batched matmul, and
    on the other backends it uses the `keras.ops` path); both paths give
    the same outputs (see `expert_mlp`).

    The fraction of assignments dropped in the last call is kept in the
    non-trainable scalar weight `dropped_fraction` (read it with
    `float(layer.dropped_fraction)`; it is updated inside compiled train,
    test and predict steps like a batch-norm statistic).

    The expert weights `kernel_in` `(E, D, H)`, `bias_in`, `kernel_out`
    `(E, H, O)`, `bias_out` have the expert axis first: shard them with
    `keras.distribution.ModelParallel`, e.g.
    `layout_map[".*kernel_(in|out)"] = ("model", None, None)`.

    Args:
        num_experts: number of experts E, `>= 1`.
        hidden_dim: hidden width H of each expert, `>= 1`.
        router: `"lsh"` or `"softmax"`.
        top_k: experts per token, in `[1, num_experts]`.
        capacity_factor: slots per expert relative to an even split, `> 0`,
            or `None` for no dropping (C = T, or T * top_k with LSH).
        output_dim: output width O; default the input width.
        activation: hidden activation of the experts.
        load_balance_weight: weight of the load-balancing loss (softmax
            router), `>= 0`.
        num_bits: LSH hyperplanes per table; default the smallest m with
            `2**m >= num_experts`. Buckets map to experts by
            `bucket mod num_experts`.
        kernel_initializer: initializer of the expert kernels; default
            Glorot uniform per expert (fans of one expert's `D x H` matrix).
        bias_initializer: initializer of the expert biases.
        implementation: `"auto"` (ragged on JAX with an accelerator,
            else reference), `"reference"` (`keras.ops`, every backend) or
            `"ragged"` (JAX `ragged_dot`).
        seed: integer seed of the LSH hyperplanes.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(..., D)`.

    Returns:
        `(..., output_dim)`.

    Example:

    ```python
    import numpy as np
    import keras
    import keras_efficient as ke

    inputs = keras.Input((16, 32))
    moe = ke.layers.MixtureOfExperts(num_experts=8, hidden_dim=64,
                                     router="lsh", seed=0)
    model = keras.Model(inputs, inputs + moe(inputs))
    model.compile("adam", "mse")
    x = np.random.normal(size=(64, 16, 32)).astype("float32")
    model.fit(x, x, epochs=1, verbose=0)
    float(moe.dropped_fraction)  # share of token-expert pairs dropped
    ```
    """

    def __init__(
        self,
        num_experts,
        hidden_dim,
        router="lsh",
        top_k=1,
        capacity_factor=1.25,
        output_dim=None,
        activation="relu",
        load_balance_weight=0.01,
        num_bits=None,
        kernel_initializer=None,
        bias_initializer="zeros",
        implementation="auto",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = check_positive_int("num_experts", num_experts)
        self.hidden_dim = check_positive_int("hidden_dim", hidden_dim)
        self.router = check_choice("router", router, ROUTERS)
        self.top_k = check_int(
            "top_k", top_k, min_value=1, max_value=num_experts
        )
        # None: no dropping.
        self.capacity_factor = check_optional_number(
            "capacity_factor", capacity_factor, min_value=0, min_inclusive=False
        )
        self.output_dim = (
            None
            if output_dim is None
            else check_positive_int("output_dim", output_dim)
        )
        self.load_balance_weight = check_number(
            "load_balance_weight", load_balance_weight, min_value=0
        )
        check_choice("implementation", implementation, IMPLEMENTATIONS)
        resolve_implementation(implementation)
        self.activation = keras.activations.get(activation)
        self.num_bits = num_bits
        self.kernel_initializer = (
            None
            if kernel_initializer is None
            else keras.initializers.get(kernel_initializer)
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.implementation = implementation
        self.seed = seed
        if router == "lsh":
            self.hash = LSHHash(
                num_tables=self.top_k,
                num_bits=num_bits or bits_for(num_experts),
                seed=seed,
                dtype=self.dtype_policy,
                name="hash",
            )
            self.gate_network = None
        else:
            self.hash = None
            self.gate_network = keras.layers.Dense(
                num_experts,
                use_bias=False,
                dtype=self.dtype_policy,
                name="router",
            )

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError(
                "`MixtureOfExperts` needs a known input width. Received: "
                f"input_shape={input_shape}"
            )
        e, h = self.num_experts, self.hidden_dim
        out = self.output_dim or dim
        kernel_init = self.kernel_initializer or (
            keras.initializers.VarianceScaling(
                scale=float(e), mode="fan_avg", distribution="uniform"
            )
        )
        self.kernel_in = self.add_weight(
            name="kernel_in", shape=(e, dim, h), initializer=kernel_init
        )
        self.bias_in = self.add_weight(
            name="bias_in", shape=(e, h), initializer=self.bias_initializer
        )
        self.kernel_out = self.add_weight(
            name="kernel_out", shape=(e, h, out), initializer=kernel_init
        )
        self.bias_out = self.add_weight(
            name="bias_out", shape=(e, out), initializer=self.bias_initializer
        )
        self.dropped_fraction = self.add_weight(
            name="dropped_fraction",
            shape=(),
            initializer="zeros",
            trainable=False,
            dtype="float32",
        )
        if self.hash is not None and not self.hash.built:
            self.hash.build(input_shape)
        if self.gate_network is not None and not self.gate_network.built:
            self.gate_network.build(input_shape)
        self.built = True

    def capacity(self, num_tokens):
        """Slots per expert for `num_tokens` tokens (int or scalar tensor)."""
        k, e = self.top_k, self.num_experts
        if self.capacity_factor is None:
            return num_tokens * (k if self.router == "lsh" else 1)
        if isinstance(num_tokens, int):
            slots = math.ceil(self.capacity_factor * num_tokens * k / e)
            return max(1, min(slots, num_tokens * k))
        slots = ops.ceil(
            self.capacity_factor * ops.cast(num_tokens * k, "float32") / e
        )
        slots = ops.minimum(ops.cast(slots, "int32"), num_tokens * k)
        return ops.maximum(slots, 1)

    def route(self, x):
        """Experts and gates of each token: two `(T, top_k)` tensors."""
        if self.hash is not None:
            buckets = self.hash(x)
            experts = ops.mod(buckets, self.num_experts)
            gates = ops.full(ops.shape(experts), 1.0 / self.top_k, "float32")
            return experts, gates, None
        logits = ops.cast(self.gate_network(x), "float32")
        probs = ops.softmax(logits, axis=-1)
        gates, experts = ops.top_k(probs, self.top_k)
        return ops.cast(experts, "int32"), gates, probs

    def call(self, inputs):
        shape = ops.shape(inputs)
        dim = shape[-1]
        x = ops.reshape(inputs, (-1, dim))
        num_tokens = ops.shape(x)[0]
        experts, gates, probs = self.route(x)
        # Assignments in k-major order: every first choice before any
        # second choice, so capacity serves first choices first.
        expert = ops.reshape(ops.transpose(experts), (-1,))
        gate = ops.reshape(ops.transpose(gates), (-1,))
        token = ops.tile(ops.arange(num_tokens, dtype="int32"), (self.top_k,))
        position = positions_in_experts(expert, self.num_experts)
        capacity = self.capacity(num_tokens)
        keep = position < capacity
        kept = ops.cast(keep, "float32")
        self.dropped_fraction.assign(1.0 - ops.mean(kept))
        if probs is not None and self.load_balance_weight > 0:
            one_hot = ops.one_hot(expert, self.num_experts, dtype="float32")
            fraction = ops.mean(one_hot, axis=0)
            mean_prob = ops.mean(probs, axis=0)
            balance = self.num_experts * ops.sum(fraction * mean_prob)
            self.add_loss(self.load_balance_weight * balance)
        out = expert_mlp(
            x,
            token,
            ops.cast(expert, "int32"),
            position,
            keep,
            capacity,
            ops.convert_to_tensor(self.kernel_in),
            ops.convert_to_tensor(self.bias_in),
            ops.convert_to_tensor(self.kernel_out),
            ops.convert_to_tensor(self.bias_out),
            self.activation,
            implementation=resolve_implementation(self.implementation),
        )
        out = out * ops.cast(ops.expand_dims(gate, -1), out.dtype)
        out_dim = self.output_dim or inputs.shape[-1]
        out = ops.sum(ops.reshape(out, (self.top_k, -1, out_dim)), axis=0)
        return ops.reshape(out, tuple(shape[:-1]) + (out_dim,))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim or input_shape[-1],)

    def get_prunable_weights(self):
        """The kernels `MagnitudePruning` may prune (pruning protocol).

        The expert kernels `kernel_in` `(E, D, H)` and `kernel_out`
        `(E, H, O)`; the router stays dense.
        """
        names = ("kernel_in", "kernel_out")
        weights = [getattr(self, name, None) for name in names]
        return [w for w in weights if w is not None]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "hidden_dim": self.hidden_dim,
                "router": self.router,
                "top_k": self.top_k,
                "capacity_factor": self.capacity_factor,
                "output_dim": self.output_dim,
                "activation": keras.activations.serialize(self.activation),
                "load_balance_weight": self.load_balance_weight,
                "num_bits": self.num_bits,
                "kernel_initializer": None
                if self.kernel_initializer is None
                else keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "implementation": self.implementation,
                "seed": self.seed,
            }
        )
        return config
