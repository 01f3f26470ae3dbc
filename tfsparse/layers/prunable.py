"""Which weights of which Keras layers tfsparse can parametrize."""

import keras

# Layer class -> names of its prunable weights. Biases and normalization
# parameters are never pruned.
PRUNABLE_WEIGHTS = {
    keras.layers.Dense: ("kernel",),
    keras.layers.EinsumDense: ("kernel",),
    keras.layers.Conv1D: ("kernel",),
    keras.layers.Conv2D: ("kernel",),
    keras.layers.Conv3D: ("kernel",),
    keras.layers.Conv1DTranspose: ("kernel",),
    keras.layers.Conv2DTranspose: ("kernel",),
    keras.layers.Conv3DTranspose: ("kernel",),
    keras.layers.DepthwiseConv1D: ("kernel",),
    keras.layers.DepthwiseConv2D: ("kernel",),
    keras.layers.SeparableConv1D: ("depthwise_kernel", "pointwise_kernel"),
    keras.layers.SeparableConv2D: ("depthwise_kernel", "pointwise_kernel"),
    keras.layers.Embedding: ("embeddings",),
}

SUPPORTED_LAYERS = tuple(cls.__name__ for cls in PRUNABLE_WEIGHTS)


def prunable_weight_names(layer):
    """Returns the names of the prunable weights of `layer`.

    Args:
        layer: a Keras layer instance.

    Returns:
        A tuple of weight names, e.g. `("kernel",)` for `Dense`.

    Raises:
        TypeError: if the layer type is not supported.
    """
    # Exact type first, so that subclasses of supported layers that change
    # their weights are not silently treated as their parent.
    names = PRUNABLE_WEIGHTS.get(type(layer))
    if names is None:
        raise TypeError(
            f"Layer {layer.name!r} of type {type(layer).__name__} cannot be "
            f"pruned. Supported layer types: {', '.join(SUPPORTED_LAYERS)}."
        )
    return names


def is_prunable(layer):
    """Returns True if tfsparse can parametrize `layer`'s weights."""
    return type(layer) in PRUNABLE_WEIGHTS
