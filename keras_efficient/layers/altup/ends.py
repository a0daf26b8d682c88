"""The ends of an AltUp stack: widen to `(batch, ..., K, d)`, read out.

`AltUpInput` and `AltUpEmbedding` make the widened representation of AltUp
(Baykal et al., NeurIPS 2023), by splitting a width-K d vector or by
replicating a width-d one (Recycled-AltUp); `AltUpReadout` reduces the K
blocks back to width d. The stack between them is `AltUpStack`.
"""

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_efficient._data_checks import check_ids_in_range
from keras_efficient._data_checks import check_integer_ids
from keras_efficient._validation import check_bool
from keras_efficient._validation import check_choice
from keras_efficient._validation import check_positive_int
from keras_efficient.layers._shapes import check_blocks_shape
from keras_efficient.layers._shapes import check_call_width
from keras_efficient.layers._shapes import known_width

INPUT_MODES = ("split", "replicate")
READOUT_MODES = ("sum", "mean", "projection")


def _widen(x, num_blocks, mode):
    if mode == "replicate":
        # Copies, not `ops.repeat`: on torch that is a view with a zero
        # stride over the blocks, and the backward of the first block's
        # predict then runs torch's strided batched matmul, not BLAS
        # (8.5 ms of a 56 ms train step at d = 128).
        x = ops.expand_dims(x, axis=-2)
        return ops.concatenate([x] * num_blocks, axis=-2)
    shape = ops.shape(x)
    width = shape[-1] // num_blocks
    return ops.reshape(x, tuple(shape[:-1]) + (num_blocks, width))


class _BlockModeLayer(keras.layers.Layer):
    """A layer set by a number of blocks K and a `mode` from `MODES`."""

    MODES = ()

    def __init__(self, num_blocks, mode, **kwargs):
        super().__init__(**kwargs)
        self.num_blocks = check_positive_int("num_blocks", num_blocks)
        self.mode = check_choice("mode", mode, self.MODES)

    def get_config(self):
        config = super().get_config()
        config.update({"num_blocks": self.num_blocks, "mode": self.mode})
        return config


@keras.saving.register_keras_serializable(package="keras_efficient")
class AltUpInput(_BlockModeLayer):
    """Makes the widened representation `(batch, ..., K, d)` from vectors.

    `mode="split"` cuts a vector of width K d (e.g. a widened embedding)
    into K blocks of width d. `mode="replicate"` is Recycled-AltUp: a vector
    of width d is copied into all K blocks, so a width-d embedding serves a
    K-times wider representation with no extra parameters.

    Args:
        num_blocks: number of blocks K, `>= 1`.
        mode: `"split"` or `"replicate"`.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tensor `(batch, ..., D)`; D must be divisible by K for
            `"split"`.

    Example:

    >>> import numpy as np
    >>> from keras_efficient.layers import AltUpInput
    >>> AltUpInput(2, mode="replicate")(np.ones((4, 10, 16))).shape
    (4, 10, 2, 16)
    >>> AltUpInput(2, mode="split")(np.ones((4, 10, 16))).shape
    (4, 10, 2, 8)
    """

    MODES = INPUT_MODES

    def __init__(self, num_blocks: int = 2, mode: str = "split", **kwargs: Any):
        super().__init__(num_blocks, mode, **kwargs)

    def build(self, input_shape: tuple) -> None:
        width = known_width(input_shape, "AltUpInput")
        if self.mode == "split" and width % self.num_blocks:
            raise ValueError(
                "AltUpInput(mode='split'): the input width must be divisible "
                f"by num_blocks={self.num_blocks}. Received: input width "
                f"{width} (input_shape={tuple(input_shape)})"
            )

    def call(self, inputs: Any) -> Any:
        return _widen(inputs, self.num_blocks, self.mode)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        input_shape = tuple(input_shape)
        width = input_shape[-1]
        if self.mode == "split":
            width = width // self.num_blocks
        return input_shape[:-1] + (self.num_blocks, width)


@keras.saving.register_keras_serializable(package="keras_efficient")
class AltUpEmbedding(keras.layers.Layer):
    """Token embedding into the widened representation `(batch, ..., K, d)`.

    With `recycled=False` the table has width K d and each row is split into
    K blocks (K times the embedding parameters). With `recycled=True`
    (Recycled-AltUp) the table has width d and each row is replicated into
    the K blocks: no extra embedding parameters.

    Args:
        input_dim: vocabulary size, `>= 1`.
        output_dim: block width d, `>= 1`.
        num_blocks: number of blocks K, `>= 1`.
        recycled: whether to replicate a width-d embedding.
        embeddings_initializer: initializer of the table.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: integer token ids `(batch, ...)` in `[0, input_dim)`
            (float ids raise a `TypeError`; ids out of range a
            `ValueError`, also inside a compiled `fit`: see
            "What is checked at run time" in the docs).

    Example:

    >>> import numpy as np
    >>> from keras_efficient.layers import AltUpEmbedding
    >>> embedding = AltUpEmbedding(256, 16, num_blocks=2, recycled=True)
    >>> embedding(np.zeros((4, 10), "int32")).shape
    (4, 10, 2, 16)
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int | None,
        num_blocks: int = 2,
        recycled: bool = False,
        embeddings_initializer: str
        | keras.initializers.Initializer
        | None = "uniform",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        check_positive_int("input_dim", input_dim)
        check_positive_int("output_dim", output_dim)
        check_positive_int("num_blocks", num_blocks)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.num_blocks = int(num_blocks)
        self.recycled = check_bool("recycled", recycled)
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer
        )

    def build(self, input_shape: tuple) -> None:
        width = self.output_dim
        if not self.recycled:
            width *= self.num_blocks
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, width),
            initializer=self.embeddings_initializer,
        )

    def call(self, inputs: Any) -> Any:
        # Float ids would be truncated silently; ids outside the table
        # would read NaN rows (JAX) or clipped ones.
        check_integer_ids(inputs, "inputs")
        inputs = check_ids_in_range(inputs, self.input_dim, "inputs")
        vectors = ops.take(self.embeddings, inputs, axis=0)
        mode = "replicate" if self.recycled else "split"
        return _widen(vectors, self.num_blocks, mode)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape) + (self.num_blocks, self.output_dim)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "input_dim": self.input_dim,
                "output_dim": self.output_dim,
                "num_blocks": self.num_blocks,
                "recycled": self.recycled,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_efficient")
class AltUpReadout(_BlockModeLayer):
    """Reduces the widened representation `(batch, ..., K, d)` to width d.

    `mode="sum"` or `"mean"` adds or averages the K blocks (the natural
    readout of Recycled-AltUp); `mode="projection"` learns a map from the
    concatenated K d features to d (initialised to the mean of the blocks,
    so the three modes agree at init up to a factor K for `"sum"`).

    Args:
        num_blocks: number of blocks K, `>= 1`.
        mode: `"sum"`, `"mean"` or `"projection"`.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tensor `(batch, ..., K, d)`.

    Example:

    >>> import numpy as np
    >>> from keras_efficient.layers import AltUpReadout
    >>> AltUpReadout(2, mode="mean")(np.ones((4, 10, 2, 16))).shape
    (4, 10, 16)
    """

    MODES = READOUT_MODES

    def __init__(self, num_blocks: int = 2, mode: str = "mean", **kwargs: Any):
        super().__init__(num_blocks, mode, **kwargs)

    def build(self, input_shape: tuple) -> None:
        input_shape = tuple(input_shape)
        check_blocks_shape(input_shape, self.num_blocks, "AltUpReadout")
        self._built_width = int(input_shape[-1])
        if self.mode == "projection":
            k, d = self.num_blocks, int(input_shape[-1])
            initial = np.tile(np.eye(d, dtype="float32"), (k, 1)) / k

            def initializer(shape, dtype=None):
                return ops.cast(initial.reshape(shape), dtype or "float32")

            self.kernel = self.add_weight(
                name="kernel", shape=(k * d, d), initializer=initializer
            )

    def call(self, inputs: Any) -> Any:
        check_call_width(self, inputs, getattr(self, "_built_width", None))
        if self.mode == "sum":
            return ops.sum(inputs, axis=-2)
        if self.mode == "mean":
            return ops.mean(inputs, axis=-2)
        shape = ops.shape(inputs)
        flat = ops.reshape(inputs, tuple(shape[:-2]) + (-1,))
        return ops.matmul(flat, self.kernel)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        input_shape = tuple(input_shape)
        return input_shape[:-2] + (input_shape[-1],)

    def get_prunable_weights(self) -> list:
        """The kernels `MagnitudePruning` may prune (pruning protocol).

        The `(K * d, d)` kernel of `mode="projection"`; none otherwise.
        """
        kernel = getattr(self, "kernel", None)
        return [] if kernel is None else [kernel]
