"""LeNet-300-100 and LeNet-5-Caffe, the pruning literature's reference models."""

import keras


def lenet_300_100(input_shape=(28, 28, 1), num_classes=10, name="lenet_300_100"):
    """LeNet-300-100: a 300-100 fully connected network (LeCun et al., 1998).

    Args:
        input_shape: shape of one input, without the batch axis.
        num_classes: number of output classes.
        name: model name.

    Returns:
        A functional `keras.Model` that outputs logits. On 28x28 inputs it
        has 266,200 weights and 410 biases.

    Example:

    >>> model = lenet_300_100((8, 8, 1))
    >>> model.output_shape
    (None, 10)
    """
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(300, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(100, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def lenet5_caffe(input_shape=(28, 28, 1), num_classes=10, name="lenet5_caffe"):
    """LeNet-5-Caffe: conv 20 5x5, pool, conv 50 5x5, pool, FC 500, FC classes.

    The variant used by SNIP and FreezeNet: 430,500 weights and 580 biases on
    28x28 inputs. Inputs must be at least 16x16 (two valid 5x5 convolutions
    and two 2x2 poolings).

    Args:
        input_shape: shape of one input image `(height, width, channels)`.
        num_classes: number of output classes.
        name: model name.

    Returns:
        A functional `keras.Model` that outputs logits.

    Raises:
        ValueError: if `input_shape` is not an image of at least 16x16.

    Example:

    >>> model = lenet5_caffe((28, 28, 1))
    >>> model.count_params()
    431080
    """
    if len(input_shape) != 3 or min(input_shape[:2]) < 16:
        raise ValueError(
            f"Argument `input_shape` must be (height, width, channels) with height and "
            f"width >= 16 for LeNet-5-Caffe, received: {input_shape!r}."
        )
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(20, 5, activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(50, 5, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(500, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
