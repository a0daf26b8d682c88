"""Static shape checks shared by the layers' `build` and `call` (private)."""

from typing import Any


def known_width(
    input_shape: tuple, layer_name: str, tensor_name: str = "inputs"
) -> int:
    """The static last axis of `input_shape`, or a clear `ValueError`.

    Layers that size weights by their input width cannot be built on an
    unknown one; the message names the layer and the shape it received.
    """
    input_shape = tuple(input_shape)
    width = input_shape[-1] if input_shape else None
    if width is None:
        raise ValueError(
            f"`{layer_name}` needs a known last axis (width) of "
            f"`{tensor_name}`. Received: {tensor_name}.shape={input_shape}"
        )
    return int(width)


def check_blocks_shape(
    input_shape: tuple, num_blocks: int, layer_name: str
) -> None:
    """A widened AltUp shape `(batch, ..., num_blocks, d)` with a known d."""
    if len(input_shape) < 3:
        raise ValueError(
            f"{layer_name} expects a widened input of shape "
            f"(batch, ..., num_blocks, d) (rank >= 3). Received: "
            f"input_shape={tuple(input_shape)}"
        )
    if input_shape[-2] is not None and input_shape[-2] != num_blocks:
        raise ValueError(
            f"{layer_name}: the block axis (second to last) of the input must "
            f"have size num_blocks={num_blocks}. Received: "
            f"input_shape={tuple(input_shape)}"
        )
    known_width(input_shape, layer_name)


def check_call_width(
    layer: Any, inputs: Any, built_width: int | None, tensor_name="inputs"
) -> None:
    """A built layer is called on the width it was built for.

    Otherwise the first mismatch would surface inside an internal sublayer
    (`hash`, `dense_3`, a `dot_general`), under a name the user never gave.
    Static shapes only.
    """
    shape = tuple(inputs.shape)
    width = shape[-1] if shape else None
    if built_width is None or width is None or int(width) == built_width:
        return
    raise ValueError(
        f"Layer `{layer.name}` ({type(layer).__name__}) was built for "
        f"`{tensor_name}` of width {built_width} (last axis) and its weights "
        f"keep that size; make a new layer for width {width}. Received: "
        f"{tensor_name}.shape={shape}"
    )
