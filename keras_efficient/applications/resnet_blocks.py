"""The ResNet blocks: stem, shortcut, basic and bottleneck branches.

Functional-API helpers (they take and return Keras tensors) used by
`keras_efficient.applications.resnet`. A block's residual add is a plain
`Add` or, with `laurel=variant`, a `LaurelResidual` (LAuReL, Menghani et
al., ICML 2025), which equals the plain add at initialization.
"""

from typing import Any

import keras

from keras_efficient.layers.laurel import LaurelResidual

STEMS = ("cifar", "imagenet")
BLOCKS = ("basic", "bottleneck")


def conv(
    filters: int, kernel_size: int, strides: int, name: str
) -> keras.layers.Conv2D:
    """A bias-free, He-initialised, same-padded `Conv2D`."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def conv_bn(
    x: Any,
    filters: int,
    kernel_size: int,
    strides: int,
    name: str,
    suffix: str,
    relu: bool = True,
) -> keras.KerasTensor:
    """`conv -> batch norm (-> relu)`, layers named `{name}_conv{suffix}`..."""
    x = conv(filters, kernel_size, strides, f"{name}_conv{suffix}")(x)
    x = keras.layers.BatchNormalization(
        axis=-1, momentum=0.9, epsilon=1e-5, name=f"{name}_bn{suffix}"
    )(x)
    if relu:
        x = keras.layers.Activation("relu", name=f"{name}_relu{suffix}")(x)
    return x


def stem(
    inputs: keras.KerasTensor, kind: str, filters: int
) -> keras.KerasTensor:
    """`"cifar"`: one 3x3 convolution; `"imagenet"`: 7x7 / 2 and a max pool."""
    if kind == "imagenet":
        x = conv_bn(inputs, filters, 7, 2, "stem", "")
        return keras.layers.MaxPooling2D(
            3, 2, padding="same", name="stem_pool"
        )(x)
    return conv_bn(inputs, filters, 3, 1, "stem", "")


def shortcut(
    x: Any, out_filters: int, strides: int, name: str
) -> keras.KerasTensor:
    """The identity, or a 1x1 projection where the block changes shape."""
    if strides == 1 and x.shape[-1] == out_filters:
        return x
    return conv_bn(x, out_filters, 1, strides, f"{name}_proj", "", False)


def branch(
    x: Any,
    filters: int,
    out_filters: int,
    strides: int,
    bottleneck: bool,
    name: str,
) -> keras.KerasTensor:
    """The residual branch f(x): two 3x3, or 1x1 -> 3x3 -> 1x1 (4x)."""
    if bottleneck:
        y = conv_bn(x, filters, 1, 1, name, 1)
        y = conv_bn(y, filters, 3, strides, name, 2)
        return conv_bn(y, out_filters, 1, 1, name, 3, relu=False)
    y = conv_bn(x, filters, 3, strides, name, 1)
    return conv_bn(y, filters, 3, 1, name, 2, relu=False)


def residual_add(
    x: Any,
    fx: Any,
    laurel: str | None,
    laurel_rank: int,
    history: list,
    name: str,
) -> keras.KerasTensor:
    """`x + fx`, or its LAuReL form; PA variants mix up to two earlier
    block inputs of `x`'s shape from `history` (most recent first)."""
    if laurel is None:
        return keras.layers.Add(name=f"{name}_add")([x, fx])
    rank = min(laurel_rank, fx.shape[-1])
    if "pa" not in laurel.split("+"):
        return LaurelResidual(laurel, rank=rank, name=f"{name}_laurel")(x, fx)
    previous = [p for p in history if p.shape[1:] == x.shape[1:]][:2]
    residual = LaurelResidual(
        laurel,
        rank=rank,
        num_activations=len(previous) + 1,
        name=f"{name}_laurel",
    )
    return residual(x, fx, previous=previous or None)


def residual_block(
    x: Any,
    filters: int,
    strides: int,
    bottleneck: bool,
    laurel: str | None,
    laurel_rank: int,
    history: list,
    name: str,
) -> keras.KerasTensor:
    """One basic or bottleneck block; returns the output tensor.

    `history` holds the inputs of the previous blocks that have this
    block's input shape, most recent first (PA variants only); the block
    updates it.
    """
    out_filters = filters * 4 if bottleneck else filters
    skip = shortcut(x, out_filters, strides, name)
    fx = branch(x, filters, out_filters, strides, bottleneck, name)
    out = residual_add(skip, fx, laurel, laurel_rank, history, name)
    out = keras.layers.Activation("relu", name=f"{name}_out")(out)
    if x.shape[1:] == out.shape[1:]:
        history.insert(0, x)
    else:
        # The shape changes at this block: the history restarts (PA mixes
        # only tensors of one shape, and we add no projections for it).
        history.clear()
    return out
