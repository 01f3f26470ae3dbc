"""VGG-style convolutional networks: stacks of 3x3 convolutions and max pooling."""

import keras

# Output channels of each 3x3 convolution; "M" is a 2x2 max pooling.
CONFIGS = {
    "small": (32, 32, "M", 64, 64, "M", 128, 128, "M"),
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


def vgg(config="small", input_shape=(32, 32, 3), num_classes=10, batch_norm=True, name=None):
    """A VGG network for small images, as used by the CIFAR pruning literature.

    Each number in `config` is a 3x3 "same" convolution with that many
    filters, followed by BatchNormalization (without a convolution bias)
    and ReLU, or by ReLU alone; each `"M"` is a 2x2 max pooling. Global
    average pooling and one Dense layer (logits) end the network.

    Args:
        config: a name in `CONFIGS` (`"small"`, `"vgg11"`, `"vgg13"`,
            `"vgg16"`, `"vgg19"`) or a sequence of ints and `"M"`.
        input_shape: shape of one input image `(height, width, channels)`.
        num_classes: number of output classes.
        batch_norm: whether each convolution is followed by
            BatchNormalization.
        name: model name; defaults to the config name (`"vgg_small"` for
            `"small"`).

    Returns:
        A functional `keras.Model` that outputs logits.

    Raises:
        ValueError: for an unknown config name, a config entry that is
            neither a positive int nor `"M"`, or an image too small for its
            poolings.

    Example:

    >>> model = vgg("small", (28, 28, 1))
    >>> model.output_shape
    (None, 10)
    """
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"Argument `config` must be one of {sorted(CONFIGS)} or a sequence, received: {config!r}.")
        name = name or (config if config.startswith("vgg") else f"vgg_{config}")
        config = CONFIGS[config]
    if not all(c == "M" or (isinstance(c, int) and not isinstance(c, bool) and c > 0) for c in config):
        raise ValueError(f"Argument `config` must hold positive ints and 'M' only, received: {config!r}.")
    poolings = sum(1 for c in config if c == "M")
    if len(input_shape) != 3 or min(input_shape[:2]) < 2**poolings:
        raise ValueError(
            f"Argument `input_shape` must be (height, width, channels) with height and width >= "
            f"{2**poolings} for {poolings} poolings, received: {input_shape!r}."
        )
    inputs = keras.Input(input_shape)
    x = inputs
    convs = 0
    for entry in config:
        if entry == "M":
            x = keras.layers.MaxPooling2D(2)(x)
            continue
        convs += 1
        x = keras.layers.Conv2D(entry, 3, padding="same", use_bias=not batch_norm, name=f"conv{convs}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"bn{convs}")(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or "vgg")
