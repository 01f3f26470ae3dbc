"""A small MobileNetV2 (Sandler et al., 2018) for 32x32 images, with a width multiplier."""

import keras

from tfsparse.models.widths import scaled

# (expansion t, output channels c, repeats n, first stride s), as in the paper's table 2.
MOBILENET_V2_SMALL_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))


def mobilenet_v2_small(input_shape=(32, 32, 3), num_classes=10, width=1.0, blocks=MOBILENET_V2_SMALL_BLOCKS,
                       stem=32, head=320, name="mobilenet_v2_small"):
    """A small MobileNetV2: inverted residual blocks with depthwise convolutions.

    A 3x3 stem convolution (stride 1, for small images), then for each
    `(t, c, n, s)` in `blocks`, `n` inverted residual blocks: a 1x1
    expansion to `t` times the input channels (absent when `t == 1`),
    BN, ReLU6, a 3x3 depthwise convolution (stride `s` in the first block),
    BN, ReLU6, a linear 1x1 projection to `c` channels and BN, added to the
    block's input when shapes allow. A 1x1 head convolution, global average
    pooling and the classifier follow. Channels are `round(c * width)`
    (no rounding to multiples of 8, so any width can be built exactly).

    Layer names: `stem_conv`, `block{i}_expand`, `block{i}_depthwise`,
    `block{i}_project` (each with `_bn`), `block{i}_add`, `head_conv`, `logits`.

    Args:
        input_shape: shape of one image `(height, width, channels)`.
        num_classes: number of output classes.
        width: multiplier of every layer's channels (rounded, at least 1).
        blocks: the `(t, c, n, s)` table.
        stem: channels of the stem convolution at width 1.
        head: channels of the head convolution at width 1.
        name: model name.

    Returns:
        A functional `keras.Model` that outputs logits.

    Raises:
        ValueError: if `input_shape` is not an image, `width` is not positive
            or `blocks` is empty.

    Example:

    >>> model = mobilenet_v2_small(width=0.5)
    >>> model.get_layer("block2_expand").filters
    48
    """
    if len(input_shape) != 3:
        raise ValueError(f"Argument `input_shape` must be (height, width, channels), received: {input_shape!r}.")
    if not blocks:
        raise ValueError(f"Argument `blocks` must list at least one (t, c, n, s) entry, received: {blocks!r}.")
    inputs = keras.Input(input_shape)
    x = _conv_bn_relu(inputs, scaled(stem, width), 3, "stem_conv")
    index = 0
    for expansion, channels, repeats, first_stride in blocks:
        for repeat in range(repeats):
            index += 1
            x = _inverted_residual(x, expansion, scaled(channels, width), first_stride if repeat == 0 else 1,
                                   f"block{index}")
    x = _conv_bn_relu(x, scaled(head, width), 1, "head_conv")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _inverted_residual(x, expansion, channels, strides, prefix):
    y = x
    if expansion != 1:
        y = _conv_bn_relu(y, x.shape[-1] * expansion, 1, f"{prefix}_expand")
    y = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                                     name=f"{prefix}_depthwise")(y)
    y = keras.layers.BatchNormalization(name=f"{prefix}_depthwise_bn")(y)
    y = keras.layers.ReLU(6.0, name=f"{prefix}_depthwise_relu")(y)
    y = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{prefix}_project")(y)
    y = keras.layers.BatchNormalization(name=f"{prefix}_project_bn")(y)
    if strides == 1 and x.shape[-1] == channels:
        y = keras.layers.Add(name=f"{prefix}_add")([x, y])
    return y


def _conv_bn_relu(x, filters, size, name):
    x = keras.layers.Conv2D(filters, size, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x)
