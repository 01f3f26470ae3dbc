"""CIFAR-style ResNets (He et al., 2016): ResNet-20, ResNet-56, with a width multiplier."""

import keras

from tfsparse.models.widths import scaled

RESNET_CIFAR_STAGES = (16, 32, 64)


def resnet_cifar(depth=20, input_shape=(32, 32, 3), num_classes=10, width=1.0, name=None):
    """A CIFAR ResNet of `depth = 6n + 2` layers: three stages of n basic blocks.

    A 3x3 stem convolution, then three stages of `n` blocks with 16, 32 and
    64 filters (times `width`); each block is conv3x3-BN-ReLU-conv3x3-BN
    added to its input, then ReLU. The first block of stages 2 and 3 halves
    the resolution; its shortcut is a strided 1x1 convolution with BN (the
    projection shortcut, "option B"), every other shortcut is the identity.
    Global average pooling and the classifier end the model. Convolutions
    before a BN have no bias.

    Layer names: `stem_conv`, `stage{s}_block{b}_conv{1,2}` (and `_bn{1,2}`),
    `stage{s}_block1_shortcut` (and `_shortcut_bn`), `stage{s}_block{b}_add`,
    `logits`.

    Args:
        depth: total number of weighted layers, `6n + 2` (20, 32, 44, 56, 110).
        input_shape: shape of one image `(height, width, channels)`.
        num_classes: number of output classes.
        width: multiplier of every layer's channels (rounded, at least 1).
        name: model name; defaults to `resnet{depth}`.

    Returns:
        A functional `keras.Model` that outputs logits.

    Raises:
        ValueError: if `depth` is not `6n + 2` with `n >= 1`, `input_shape` is
            not an image, or `width` is not positive.

    Example:

    >>> model = resnet_cifar(20, width=0.5)
    >>> model.get_layer("stage3_block3_conv2").filters
    32
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"Argument `depth` must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110), received: {depth!r}.")
    if len(input_shape) != 3:
        raise ValueError(f"Argument `input_shape` must be (height, width, channels), received: {input_shape!r}.")
    blocks = (depth - 2) // 6
    inputs = keras.Input(input_shape)
    x = _conv_bn(inputs, scaled(RESNET_CIFAR_STAGES[0], width), 3, 1, "stem_conv", "stem_bn")
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, base in enumerate(RESNET_CIFAR_STAGES, start=1):
        filters = scaled(base, width)
        for block in range(1, blocks + 1):
            prefix = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            y = _conv_bn(x, filters, 3, strides, f"{prefix}_conv1", f"{prefix}_bn1")
            y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
            y = _conv_bn(y, filters, 3, 1, f"{prefix}_conv2", f"{prefix}_bn2")
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                shortcut = _conv_bn(x, filters, 1, strides, f"{prefix}_shortcut", f"{prefix}_shortcut_bn")
            x = keras.layers.Add(name=f"{prefix}_add")([shortcut, y])
            x = keras.layers.ReLU(name=f"{prefix}_relu2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")


def resnet20(input_shape=(32, 32, 3), num_classes=10, width=1.0, name="resnet20"):
    """ResNet-20: `resnet_cifar(20, ...)`, 3 blocks per stage (0.27M parameters at width 1).

    Example:

    >>> resnet20(width=0.5).count_params() < resnet20().count_params() / 3
    True
    """
    return resnet_cifar(20, input_shape, num_classes, width, name)


def resnet56(input_shape=(32, 32, 3), num_classes=10, width=1.0, name="resnet56"):
    """ResNet-56: `resnet_cifar(56, ...)`, 9 blocks per stage (0.86M parameters at width 1).

    Example:

    >>> len(resnet56().layers) > len(resnet20().layers)
    True
    """
    return resnet_cifar(56, input_shape, num_classes, width, name)


def _conv_bn(x, filters, size, strides, conv_name, bn_name):
    x = keras.layers.Conv2D(filters, size, strides=strides, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name=conv_name)(x)
    return keras.layers.BatchNormalization(name=bn_name)(x)
