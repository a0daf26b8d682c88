"""Locality-sensitive hashing of vectors into bucket ids."""

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_efficient._validation import check_choice
from keras_efficient._validation import check_int
from keras_efficient._validation import check_number
from keras_efficient._validation import check_positive_int
from keras_efficient.layers._shapes import known_width

HASH_KINDS = ("hyperplane", "euclidean")
MAX_BITS = 30


def check_num_bits(value: Any, name: str = "num_bits") -> int:
    """Hash bits per table: bucket ids are int32, so at most `MAX_BITS`."""
    return check_int(name, value, min_value=1, max_value=MAX_BITS)


def bits_for(num_buckets: int) -> int:
    """Smallest number of bits `m` with `2**m >= num_buckets` (at least 1)."""
    return max(1, int(math.ceil(math.log2(num_buckets))))


@keras.saving.register_keras_serializable(package="keras_efficient")
class LSHHash(keras.layers.Layer):
    """Locality-sensitive hash of vectors into `num_tables` bucket ids.

    Each of the `num_tables` (L) independent hash tables draws `num_bits`
    (m) random projections once, from `seed`, and keeps them frozen as
    non-trainable weights, so they are saved with the model. Vectors that
    are close get the same bucket id with high probability, which lets a
    network route each token to a table entry or an expert that "owns" its
    region of input space ("A theoretical view on sparsely activated
    networks", Baykal et al., NeurIPS 2022).

    Two families:

    - `"hyperplane"` (SimHash, angular distance): bucket id is the sign
      pattern of the m projections `x . w_j`, read as an m-bit integer in
      `[0, 2**m)`.
    - `"euclidean"` (p-stable LSH, Euclidean distance): each projection is
      quantised, `h_j = floor((x . a_j + b_j) / bucket_width)` with
      `a_j ~ N(0, I)` and `b_j ~ U[0, bucket_width)`, and the m integers are
      combined by a random multiply-add hash `sum_j c_j h_j mod 2**m`
      (computed in wrapping int32 arithmetic, which is exact modulo `2**m`).

    Hashing is computed in float32 whatever the dtype policy (bucket ids do
    not change under mixed precision) and has no gradient.

    Args:
        num_tables: number of independent hash tables L, `>= 1`.
        num_bits: number of projections per table m, in `[1, 30]`; ids lie
            in `[0, 2**m)`.
        kind: `"hyperplane"` or `"euclidean"`.
        bucket_width: quantisation width of the `"euclidean"` family, `> 0`.
        seed: integer seed of the projections (`None`: unseeded).
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor of shape `(..., D)`.

    Returns:
        int32 tensor of shape `(..., num_tables)` of bucket ids.

    Example:

    ```python
    import numpy as np
    import keras_efficient as ke

    lsh = ke.layers.LSHHash(num_tables=4, num_bits=8, seed=0)
    ids = lsh(np.random.normal(size=(32, 16)).astype("float32"))
    ids.shape  # (32, 4), values in [0, 256)
    ```
    """

    def __init__(
        self,
        num_tables: int = 1,
        num_bits: int | None = 8,
        kind: str = "hyperplane",
        bucket_width: float = 1.0,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.num_tables = check_positive_int("num_tables", num_tables)
        self.num_bits = check_num_bits(num_bits)
        self.kind = check_choice("kind", kind, HASH_KINDS)
        self.bucket_width = check_number(
            "bucket_width", bucket_width, min_value=0, min_inclusive=False
        )
        self.seed = None if seed is None else check_int("seed", seed)
        self.num_buckets = 2**self.num_bits

    def build(self, input_shape: tuple) -> None:
        dim = known_width(input_shape, "LSHHash")
        # Later calls with another width fail with a clear Keras message.
        self.input_spec = keras.layers.InputSpec(axes={-1: dim})
        total = self.num_tables * self.num_bits
        seed = self.seed
        self.projections = self.add_weight(
            name="projections",
            shape=(dim, total),
            initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=seed),
            trainable=False,
            dtype="float32",
        )
        if self.kind == "euclidean":
            self.offsets = self.add_weight(
                name="offsets",
                shape=(total,),
                initializer=keras.initializers.RandomUniform(
                    0.0,
                    self.bucket_width,
                    seed=None if seed is None else seed + 1,
                ),
                trainable=False,
                dtype="float32",
            )
            rng = np.random.default_rng(None if seed is None else seed + 2)
            # Random odd multipliers of the combining hash.
            multipliers = rng.integers(
                0, 2**30, size=(self.num_tables, self.num_bits)
            )
            multipliers = (2 * multipliers + 1).astype("int32")
            self.multipliers = self.add_weight(
                name="multipliers",
                shape=(self.num_tables, self.num_bits),
                initializer=keras.initializers.Constant(multipliers),
                trainable=False,
                dtype="int32",
            )
        self.built = True

    def call(self, inputs: Any) -> Any:
        x = ops.stop_gradient(ops.cast(inputs, "float32"))
        projected = ops.matmul(x, ops.cast(self.projections, "float32"))
        shape = ops.shape(projected)[:-1] + (self.num_tables, self.num_bits)
        if self.kind == "hyperplane":
            bits = ops.cast(projected > 0, "int32")
            bits = ops.reshape(bits, shape)
            powers = ops.convert_to_tensor(
                (2 ** np.arange(self.num_bits)).astype("int32")
            )
            return ops.cast(ops.sum(bits * powers, axis=-1), "int32")
        projected = projected + ops.cast(self.offsets, "float32")
        codes = ops.cast(ops.floor(projected / self.bucket_width), "int32")
        codes = ops.reshape(codes, shape)
        mixed = ops.sum(codes * ops.cast(self.multipliers, "int32"), axis=-1)
        mixed = ops.bitwise_and(mixed, self.num_buckets - 1)
        return ops.cast(mixed, "int32")

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape[:-1]) + (self.num_tables,)

    def compute_output_spec(self, inputs: Any) -> keras.KerasTensor:
        return keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype="int32"
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_tables": self.num_tables,
                "num_bits": self.num_bits,
                "kind": self.kind,
                "bucket_width": self.bucket_width,
                "seed": self.seed,
            }
        )
        return config
