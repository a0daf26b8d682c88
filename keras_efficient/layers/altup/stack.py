"""The AltUp stack: its schedule and `AltUpStack`.

`active_blocks` assigns each layer of a stack the block it computes on
(AltUp, Baykal et al., NeurIPS 2023); `AltUpStack` wraps a list of layers in
`AltUp` on that schedule.
"""

from typing import Any

import keras

from keras_efficient._validation import check_choice
from keras_efficient._validation import check_positive_int
from keras_efficient.layers._shapes import check_blocks_shape
from keras_efficient.layers.altup.layer import AltUp

SCHEDULES = ("alternating", "same")


def active_blocks(
    num_layers: int, num_blocks: int, schedule: str = "alternating"
) -> list[int]:
    """The active block of each layer of an AltUp stack.

    Args:
        num_layers: number of layers.
        num_blocks: number of blocks K.
        schedule: `"alternating"` (layer l computes on block `l mod K`) or
            `"same"` (always block 0).

    Returns:
        A list of `num_layers` integers in `[0, num_blocks)`.

    Example:

    >>> from keras_efficient.layers.altup import active_blocks
    >>> active_blocks(5, 2)
    [0, 1, 0, 1, 0]
    """
    check_positive_int("num_blocks", num_blocks)
    check_choice("schedule", schedule, SCHEDULES)
    if schedule == "same":
        return [0] * num_layers
    return [layer % num_blocks for layer in range(num_layers)]


@keras.saving.register_keras_serializable(package="keras_efficient")
class AltUpStack(keras.layers.Layer):
    """A stack of layers, each wrapped in `AltUp`, with an active schedule.

    Layer l computes on block `l mod K` (`schedule="alternating"`, the
    paper's default) or always on block 0 (`schedule="same"`). Input and
    output are widened representations `(batch, ..., K, d)`; put an
    `AltUpInput` or `AltUpEmbedding` before and an `AltUpReadout` after.

    Args:
        layers: list of `keras.layers.Layer`, each mapping width d to d.
        num_blocks: number of blocks K, `>= 1`.
        schedule: `"alternating"` or `"same"`.
        coefficients: `"static"` or `"routed"` (see `AltUp`).
        coefficient_clip: `None` or a number `> 0` (see `AltUp`).
        routing: `"gemma3n"` or `"active_input"` (see `AltUp`).
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tensor of shape `(batch, ..., K, d)`.
        training: passed to the wrapped layers.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_efficient.layers import AltUpStack
    >>> blocks = [keras.layers.Dense(16, activation="relu") for _ in range(3)]
    >>> stack = AltUpStack(blocks, num_blocks=2)
    >>> stack(np.ones((4, 10, 2, 16), "float32")).shape
    (4, 10, 2, 16)
    """

    def __init__(
        self,
        layers: list[keras.layers.Layer],
        num_blocks: int = 2,
        schedule: str = "alternating",
        coefficients: str = "static",
        coefficient_clip: float | None = None,
        routing: str = "gemma3n",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if isinstance(layers, keras.layers.Layer) or not isinstance(
            layers, (list, tuple)
        ):
            raise ValueError(
                "`layers` must be a list of `keras.layers.Layer`. "
                f"Received: layers={layers!r}"
            )
        if not layers:
            raise ValueError("`layers` must not be empty. Received: layers=[]")
        if not all(isinstance(layer, keras.layers.Layer) for layer in layers):
            raise TypeError(
                "`layers` must be a list of `keras.layers.Layer`. "
                f"Received: layers={layers!r}"
            )
        schedule_blocks = active_blocks(len(layers), num_blocks, schedule)
        self.layers = list(layers)
        self.num_blocks = int(num_blocks)
        self.schedule = schedule
        self.coefficients = coefficients
        self.coefficient_clip = coefficient_clip
        self.routing = routing
        self.altup_layers = [
            AltUp(
                layer,
                num_blocks=num_blocks,
                active_block=active,
                coefficients=coefficients,
                coefficient_clip=coefficient_clip,
                routing=routing,
                dtype=self.dtype_policy,
                name=f"altup_{index}",
            )
            for index, (layer, active) in enumerate(
                zip(self.layers, schedule_blocks)
            )
        ]

    def build(self, input_shape: tuple) -> None:
        check_blocks_shape(tuple(input_shape), self.num_blocks, "AltUpStack")
        for layer in self.altup_layers:
            layer.build(input_shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = inputs
        for layer in self.altup_layers:
            x = layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "layers": [
                    keras.saving.serialize_keras_object(layer)
                    for layer in self.layers
                ],
                "num_blocks": self.num_blocks,
                "schedule": self.schedule,
                "coefficients": self.coefficients,
                "coefficient_clip": self.coefficient_clip,
                "routing": self.routing,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> "AltUpStack":
        config = dict(config)
        config.setdefault("routing", "active_input")  # saved before 0.2
        config["layers"] = [
            keras.saving.deserialize_keras_object(layer)
            for layer in config["layers"]
        ]
        return cls(**config)
