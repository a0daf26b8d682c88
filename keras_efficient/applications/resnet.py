"""ResNet family with optional LAuReL residual connections.

CIFAR-style ResNet20 / ResNet56 (He et al., 2016, section 4.2) and
ImageNet-style ResNet18 / ResNet50, built with the functional API from the
blocks of `resnet_blocks`. With `laurel=...` every block's residual add
`shortcut + branch` becomes a
`keras_efficient.layers.LaurelResidual(shortcut, branch)` (LAuReL, Menghani
et al., ICML 2025), which is the identity `shortcut + branch` at
initialization. `laurel` takes exactly the variant spellings the layer
takes.
"""

from collections.abc import Callable
from collections.abc import Sequence

import keras

from keras_efficient import _backend
from keras_efficient._validation import ArgumentTypeError
from keras_efficient._validation import check_bool
from keras_efficient._validation import check_choice
from keras_efficient._validation import check_number
from keras_efficient._validation import check_positive_int
from keras_efficient._validation import fail
from keras_efficient._validation import is_integer
from keras_efficient.applications import resnet_blocks
from keras_efficient.applications.resnet_blocks import BLOCKS
from keras_efficient.applications.resnet_blocks import STEMS
from keras_efficient.layers.laurel_options import normalize_variant

POOLINGS = (None, "avg", "max")


def _check_arguments(
    stack_sizes, filters, block, stem, weights, pooling, width_multiplier
):
    if weights is not None:
        fail(
            "weights",
            "None (keras_efficient ResNets ship no pretrained weights and "
            "never download anything)",
            weights,
        )
    check_choice("pooling", pooling, POOLINGS)
    check_choice("block", block, BLOCKS)
    check_choice("stem", stem, STEMS)
    check_number(
        "width_multiplier", width_multiplier, min_value=0, min_inclusive=False
    )
    _check_stages(stack_sizes, filters)
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "keras_efficient ResNets support only "
            "keras.config.image_data_format() == 'channels_last'. "
            f"Received: {keras.config.image_data_format()!r}"
        )


def _check_stages(stack_sizes, filters):
    """One positive block count and one positive filter count per stage."""
    if not isinstance(stack_sizes, (list, tuple)) or not stack_sizes:
        fail("stack_sizes", "a non-empty list of integers >= 1", stack_sizes)
    for n in stack_sizes:
        check_positive_int("stack_sizes", n)
    if not isinstance(filters, (list, tuple)) or len(filters) != len(
        stack_sizes
    ):
        fail(
            "filters",
            f"a list with one entry per stage ({len(stack_sizes)})",
            filters,
        )
    for f in filters:
        check_positive_int("filters", f)


def _check_input_shape(input_shape):
    """`(height, width, channels)`: each an integer >= 1 or `None`."""
    what = "a tuple (height, width, channels) of integers >= 1 or None"
    if isinstance(input_shape, (str, bytes)) or not isinstance(
        input_shape, (list, tuple)
    ):
        fail("input_shape", what, input_shape, error=ArgumentTypeError)
    if len(input_shape) != 3 or not all(
        size is None or (is_integer(size) and size >= 1) for size in input_shape
    ):
        fail("input_shape", what, input_shape)
    return tuple(None if size is None else int(size) for size in input_shape)


def _inputs(input_tensor, input_shape, stem, num_stages):
    """The model input, checked against the stem's smallest size."""
    if input_tensor is not None:
        inputs = input_tensor
        if not isinstance(input_tensor, keras.KerasTensor):
            inputs = keras.Input(tensor=input_tensor)
    else:
        if input_shape is None:
            input_shape = (224, 224, 3) if stem == "imagenet" else (32, 32, 3)
        inputs = keras.Input(shape=_check_input_shape(input_shape))
    shape = tuple(inputs.shape[1:])
    if len(shape) != 3:
        fail("input_shape", "(height, width, channels)", shape)
    min_size = 32 if stem == "imagenet" else 2 ** (num_stages - 1)
    if any(size is not None and size < min_size for size in shape[:2]):
        fail(
            "input_shape",
            f"of height and width >= {min_size} for stem={stem!r} with "
            f"{num_stages} stages",
            shape,
        )
    return inputs


def _top(x, include_top, pooling, classes, classifier_activation):
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return keras.layers.Dense(
            classes, activation=classifier_activation, name="predictions"
        )(x)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def ResNet(
    stack_sizes: Sequence[int],
    filters: Sequence[int],
    block: str = "basic",
    stem: str = "cifar",
    laurel: str | None = None,
    laurel_rank: int = 16,
    width_multiplier: float = 1.0,
    include_top: bool = True,
    weights: None = None,
    input_tensor: keras.KerasTensor | None = None,
    input_shape: tuple[int | None, int | None, int] | None = None,
    pooling: str | None = None,
    classes: int = 10,
    classifier_activation: str | Callable | None = "softmax",
    name: str = "resnet",
) -> keras.Model:
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
        laurel: `None` (plain residual adds) or a LAuReL variant, spelled
            as `LaurelResidual` accepts it: `"rw"`, `"lr"`, `"pa"`,
            `"rw+lr"`, `"rw+pa"`, `"rw+lr+pa"` (parts in any order).
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
        name: model name (characters other than letters, digits, `_`,
            `.` and `-` become `_`, so e.g. `"resnet_rw+lr"` is a valid
            TensorFlow scope name).

    Returns:
        A `keras.Model`.

    Example:

    ```python
    import keras_efficient

    model = keras_efficient.applications.ResNet(
        [2, 2], [8, 16], input_shape=(8, 8, 1), laurel="rw+lr", laurel_rank=4
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    ```
    """
    _check_arguments(
        stack_sizes, filters, block, stem, weights, pooling, width_multiplier
    )
    if laurel is not None:
        laurel = normalize_variant(laurel, name="laurel")
    laurel_rank = check_positive_int("laurel_rank", laurel_rank)
    include_top = check_bool("include_top", include_top)
    if include_top:
        classes = check_positive_int("classes", classes)

    def scaled(f):
        return max(1, int(round(f * width_multiplier)))

    inputs = _inputs(input_tensor, input_shape, stem, len(stack_sizes))
    first = 64 if stem == "imagenet" else filters[0]
    x = resnet_blocks.stem(inputs, stem, scaled(first))
    history = []
    for stage, (num_blocks, f) in enumerate(zip(stack_sizes, filters)):
        for b in range(num_blocks):
            x = resnet_blocks.residual_block(
                x,
                scaled(f),
                2 if stage > 0 and b == 0 else 1,
                block == "bottleneck",
                laurel,
                laurel_rank,
                history,
                name=f"stage{stage + 1}_block{b + 1}",
            )
    x = _top(x, include_top, pooling, classes, classifier_activation)
    return keras.Model(inputs, x, name=_backend.scope_safe_name(name))


# Per stem: the default number of classes and what inputs it takes.
_STEM_DEFAULTS = {
    "cifar": (
        10,
        "Default input `(32, 32, 3)`; any input\n    of at least 4x4 works "
        "(e.g. the 8x8 digits).",
    ),
    "imagenet": (1000, "Inputs must be at least 32x32."),
}
_NAMED_DOC = """{summary}

    See `ResNet` for the arguments. {note}

    Example:

    ```python
    import keras_efficient

    model = keras_efficient.applications.{name}(
        {example}
    )
    ```
"""


def _named_resnet(name, layout, summary, example):
    """A `keras.applications`-style builder of one fixed ResNet.

    `layout` is `(stack_sizes, filters, block, stem)`; the stem sets the
    default `classes` and the input-size note; `summary` and `example` (the
    builder's arguments) fill the shared docstring.
    """
    stack_sizes, filters, block, stem = layout
    classes, note = _STEM_DEFAULTS[stem]
    default_name = name.lower()

    def builder(
        include_top: bool = True,
        weights: None = None,
        input_tensor: keras.KerasTensor | None = None,
        input_shape: tuple[int | None, int | None, int] | None = None,
        pooling: str | None = None,
        classes: int = classes,
        classifier_activation: str | Callable | None = "softmax",
        name: str = default_name,
        laurel: str | None = None,
        laurel_rank: int = 16,
        width_multiplier: float = 1.0,
    ) -> keras.Model:
        arguments = dict(locals())
        for key in ("stack_sizes", "filters", "block", "stem", "ResNet"):
            arguments.pop(key, None)
        return ResNet(stack_sizes, filters, block, stem, **arguments)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = _NAMED_DOC.format(
        summary=summary, note=note, name=name, example=example
    )
    return builder


ResNet20 = _named_resnet(
    "ResNet20",
    ([3, 3, 3], [16, 32, 64], "basic", "cifar"),
    "CIFAR-style ResNet20 (3 stages of 3 basic blocks, 16/32/64 filters).",
    'input_shape=(8, 8, 1), laurel="rw+lr"',
)
ResNet56 = _named_resnet(
    "ResNet56",
    ([9, 9, 9], [16, 32, 64], "basic", "cifar"),
    "CIFAR-style ResNet56 (3 stages of 9 basic blocks, 16/32/64 filters).",
    'input_shape=(8, 8, 1), laurel="rw", width_multiplier=0.25',
)
ResNet18 = _named_resnet(
    "ResNet18",
    ([2, 2, 2, 2], [64, 128, 256, 512], "basic", "imagenet"),
    "ImageNet-style ResNet18 (basic blocks [2, 2, 2, 2], 64..512 filters).",
    'input_shape=(32, 32, 3), classes=10, laurel="rw+lr",\n'
    "        width_multiplier=0.25,",
)
ResNet50 = _named_resnet(
    "ResNet50",
    ([3, 4, 6, 3], [64, 128, 256, 512], "bottleneck", "imagenet"),
    "ImageNet-style ResNet50 (bottleneck blocks [3, 4, 6, 3]).",
    'input_shape=(32, 32, 3), classes=10, laurel="rw", width_multiplier=0.25',
)
