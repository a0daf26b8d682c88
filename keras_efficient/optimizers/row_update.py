"""Row-sparse table updates applied in the backward pass of the gather.

A table of N rows read by A tokens a step has a gradient that is zero
outside the A gathered rows, yet JAX and torch hand the model's optimizer a
dense `(N, d)` gradient and every Keras optimizer then reads and writes all
N rows (and their moments). `gather_rows_with_update` avoids both: it is a
gather whose backward pass applies the table's own optimizer (Adam or SGD,
lazy: only the gathered rows move) to the gathered rows and returns the
*updated* table, moments and step as the "gradients" of those variables.
The variables are marked `overwrite_with_gradient`, so the model's optimizer
copies those values in instead of updating them (the mechanism Keras uses for
float8 scales). The step then costs O(A log A + A d), not O(N d), where XLA
(JAX, TensorFlow with `jit_compile`) scatters into the donated buffers in
place, and where torch's backward pass writes the rows into the tensors
themselves (so on torch any backward pass through the gather, even one
taken by hand, updates the table).

The same trick has a caveat the docstrings repeat: the table must be read
through one such gather per step (a second read in the same step would add
two "updated tables" together).
"""

import functools
from dataclasses import dataclass
from typing import Any

import keras
from keras import ops

from keras_efficient.optimizers.lazy import adam_moments_step
from keras_efficient.optimizers.lazy import sgd_momentum_step

ROW_OPTIMIZERS = ("adam", "sgd")

# Base-optimizer options a row update cannot honour (they act on the whole
# gradient list or need state the table does not keep).
_UNSUPPORTED_OPTIONS = (
    "weight_decay",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "gradient_accumulation_steps",
    "loss_scale_factor",
    "amsgrad",
)


@dataclass(frozen=True)
class RowUpdate:
    """Hyperparameters of a lazy row optimizer (see `row_update_from`)."""

    kind: str
    learning_rate: Any
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    momentum: float = 0.0
    nesterov: bool = False

    @property
    def slots(self) -> tuple[str, ...]:
        """Per-row state variables the update keeps, besides the table."""
        if self.kind == "adam":
            return ("momentum", "velocity")
        return ("momentum",) if self.momentum else ()

    def learning_rate_at(self, step: Any) -> Any:
        if isinstance(
            self.learning_rate, keras.optimizers.schedules.LearningRateSchedule
        ):
            return ops.cast(self.learning_rate(step), "float32")
        return ops.cast(self.learning_rate, "float32")


def row_update_from(optimizer: Any, name: str = "table_optimizer") -> RowUpdate:
    """Reads a `RowUpdate` from `"adam"`, `"sgd"` or a Keras Adam / SGD.

    Any `keras.optimizers.Adam` or `SGD` instance (including `LazyAdam` and
    `LazySGD`) gives its learning rate (a float or a schedule, evaluated at
    the table's own step count) and its Adam / momentum hyperparameters.
    Options that act on the whole gradient list (`clipnorm`,
    `weight_decay`, `use_ema`, ...) raise a `ValueError`.
    """
    if isinstance(optimizer, str):
        if optimizer not in ROW_OPTIMIZERS:
            raise ValueError(
                f"`{name}` must be one of {ROW_OPTIMIZERS}, a "
                "`keras.optimizers.Adam` or `keras.optimizers.SGD` "
                f"instance. Received: {name}={optimizer!r}"
            )
        optimizer = keras.optimizers.get(optimizer)
    if isinstance(optimizer, keras.optimizers.Adam):
        kind = "adam"
    elif isinstance(optimizer, keras.optimizers.SGD):
        kind = "sgd"
    else:
        raise TypeError(
            f"`{name}` must be 'adam', 'sgd', or a `keras.optimizers.Adam` "
            "or `keras.optimizers.SGD` instance. Received: "
            f"{name} of type {type(optimizer).__name__}"
        )
    config = optimizer.get_config()
    for option in _UNSUPPORTED_OPTIONS:
        if config.get(option):
            raise ValueError(
                f"`{name}` updates table rows one by one and cannot honour "
                f"`{option}`. Received: {option}={config[option]!r}"
            )
    learning_rate = optimizer._learning_rate
    if not isinstance(
        learning_rate, keras.optimizers.schedules.LearningRateSchedule
    ):
        learning_rate = float(ops.convert_to_numpy(learning_rate))
    if kind == "adam":
        return RowUpdate(
            kind,
            learning_rate,
            beta_1=float(config["beta_1"]),
            beta_2=float(config["beta_2"]),
            epsilon=float(config["epsilon"]),
        )
    return RowUpdate(
        kind,
        learning_rate,
        momentum=float(config["momentum"]),
        nesterov=bool(config["nesterov"]),
    )


def add_row_update_weights(
    layer: keras.layers.Layer, update: RowUpdate, table: keras.Variable
) -> tuple[list[keras.Variable], keras.Variable]:
    """Creates the moments and step of `table`'s own optimizer on `layer`.

    Returns `(slots, step)`: one zero slot of the table's shape per entry
    of `update.slots` and a float32 step count. The table and these are
    written by the backward pass of the gather (`overwrite_with_gradient`),
    so the model's optimizer leaves them alone.
    """
    table.overwrite_with_gradient = True
    slots = [
        layer.add_weight(
            name=f"{table.name}_{slot}",
            shape=tuple(table.shape),
            initializer="zeros",
            autocast=False,
            overwrite_with_gradient=True,
        )
        for slot in update.slots
    ]
    step = layer.add_weight(
        name=f"{table.name}_step",
        shape=(),
        initializer="zeros",
        dtype="float32",
        autocast=False,
        overwrite_with_gradient=True,
    )
    return slots, step


def _updated_rows(update, rows, slots, gradient, step):
    """New `(rows, slots)` after one lazy Adam / SGD step on these rows."""
    lr = update.learning_rate_at(step)
    if update.kind == "adam":
        t = step + 1.0
        alpha = lr * ops.sqrt(1 - update.beta_2**t) / (1 - update.beta_1**t)
        m, v, delta = adam_moments_step(
            *slots,
            gradient,
            alpha,
            update.beta_1,
            update.beta_2,
            update.epsilon,
        )
        return rows - delta, (m, v)
    if not update.momentum:
        return rows - lr * gradient, ()
    u, delta = sgd_momentum_step(
        slots[0], gradient, lr, update.momentum, update.nesterov
    )
    return rows + delta, (u,)


def apply_row_update(
    update: RowUpdate,
    table: Any,
    slots: tuple,
    step: Any,
    index: Any,
    gradient: Any,
) -> tuple[Any, tuple, Any]:
    """Lazy optimizer step on the rows `index` with per-token `gradient`.

    Args:
        update: a `RowUpdate`.
        table: `(N, d)` table value.
        slots: tuple of `(N, d)` per-row states (`update.slots`).
        step: float32 scalar, updates applied to the table so far.
        index: int32 `(A,)` row read by each token (repeats allowed).
        gradient: `(A, d)` gradient of the loss with respect to each read.

    Returns:
        `(table, slots, step)` after the step. The gradients of repeated
        rows are summed first, so a row read twice moves once, as in
        `LazyAdam`; rows not in `index` are returned unchanged.
    """
    index, rows, new_slots = _updated_read_rows(
        update, table, slots, step, index, gradient
    )
    where = ops.expand_dims(index, -1)
    table = ops.scatter_update(table, where, rows)
    slots = tuple(
        ops.scatter_update(s, where, new) for s, new in zip(slots, new_slots)
    )
    return table, slots, step + 1.0


def _updated_read_rows(update, table, slots, step, index, gradient):
    """`(index, rows, slot rows)`: each read's row after the step.

    Reads are sorted by row; each gets its row's summed gradient, so
    repeated reads compute identical rows and a scatter of all of them is
    order-independent.
    """
    num_reads = index.shape[0]
    order = ops.argsort(index)
    index = ops.take(index, order)
    gradient = ops.take(ops.cast(gradient, table.dtype), order, axis=0)
    new_row = ops.concatenate(
        [ops.ones((1,), "bool"), ops.not_equal(index[1:], index[:-1])]
    )
    segment = ops.cumsum(ops.cast(new_row, "int32")) - 1
    summed = ops.segment_sum(gradient, segment, num_segments=num_reads)
    gradient = ops.take(summed, segment, axis=0)
    rows, new_slots = _updated_rows(
        update,
        ops.take(table, index, axis=0),
        tuple(ops.take(s, index, axis=0) for s in slots),
        gradient,
        step,
    )
    return index, rows, new_slots


def gather_rows_with_update(
    update: RowUpdate, table: Any, slots: Any, step: Any, index: Any
) -> Any:
    """`take(table, index, axis=0)` whose backward pass updates the table.

    The backward pass returns, in place of gradients, the table, slots and
    step after `apply_row_update` with the gradient of the gathered rows;
    the caller marks those variables `overwrite_with_gradient`.

    Args:
        update: a `RowUpdate`.
        table, slots, step: current values (tensors or Keras variables).
        index: int32 indices of any shape.

    Returns:
        The gathered rows, `index.shape + (d,)`.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return _gather_jax(update, table, tuple(slots), step, index)
    if backend == "torch":
        return _gather_torch(update, table, tuple(slots), step, index)
    return _gather_tensorflow(update, table, tuple(slots), step, index)


def _flat_update(update, index, table, slots, step, upstream):
    dim = table.shape[-1]
    flat_index = ops.reshape(index, (-1,))
    flat_gradient = ops.reshape(upstream, (-1, dim))
    return apply_row_update(
        update, table, slots, step, flat_index, flat_gradient
    )


def _gather_jax(update, table, slots, step, index):
    import jax

    @jax.custom_vjp
    def gather(table, slots, step, index):
        return ops.take(table, index, axis=0)

    def forward(table, slots, step, index):
        return gather(table, slots, step, index), (table, slots, step, index)

    def backward(residuals, upstream):
        table, slots, step, index = residuals
        new = _flat_update(update, index, table, slots, step, upstream)
        zero_index = jax.numpy.zeros(index.shape, jax.dtypes.float0)
        return new + (zero_index,)

    gather.defvjp(forward, backward)
    values = [
        v.value if isinstance(v, keras.Variable) else v
        for v in (table, *slots, step)
    ]
    return gather(values[0], tuple(values[1:-1]), values[-1], index)


def _gather_tensorflow(update, table, slots, step, index):
    import tensorflow as tf

    @tf.custom_gradient
    def gather(table, *rest):
        slots, step = rest[:-1], rest[-1]

        def grad(upstream):
            table_, slots_, step_ = _flat_update(
                update, index, table, slots, step, upstream
            )
            return (table_, *slots_, step_)

        return tf.gather(table, index, axis=0), grad

    # Plain tensors (not the variables themselves), so eager
    # `tf.custom_gradient` does not ask for per-variable gradients; the
    # returned values flow back through the reads to the variables.
    values = [
        tf.identity(v.value if isinstance(v, keras.Variable) else v)
        for v in (table, *slots, step)
    ]
    return gather(*values)


def _gather_torch(update, table, slots, step, index):
    """torch: the backward pass writes the rows into the tensors in place.

    It returns those same tensors as their "gradients"; autograd keeps them
    as `.grad` without a copy and `Variable.assign` of a tensor onto its own
    storage is a no-op, so no table-sized array is allocated or copied.
    """
    tensors = [ops.convert_to_tensor(v) for v in (table, *slots, step)]
    return _torch_row_update().apply(update, index, *tensors)


@functools.cache
def _torch_row_update():
    """The torch autograd function, built on first use (torch optional)."""
    import torch

    class TorchRowUpdate(torch.autograd.Function):
        @staticmethod
        def forward(ctx, update, index, table, *rest):
            ctx.update, ctx.index = update, index
            ctx.table, ctx.slots, ctx.step = table, rest[:-1], rest[-1]
            return ops.take(table, index, axis=0)

        @staticmethod
        def backward(ctx, upstream):
            table, slots, step = ctx.table, ctx.slots, ctx.step
            with torch.no_grad():
                flat_gradient = upstream.reshape(-1, table.shape[-1])
                flat_index = ctx.index.reshape(-1)
                index, rows, new_slots = _updated_read_rows(
                    ctx.update, table, slots, step, flat_index, flat_gradient
                )
                index = index.long()
                table.index_copy_(0, index, rows.to(table.dtype))
                for slot, new in zip(slots, new_slots):
                    slot.index_copy_(0, index, new.to(slot.dtype))
                new_step = step + 1.0
            grads = (table.detach(), *(s.detach() for s in slots), new_step)
            return (None, None) + grads

    return TorchRowUpdate
