"""Lazy optimizers: only the rows a step touched move (like TF's LazyAdam).

A lookup table of N rows read by a batch of A tokens has a gradient that is
zero outside the A gathered rows. A plain Keras optimizer still updates
every row: Adam decays the moments of all N rows and moves rows whose
gradient is zero. The lazy optimizers here update only the *touched* rows,
those whose gradient row is not all zeros, and leave the value and the
moments of every other row exactly as they were.

How the cost scales depends on what the backend hands the optimizer:

- TensorFlow passes the gradient of a gather as `tf.IndexedSlices`; the
  update then reads and writes only the touched rows (duplicates summed),
  so its cost grows with A, not with N.
- JAX and torch hand every optimizer a dense `(N, d)` gradient (on JAX the
  gradient of a gather is a scatter-add into zeros). The update is then a
  row-masked dense update: the same numbers, but O(N d) work per step
  (measured in `benchmarks/lookup_moe.py`).
"""

from typing import Any

import keras
from keras import ops


def adam_moments_step(
    m: Any,
    v: Any,
    gradient: Any,
    alpha: Any,
    beta_1: float,
    beta_2: float,
    epsilon: float,
) -> tuple[Any, Any, Any]:
    """Keras Adam on moments `m`, `v`: new `(m, v, delta)`, `w -= delta`.

    Shared by `LazyAdam` and a table's own row update
    (`SparseLookupTable(table_optimizer=...)`).
    """
    m = m + (gradient - m) * (1 - beta_1)
    v = v + (ops.square(gradient) - v) * (1 - beta_2)
    return m, v, alpha * m / (ops.sqrt(v) + epsilon)


def sgd_momentum_step(
    velocity: Any,
    gradient: Any,
    learning_rate: Any,
    momentum: Any,
    nesterov: bool,
) -> tuple[Any, Any]:
    """Keras SGD with momentum: new `(velocity, delta)`, `w += delta`."""
    velocity = momentum * velocity - learning_rate * gradient
    if nesterov:
        return velocity, momentum * velocity - learning_rate * gradient
    return velocity, velocity


def _touched_rows(gradient):
    """`(N, 1, ...)` bool: rows of `gradient` that are not all zeros."""
    if len(gradient.shape) < 2:
        return ops.not_equal(gradient, 0)
    axes = tuple(range(1, len(gradient.shape)))
    touched = ops.any(ops.not_equal(gradient, 0), axis=axes)
    return ops.reshape(touched, (-1,) + (1,) * len(axes))


def _indexed_slices(gradient):
    """`(rows, summed values)` of a TF `IndexedSlices` gradient, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not isinstance(gradient, tf.IndexedSlices):
        return None
    rows, segment = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(
        gradient.values, segment, tf.shape(rows)[0]
    )
    return rows, values


def _scatter_rows(optimizer, variable, rows, values):
    import tensorflow as tf

    optimizer.assign(variable, tf.IndexedSlices(values, rows))


@keras.saving.register_keras_serializable(package="keras_efficient")
class LazyAdam(keras.optimizers.Adam):
    """Adam that updates only the rows touched by the step.

    For each variable, the rows (slices along the first axis) whose
    gradient is not all zeros are updated exactly as Keras' `Adam` does
    (same `alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)`,
    `m += (g - m) * (1 - beta_1)`, `v += (g^2 - v) * (1 - beta_2)`,
    `w -= alpha * m / (sqrt(v) + epsilon)`, with `t` the global step); the
    value and the moments of the other rows are left untouched. This is
    TF's `LazyAdam` for embedding tables: with sparse reads, rows that were
    not read keep their moments instead of decaying them. Variables whose
    gradients are dense everywhere behave as with `Adam`. On TensorFlow the
    update touches only the gathered rows; on JAX and torch it is a
    row-masked dense update (see the module docstring). `amsgrad` is not
    supported; `weight_decay` (from the base optimizer) applies to every
    row.

    Args:
        learning_rate, beta_1, beta_2, epsilon: as in `keras.optimizers.Adam`.
        **kwargs: base optimizer arguments (`clipnorm`, `name`, ...).

    Example:

    ```python
    import numpy as np
    import keras
    from keras_efficient.optimizers import LazyAdam

    ids = keras.Input((4,), dtype="int32")
    x = keras.layers.Embedding(4096, 8)(ids)
    model = keras.Model(ids, keras.layers.Dense(1)(x))
    model.compile(LazyAdam(1e-3), "mse")
    model.fit(np.random.randint(0, 4096, (32, 4)), np.zeros((32, 4, 1)),
              verbose=0)
    ```
    """

    def __init__(
        self,
        learning_rate: float
        | keras.optimizers.schedules.LearningRateSchedule = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        **kwargs: Any,
    ):
        if kwargs.pop("amsgrad", False):
            raise ValueError(
                "`LazyAdam` does not support `amsgrad`. Received: amsgrad=True"
            )
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            **kwargs,
        )

    def get_config(self) -> dict:
        config = super().get_config()
        # Adam's `amsgrad` is not an argument here (it is refused).
        config.pop("amsgrad", None)
        return config

    def _step(self, m, v, gradient, alpha):
        return adam_moments_step(
            m, v, gradient, alpha, self.beta_1, self.beta_2, self.epsilon
        )

    def update_step(
        self, gradient: Any, variable: Any, learning_rate: Any
    ) -> None:
        dtype = variable.dtype
        t = ops.cast(self.iterations + 1, dtype)
        b1 = ops.power(ops.cast(self.beta_1, dtype), t)
        b2 = ops.power(ops.cast(self.beta_2, dtype), t)
        alpha = ops.cast(learning_rate, dtype) * ops.sqrt(1 - b2) / (1 - b1)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        sparse = _indexed_slices(gradient)
        if sparse is not None:
            rows, g = sparse
            g = ops.cast(g, dtype)
            old = [ops.take(w, rows, axis=0) for w in (m, v, variable)]
            new_m, new_v, delta = self._step(old[0], old[1], g, alpha)
            _scatter_rows(self, m, rows, new_m)
            _scatter_rows(self, v, rows, new_v)
            _scatter_rows(self, variable, rows, old[2] - delta)
            return
        gradient = ops.cast(gradient, dtype)
        touched = _touched_rows(gradient)
        old_m, old_v = ops.convert_to_tensor(m), ops.convert_to_tensor(v)
        new_m, new_v, delta = self._step(old_m, old_v, gradient, alpha)
        self.assign(m, ops.where(touched, new_m, old_m))
        self.assign(v, ops.where(touched, new_v, old_v))
        self.assign_sub(variable, ops.where(touched, delta, 0))


@keras.saving.register_keras_serializable(package="keras_efficient")
class LazySGD(keras.optimizers.SGD):
    """SGD (with optional momentum) that updates only the touched rows.

    Touched rows (first-axis slices whose gradient is not all zeros) follow
    Keras' `SGD`: `u = momentum * u - lr * g; w += u` (plain `w -= lr * g`
    without momentum; `nesterov` as in Keras); the value and the momentum
    of the other rows are left untouched, so a row's velocity does not
    carry it on while it is not read. Cost as for `LazyAdam`.

    Args:
        learning_rate, momentum, nesterov: as in `keras.optimizers.SGD`.
        **kwargs: base optimizer arguments.

    Example:

    ```python
    from keras_efficient.optimizers import LazySGD

    optimizer = LazySGD(0.1, momentum=0.9)
    ```
    """

    def update_step(
        self, gradient: Any, variable: Any, learning_rate: Any
    ) -> None:
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        momentum = ops.cast(self.momentum, dtype)
        sparse = _indexed_slices(gradient)
        if sparse is not None:
            rows, g = sparse
            g = ops.cast(g, dtype)
            w = ops.take(variable, rows, axis=0)
            if not self.momentum:
                _scatter_rows(self, variable, rows, w - lr * g)
                return
            u_var = self.momentums[self._get_variable_index(variable)]
            u, step = sgd_momentum_step(
                ops.take(u_var, rows, axis=0), g, lr, momentum, self.nesterov
            )
            _scatter_rows(self, u_var, rows, u)
            _scatter_rows(self, variable, rows, w + step)
            return
        gradient = ops.cast(gradient, dtype)
        if not self.momentum:
            # Rows with a zero gradient do not move: already lazy.
            self.assign_sub(variable, lr * gradient)
            return
        touched = _touched_rows(gradient)
        u_var = self.momentums[self._get_variable_index(variable)]
        old_u = ops.convert_to_tensor(u_var)
        u, step = sgd_momentum_step(
            old_u, gradient, lr, momentum, self.nesterov
        )
        self.assign(u_var, ops.where(touched, u, old_u))
        self.assign_add(variable, ops.where(touched, step, 0))
