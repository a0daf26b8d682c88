"""Static shape checks shared by the layers' `build` (private)."""


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
