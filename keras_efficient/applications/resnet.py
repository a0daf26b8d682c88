"""ResNet family with optional LAuReL residual connections.

CIFAR-style ResNet20 / ResNet56 (He et al., 2016, section 4.2) and
ImageNet-style ResNet18 / ResNet50, built with the functional API. With
`laurel=...` every block's residual add `shortcut + branch` becomes a
`keras_efficient.layers.LaurelResidual(shortcut, branch)` (LAuReL, Menghani
et al., ICML 2025), which is the identity `shortcut + branch` at
initialization.
"""

import keras

from keras_efficient.layers.laurel import LaurelResidual

LAUREL_VARIANTS = ("rw", "lr", "pa", "rw+lr", "rw+pa", "rw+lr+pa")
POOLINGS = (None, "avg", "max")
STEMS = ("cifar", "imagenet")
BLOCKS = ("basic", "bottleneck")


def _check_arguments(
    laurel, laurel_rank, weights, pooling, block, stem, width_multiplier
):
    if weights is not None:
        raise ValueError(
            "keras_efficient ResNets ship no pretrained weights and never "
            "download anything: `weights` must be None. "
            f"Received: weights={weights!r}"
        )
    if laurel is not None and laurel not in LAUREL_VARIANTS:
        raise ValueError(
            f"`laurel` must be None or one of {LAUREL_VARIANTS}. "
            f"Received: laurel={laurel!r}"
        )
    if (
        isinstance(laurel_rank, bool)
        or not isinstance(laurel_rank, int)
        or laurel_rank < 1
    ):
        raise ValueError(
            "`laurel_rank` must be an integer >= 1. "
            f"Received: laurel_rank={laurel_rank!r}"
        )
    if pooling not in POOLINGS:
        raise ValueError(
            f"`pooling` must be one of {POOLINGS}. "
            f"Received: pooling={pooling!r}"
        )
    if block not in BLOCKS:
        raise ValueError(
            f"`block` must be one of {BLOCKS}. Received: block={block!r}"
        )
    if stem not in STEMS:
        raise ValueError(
            f"`stem` must be one of {STEMS}. Received: stem={stem!r}"
        )
    if (
        isinstance(width_multiplier, bool)
        or not isinstance(width_multiplier, (int, float))
        or not width_multiplier > 0
    ):
        raise ValueError(
            "`width_multiplier` must be a number > 0. "
            f"Received: width_multiplier={width_multiplier!r}"
        )


def _conv(filters, kernel_size, strides, name):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def _bn(name):
    return keras.layers.BatchNormalization(
        axis=-1, momentum=0.9, epsilon=1e-5, name=name
    )


def _residual_block(
    x, filters, strides, bottleneck, laurel, laurel_rank, history, name
):
    """One basic or bottleneck block; returns the output tensor.

    `history` holds the inputs of the previous blocks that have this block's
    input shape, most recent first (used by PA variants only).
    """
    out_filters = filters * 4 if bottleneck else filters
    if strides != 1 or x.shape[-1] != out_filters:
        shortcut = _conv(out_filters, 1, strides, f"{name}_proj_conv")(x)
        shortcut = _bn(f"{name}_proj_bn")(shortcut)
    else:
        shortcut = x
    if bottleneck:
        y = _conv(filters, 1, 1, f"{name}_conv1")(x)
        y = _bn(f"{name}_bn1")(y)
        y = keras.layers.Activation("relu", name=f"{name}_relu1")(y)
        y = _conv(filters, 3, strides, f"{name}_conv2")(y)
        y = _bn(f"{name}_bn2")(y)
        y = keras.layers.Activation("relu", name=f"{name}_relu2")(y)
        y = _conv(out_filters, 1, 1, f"{name}_conv3")(y)
        y = _bn(f"{name}_bn3")(y)
    else:
        y = _conv(filters, 3, strides, f"{name}_conv1")(x)
        y = _bn(f"{name}_bn1")(y)
        y = keras.layers.Activation("relu", name=f"{name}_relu1")(y)
        y = _conv(filters, 3, 1, f"{name}_conv2")(y)
        y = _bn(f"{name}_bn2")(y)

    if laurel is None:
        out = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    else:
        rank = min(laurel_rank, out_filters)
        if "pa" in laurel.split("+"):
            previous = [p for p in history if p.shape[1:] == shortcut.shape[1:]]
            previous = previous[:2]
            residual = LaurelResidual(
                variant=laurel,
                rank=rank,
                num_activations=len(previous) + 1,
                name=f"{name}_laurel",
            )
            out = residual(shortcut, y, previous=previous or None)
        else:
            residual = LaurelResidual(
                variant=laurel, rank=rank, name=f"{name}_laurel"
            )
            out = residual(shortcut, y)
    out = keras.layers.Activation("relu", name=f"{name}_out")(out)
    if x.shape[1:] == out.shape[1:]:
        history.insert(0, x)
    else:
        # The shape changes at this block: the history restarts (PA mixes
        # only tensors of one shape, and we add no projections for it).
        history.clear()
    return out


def ResNet(
    stack_sizes,
    filters,
    block="basic",
    stem="cifar",
    laurel=None,
    laurel_rank=16,
    width_multiplier=1.0,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=10,
    classifier_activation="softmax",
    name="resnet",
):
    """Builds a ResNet, optionally with LAuReL residual connections.

    The generic builder behind `ResNet20`, `ResNet56`, `ResNet18` and
    `ResNet50`. Each stage is a stack of basic (two 3x3 convolutions) or
    bottleneck (1x1, 3x3, 1x1 with 4x expansion) blocks; the first stage
    keeps the resolution and every later one halves it. A block whose shape
    changes uses a 1x1 projection shortcut. With `laurel` set, the residual
    add `shortcut + branch` of every block is replaced by
    `LaurelResidual(variant=laurel)(shortcut, branch)` (LAuReL, Menghani et
    al., ICML 2025), which equals the plain add at initialization.

    For the PA variants (`"pa"`, `"rw+pa"`, `"rw+lr+pa"`) each block also
    gets the inputs of up to two previous blocks with its own input shape
    (most recent first). The history restarts wherever the shape changes
    (the first block of each stage): PA mixes tensors of one shape and we
    add no projections for it. Each PA residual is built with as many
    activations as it receives, so no weight goes unused.

    Only `channels_last` is supported. The LR rank is
    `min(laurel_rank, channels)` per block.

    Args:
        stack_sizes: list of the number of blocks per stage.
        filters: list of the base number of filters per stage (bottleneck
            blocks output 4x as many).
        block: `"basic"` or `"bottleneck"`.
        stem: `"cifar"` (one 3x3 convolution, no downsampling; inputs of at
            least `2 ** (len(stack_sizes) - 1)` pixels per side, e.g. 8x8
            digits) or `"imagenet"` (7x7 stride-2 convolution and 3x3
            stride-2 max pooling; inputs of at least 32x32).
        laurel: `None` (plain residual adds) or a LAuReL variant: `"rw"`,
            `"lr"`, `"pa"`, `"rw+lr"`, `"rw+pa"`, `"rw+lr+pa"`.
        laurel_rank: rank of the LAuReL low-rank maps.
        width_multiplier: scales every layer's number of filters (the stem
            too), for small, fast nets.
        include_top: whether to end with global average pooling and a
            `Dense(classes)` classifier.
        weights: must be `None`: there are no pretrained weights.
        input_tensor: optional Keras tensor to use as the model input.
        input_shape: input shape `(height, width, channels)`; default
            `(32, 32, 3)` for the CIFAR stem, `(224, 224, 3)` for ImageNet.
        pooling: with `include_top=False`: `None` (4D feature map), `"avg"`
            or `"max"` (global pooling to a vector).
        classes: number of classes of the classifier.
        classifier_activation: activation of the classifier (`None` for
            logits).
        name: model name.

    Returns:
        A `keras.Model`.

    Example:

    ```python
    model = keras_efficient.applications.ResNet(
        [2, 2], [8, 16], input_shape=(8, 8, 1), laurel="rw+lr", laurel_rank=4
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    ```
    """
    _check_arguments(
        laurel, laurel_rank, weights, pooling, block, stem, width_multiplier
    )
    if (
        not isinstance(stack_sizes, (list, tuple))
        or not stack_sizes
        or any(not isinstance(n, int) or n < 1 for n in stack_sizes)
    ):
        raise ValueError(
            "`stack_sizes` must be a non-empty list of integers >= 1. "
            f"Received: stack_sizes={stack_sizes!r}"
        )
    if not isinstance(filters, (list, tuple)) or len(filters) != len(
        stack_sizes
    ):
        raise ValueError(
            "`filters` must be a list with one entry per stage "
            f"({len(stack_sizes)}). Received: filters={filters!r}"
        )
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "keras_efficient ResNets support only "
            "keras.config.image_data_format() == 'channels_last'. "
            f"Received: {keras.config.image_data_format()!r}"
        )

    def scaled(f):
        return max(1, int(round(f * width_multiplier)))

    if input_tensor is not None:
        inputs = input_tensor
        if not isinstance(input_tensor, keras.KerasTensor):
            inputs = keras.Input(tensor=input_tensor)
        shape = tuple(inputs.shape[1:])
    else:
        if input_shape is None:
            input_shape = (224, 224, 3) if stem == "imagenet" else (32, 32, 3)
        shape = tuple(input_shape)
        inputs = keras.Input(shape=shape)
    if len(shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels). "
            f"Received: input_shape={shape!r}"
        )
    min_size = 32 if stem == "imagenet" else 2 ** (len(stack_sizes) - 1)
    for size in shape[:2]:
        if size is not None and size < min_size:
            raise ValueError(
                f"`input_shape` must have height and width >= {min_size} "
                f"for stem={stem!r} with {len(stack_sizes)} stages. "
                f"Received: input_shape={shape!r}"
            )

    if stem == "imagenet":
        x = _conv(scaled(64), 7, 2, "stem_conv")(inputs)
        x = _bn("stem_bn")(x)
        x = keras.layers.Activation("relu", name="stem_relu")(x)
        x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    else:
        x = _conv(scaled(filters[0]), 3, 1, "stem_conv")(inputs)
        x = _bn("stem_bn")(x)
        x = keras.layers.Activation("relu", name="stem_relu")(x)

    history = []
    for stage, (num_blocks, f) in enumerate(zip(stack_sizes, filters)):
        for b in range(num_blocks):
            strides = 2 if stage > 0 and b == 0 else 1
            x = _residual_block(
                x,
                scaled(f),
                strides,
                block == "bottleneck",
                laurel,
                laurel_rank,
                history,
                name=f"stage{stage + 1}_block{b + 1}",
            )

    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(
            classes, activation=classifier_activation, name="predictions"
        )(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=name)


def _cifar_resnet(depth, **kwargs):
    n = (depth - 2) // 6
    return ResNet(
        [n, n, n], [16, 32, 64], block="basic", stem="cifar", **kwargs
    )


def ResNet20(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=10,
    classifier_activation="softmax",
    name="resnet20",
    laurel=None,
    laurel_rank=16,
    width_multiplier=1.0,
):
    """CIFAR-style ResNet20 (3 stages of 3 basic blocks, 16/32/64 filters).

    See `ResNet` for the arguments. Default input `(32, 32, 3)`; any input
    of at least 4x4 works (e.g. the 8x8 digits).

    Example:

    ```python
    model = keras_efficient.applications.ResNet20(
        input_shape=(8, 8, 1), laurel="rw+lr"
    )
    ```
    """
    return _cifar_resnet(
        20,
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
        laurel=laurel,
        laurel_rank=laurel_rank,
        width_multiplier=width_multiplier,
    )


def ResNet56(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=10,
    classifier_activation="softmax",
    name="resnet56",
    laurel=None,
    laurel_rank=16,
    width_multiplier=1.0,
):
    """CIFAR-style ResNet56 (3 stages of 9 basic blocks, 16/32/64 filters).

    See `ResNet` for the arguments.

    Example:

    ```python
    model = keras_efficient.applications.ResNet56(laurel="rw")
    ```
    """
    return _cifar_resnet(
        56,
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
        laurel=laurel,
        laurel_rank=laurel_rank,
        width_multiplier=width_multiplier,
    )


def ResNet18(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="resnet18",
    laurel=None,
    laurel_rank=16,
    width_multiplier=1.0,
):
    """ImageNet-style ResNet18 (basic blocks [2, 2, 2, 2], 64..512 filters).

    See `ResNet` for the arguments. Inputs must be at least 32x32.

    Example:

    ```python
    model = keras_efficient.applications.ResNet18(
        input_shape=(64, 64, 3), classes=10, laurel="rw+lr"
    )
    ```
    """
    return ResNet(
        [2, 2, 2, 2],
        [64, 128, 256, 512],
        block="basic",
        stem="imagenet",
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
        laurel=laurel,
        laurel_rank=laurel_rank,
        width_multiplier=width_multiplier,
    )


def ResNet50(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="resnet50",
    laurel=None,
    laurel_rank=16,
    width_multiplier=1.0,
):
    """ImageNet-style ResNet50 (bottleneck blocks [3, 4, 6, 3]).

    See `ResNet` for the arguments. Inputs must be at least 32x32.

    Example:

    ```python
    model = keras_efficient.applications.ResNet50(
        input_shape=(64, 64, 3), classes=10, laurel="rw"
    )
    ```
    """
    return ResNet(
        [3, 4, 6, 3],
        [64, 128, 256, 512],
        block="bottleneck",
        stem="imagenet",
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
        laurel=laurel,
        laurel_rank=laurel_rank,
        width_multiplier=width_multiplier,
    )
