"""Mixture of experts: dropless by default, LSH or top-k softmax router."""

import math
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from keras_efficient import _backend
from keras_efficient._validation import check_choice
from keras_efficient._validation import check_int
from keras_efficient._validation import check_number
from keras_efficient._validation import check_optional_number
from keras_efficient._validation import check_positive_int
from keras_efficient.layers._shapes import check_call_width
from keras_efficient.layers._shapes import known_width
from keras_efficient.layers.experts import IMPLEMENTATIONS
from keras_efficient.layers.experts import capacity_mlp
from keras_efficient.layers.experts import grouped_mlp
from keras_efficient.layers.lsh import LSHHash
from keras_efficient.layers.lsh import bits_for
from keras_efficient.layers.routing import load_balance_loss
from keras_efficient.layers.routing import positions_in_experts
from keras_efficient.layers.routing import router_z_loss
from keras_efficient.layers.routing import top_k_softmax

ROUTERS = ("lsh", "softmax")
# Default of configs saved before `capacity_factor=None` became the default.
LEGACY_CAPACITY_FACTOR = 1.25


@keras.saving.register_keras_serializable(package="keras_efficient")
class MixtureOfExperts(keras.layers.Layer):
    """Sparsely activated mixture of expert MLPs, dropless by default.

    Each token is sent to `top_k` of `num_experts` expert MLPs
    (`D -> hidden_dim -> output_dim`) and their outputs, scaled by gates,
    are summed. With `router="lsh"` a frozen, seeded random-hyperplane hash
    of the token sends it to the expert of its bucket, so each expert
    interpolates the target in its own region of input space ("A
    theoretical view on sparsely activated networks", Baykal et al.,
    NeurIPS 2022); with `top_k > 1` there are `top_k` independent hash
    tables, each picking one expert with gate `1 / top_k`. With
    `router="softmax"` a learned linear router picks the `top_k` most likely
    experts, each gated by its softmax probability; the Switch Transformer
    load-balancing loss `E * sum_e f_e * P_e` (f: fraction of assignments,
    P: mean router probability of expert e) times `load_balance_weight` and
    the ST-MoE router z-loss `mean_t logsumexp(logits_t) ** 2` times
    `z_loss_weight` are added with `add_loss`. `num_shared_experts` experts
    (DeepSeekMoE) see every token, as one dense MLP of width
    `num_shared_experts * hidden_dim` added to the routed output.

    Dispatch is dropless by default (`capacity_factor=None`): the
    (token, expert) assignments are sorted by expert and each expert
    multiplies exactly its rows (see `experts.grouped_mlp`: one grouped
    matmul, `jax.lax.ragged_dot` on JAX with `implementation="ragged"`, a
    blocked batched matmul in `keras.ops` elsewhere; memory grows with
    tokens x top_k, never with tokens x experts). With a `capacity_factor`
    each expert gets `C = ceil(capacity_factor * T * top_k / E)` slots (T
    tokens per call; first choices are served before second choices, then
    in token order) and assignments beyond are dropped (output zero, so a
    residual around the layer passes the token through). The fraction of
    assignments dropped in the last call is kept in the non-trainable
    scalar weight `dropped_fraction` (0 when dropless; updated inside
    compiled steps like a batch-norm statistic). With a capacity, on
    TensorFlow and torch, `fit` and `evaluate` also log its mean over the
    epoch's calls as `"<layer name>_dropped_fraction"` (the metric
    `dropped_fraction_metric`); not on JAX, whose trainer cannot take
    metrics from a layer's call.

    The expert weights `kernel_in` `(E, D, H)`, `bias_in`, `kernel_out`
    `(E, H, O)`, `bias_out` have the expert axis first: shard them over a
    mesh axis with `keras.distribution.ModelParallel`, e.g.
    `layout_map[".*kernel_(in|out)"] = ("model", None, None)` (expert
    parallelism; XLA inserts the exchange of routed tokens).

    Args:
        num_experts: number of experts E, `>= 1`.
        hidden_dim: hidden width H of each expert, `>= 1`.
        router: `"lsh"` or `"softmax"`.
        top_k: experts per token, in `[1, num_experts]`.
        capacity_factor: `None` (default: dropless) or slots per expert
            relative to an even split, `> 0` (tokens beyond are dropped).
        output_dim: output width O; default the input width.
        activation: hidden activation of the experts.
        load_balance_weight: weight of the load-balancing loss (softmax
            router), `>= 0`.
        z_loss_weight: weight of the router z-loss (softmax router),
            `>= 0`; ST-MoE uses 1e-3.
        num_shared_experts: experts applied to every token, `>= 0`.
        num_bits: LSH hyperplanes per table; default the smallest m with
            `2**m >= num_experts`. Buckets map to experts by
            `bucket mod num_experts`.
        kernel_initializer: initializer of the expert kernels; default
            Glorot uniform per expert (fans of one expert's `D x H` matrix).
        bias_initializer: initializer of the expert biases.
        implementation: `"auto"` (ragged where `_backend.FAST_PATHS` says
            it is faster, else reference), `"reference"` (`keras.ops`,
            every backend) or `"ragged"` (JAX `ragged_dot`).
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
                                     router="softmax", top_k=2,
                                     z_loss_weight=1e-3,
                                     num_shared_experts=1)
    model = keras.Model(inputs, inputs + moe(inputs))
    model.compile("adam", "mse")
    x = np.random.normal(size=(64, 16, 32)).astype("float32")
    model.fit(x, x, epochs=1, verbose=0)
    float(moe.dropped_fraction)  # 0.0: dropless
    ```
    """

    def __init__(
        self,
        num_experts: int,
        hidden_dim: int,
        router: str = "lsh",
        top_k: int = 1,
        capacity_factor: float | None = None,
        output_dim: int | None = None,
        activation: str | Callable = "relu",
        load_balance_weight: float = 0.01,
        z_loss_weight: float = 0.0,
        num_shared_experts: int = 0,
        num_bits: int | None = None,
        kernel_initializer: str | keras.initializers.Initializer | None = None,
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        implementation: str = "auto",
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.num_experts = check_positive_int("num_experts", num_experts)
        self.hidden_dim = check_positive_int("hidden_dim", hidden_dim)
        self.router = check_choice("router", router, ROUTERS)
        self.top_k = check_int(
            "top_k", top_k, min_value=1, max_value=num_experts
        )
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
        self.z_loss_weight = check_number(
            "z_loss_weight", z_loss_weight, min_value=0
        )
        self.num_shared_experts = check_int(
            "num_shared_experts", num_shared_experts, min_value=0
        )
        check_choice("implementation", implementation, IMPLEMENTATIONS)
        _backend.resolve_implementation(implementation, ("ragged",))
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
        self.hash = None
        self.gate_network = None
        self._make_router()
        # Only a layer with a capacity can drop, so only it adds a metric (a
        # dropless model's `evaluate` keeps returning the bare loss); not on
        # JAX, whose trainer takes no metrics from a layer (keras#21639).
        self.dropped_fraction_metric = None
        if self.capacity_factor is not None and _backend.backend() != "jax":
            self.dropped_fraction_metric = keras.metrics.Mean(
                name=f"{self.name}_dropped_fraction"
            )

    def _make_router(self):
        """The LSH hash (`router="lsh"`) or the softmax gate's logits."""
        if self.router == "lsh":
            self.hash = LSHHash(
                num_tables=self.top_k,
                num_bits=self.num_bits or bits_for(self.num_experts),
                seed=self.seed,
                dtype=self.dtype_policy,
                name="hash",
            )
        else:
            self.gate_network = keras.layers.Dense(
                self.num_experts,
                use_bias=False,
                dtype=self.dtype_policy,
                name="router",
            )

    def build(self, input_shape: tuple) -> None:
        dim = known_width(input_shape, "MixtureOfExperts")
        self._built_width = dim
        e, h = self.num_experts, self.hidden_dim
        out = self.output_dim or dim
        kernel_init = self.kernel_initializer or (
            keras.initializers.VarianceScaling(
                scale=float(e), mode="fan_avg", distribution="uniform"
            )
        )
        add = self.add_weight
        bias_init = self.bias_initializer
        self.kernel_in = add(
            name="kernel_in", shape=(e, dim, h), initializer=kernel_init
        )
        self.bias_in = add(name="bias_in", shape=(e, h), initializer=bias_init)
        self.kernel_out = add(
            name="kernel_out", shape=(e, h, out), initializer=kernel_init
        )
        self.bias_out = add(
            name="bias_out", shape=(e, out), initializer=bias_init
        )
        self.dropped_fraction = add(
            name="dropped_fraction",
            shape=(),
            initializer="zeros",
            trainable=False,
            dtype="float32",
        )
        if self.num_shared_experts:
            self._build_shared(dim, out)
        if self.hash is not None and not self.hash.built:
            self.hash.build(input_shape)
        if self.gate_network is not None and not self.gate_network.built:
            self.gate_network.build(input_shape)
        self.built = True

    def _build_shared(self, dim, out):
        width = self.num_shared_experts * self.hidden_dim
        kernel_init = self.kernel_initializer or "glorot_uniform"
        self.shared_kernel_in = self.add_weight(
            name="shared_kernel_in",
            shape=(dim, width),
            initializer=kernel_init,
        )
        self.shared_bias_in = self.add_weight(
            name="shared_bias_in",
            shape=(width,),
            initializer=self.bias_initializer,
        )
        self.shared_kernel_out = self.add_weight(
            name="shared_kernel_out",
            shape=(width, out),
            initializer=kernel_init,
        )
        self.shared_bias_out = self.add_weight(
            name="shared_bias_out",
            shape=(out,),
            initializer=self.bias_initializer,
        )

    def capacity(self, num_tokens: int) -> int | None:
        """Slots per expert for `num_tokens` tokens, `None` if dropless."""
        k, e = self.top_k, self.num_experts
        if self.capacity_factor is None:
            return None
        if isinstance(num_tokens, int):
            slots = math.ceil(self.capacity_factor * num_tokens * k / e)
            return max(1, min(slots, num_tokens * k))
        slots = ops.ceil(
            self.capacity_factor * ops.cast(num_tokens * k, "float32") / e
        )
        slots = ops.minimum(ops.cast(slots, "int32"), num_tokens * k)
        return ops.maximum(slots, 1)

    def route(self, x: Any) -> tuple[Any, Any, Any | None]:
        """`(experts, gates, logits)` of each token: `(T, top_k)` ids and
        gates, and the `(T, E)` router logits (`None` with LSH)."""
        if self.hash is not None:
            buckets = self.hash(x)
            experts = ops.mod(buckets, self.num_experts)
            gates = ops.full(ops.shape(experts), 1.0 / self.top_k, "float32")
            return ops.cast(experts, "int32"), gates, None
        logits = ops.cast(self.gate_network(x), "float32")
        experts, gates, _ = top_k_softmax(logits, self.top_k)
        return experts, gates, logits

    def _add_router_losses(self, expert, logits):
        if logits is None:
            return
        if self.load_balance_weight > 0:
            probs = ops.softmax(logits, axis=-1)
            balance = load_balance_loss(expert, probs, self.num_experts)
            self.add_loss(self.load_balance_weight * balance)
        if self.z_loss_weight > 0:
            self.add_loss(self.z_loss_weight * router_z_loss(logits))

    def _experts(self, x, token, expert, num_tokens):
        names = ("kernel_in", "bias_in", "kernel_out", "bias_out")
        weights = tuple(ops.convert_to_tensor(getattr(self, n)) for n in names)
        impl = _backend.resolve_implementation(self.implementation, ("ragged",))
        capacity = self.capacity(num_tokens)
        if capacity is None:
            self._record_dropped(ops.zeros((), "float32"))
            return grouped_mlp(x, token, expert, weights, self.activation, impl)
        position = positions_in_experts(expert)
        keep = position < capacity
        self._record_dropped(1.0 - ops.mean(ops.cast(keep, "float32")))
        if impl == "ragged":
            return grouped_mlp(
                x, token, expert, weights, self.activation, impl, keep=keep
            )
        return capacity_mlp(
            x, token, expert, position, keep, capacity, weights, self.activation
        )

    def _record_dropped(self, fraction):
        self.dropped_fraction.assign(fraction)
        if self.dropped_fraction_metric is not None:
            self.dropped_fraction_metric.update_state(fraction)

    def _shared(self, x):
        hidden = ops.matmul(x, self.shared_kernel_in) + self.shared_bias_in
        hidden = self.activation(hidden)
        return ops.matmul(hidden, self.shared_kernel_out) + self.shared_bias_out

    def call(self, inputs: Any) -> Any:
        check_call_width(self, inputs, getattr(self, "_built_width", None))
        shape = ops.shape(inputs)
        x = ops.reshape(inputs, (-1, shape[-1]))
        num_tokens = ops.shape(x)[0]
        experts, gates, logits = self.route(x)
        # Assignments in k-major order: every first choice before any
        # second choice, so capacity serves first choices first.
        expert = ops.reshape(ops.transpose(experts), (-1,))
        gate = ops.reshape(ops.transpose(gates), (-1,))
        token = ops.tile(ops.arange(num_tokens, dtype="int32"), (self.top_k,))
        self._add_router_losses(expert, logits)
        out = self._experts(x, token, expert, num_tokens)
        out = out * ops.cast(ops.expand_dims(gate, -1), out.dtype)
        out_dim = self.output_dim or inputs.shape[-1]
        out = ops.sum(ops.reshape(out, (self.top_k, -1, out_dim)), axis=0)
        if self.num_shared_experts:
            out = out + ops.cast(self._shared(x), out.dtype)
        return ops.reshape(out, tuple(shape[:-1]) + (out_dim,))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape[:-1]) + (self.output_dim or input_shape[-1],)

    def get_prunable_weights(self) -> list:
        """The kernels `MagnitudePruning` may prune (pruning protocol).

        The expert kernels `kernel_in` `(E, D, H)` and `kernel_out`
        `(E, H, O)`; the router stays dense.
        """
        names = ("kernel_in", "kernel_out")
        weights = [getattr(self, name, None) for name in names]
        return [w for w in weights if w is not None]

    def get_config(self) -> dict:
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
                "z_loss_weight": self.z_loss_weight,
                "num_shared_experts": self.num_shared_experts,
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

    @classmethod
    def from_config(cls, config: dict) -> "MixtureOfExperts":
        config = dict(config)
        # Configs saved before dropless became the default kept capacity.
        config.setdefault("capacity_factor", LEGACY_CAPACITY_FACTOR)
        return super().from_config(config)
