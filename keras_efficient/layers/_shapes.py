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
