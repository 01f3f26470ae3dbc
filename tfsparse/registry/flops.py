"""FLOP rules of layer types: 2 x multiply-adds of one example.

A kernel layer does `positions x kernel size` multiply-adds per kernel,
where positions are how many times each kernel entry is used for one
example. Effective FLOPs scale each kernel's multiply-adds by the fraction
of its entries that are non-zero. Axes of unknown size (`None`) count as 1.
"""

import math

import numpy as np

from tfsparse.registry.spec import spec_of


def prod(dims):
    """The product of `dims`, `None` counting as 1."""
    return math.prod(1 if d is None else int(d) for d in dims)


def kernel_flops(positions, kernels):
    """Returns a FLOP rule for layers whose `kernels` are each used `positions(layer, input_shape)` times.

    Args:
        positions: `positions(layer, input_shape) -> int`.
        kernels: names of the weights that multiply the inputs.

    Returns:
        A function `(layer, input_shape, weights) -> (dense, effective)`.
    """

    def flops(layer, input_shape, weights):
        uses = positions(layer, input_shape)
        arrays = [weights[name] for name in kernels]
        dense = sum(uses * a.size for a in arrays)
        return 2 * dense, 2 * sum(uses * int(np.count_nonzero(a)) for a in arrays)

    return flops


def output_positions(layer, input_shape):
    """Spatial positions of the output (Dense: all axes but batch and units; Conv: the spatial axes)."""
    shape = layer.compute_output_shape(input_shape)
    return _spatial(layer, shape)


def input_positions(layer, input_shape):
    """Spatial positions of the input: each meets the whole kernel of a transposed convolution."""
    return _spatial(layer, input_shape)


def einsum_positions(layer, input_shape):
    """Input axes of an EinsumDense, batch excluded, whose subscripts are not in the kernel."""
    inputs, kernel = layer.equation.split("->")[0].split(",")
    head, _, tail = inputs.partition("...")
    # Ellipsis axes get subscripts of their own, found in no kernel.
    ellipsis = [f"...{i}" for i in range(len(input_shape) - len(head) - len(tail))] if "..." in inputs else []
    subscripts = [*head, *ellipsis, *tail]
    return prod(dim for sub, dim in zip(subscripts[1:], input_shape[1:]) if sub not in kernel)


def no_positions(layer, input_shape):
    """Lookups (Embedding): no arithmetic."""
    return 0


def elementwise_flops(layer, input_shape, weights):
    """One multiply-add per output element (BatchNormalization in inference form)."""
    elements = prod(layer.compute_output_shape(input_shape)[1:])
    return 2 * elements, 2 * elements


def _spatial(layer, shape):
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    return prod(shape[2:] if channels_first else shape[1:-1])


def layer_flops(layer, weights, input_shape=None):
    """Returns the (dense, effective) FLOPs of one example through `layer`, by its registered rule.

    Args:
        layer: a built Keras layer.
        weights: `{weight name: NumPy array}` of its (effective) values;
            only the shapes count for the dense figure.
        input_shape: the shape of its input, batch axis included; defaults
            to the one recorded when the layer was built.

    Returns:
        `(dense, effective)`, both 0 for a layer without a FLOP rule.

    Raises:
        ValueError: if the layer has a FLOP rule but no recorded input shape.

    Example:

    >>> dense = keras.layers.Dense(4)
    >>> dense.build((None, 3))
    >>> layer_flops(dense, {"kernel": np.ones((3, 4)), "bias": np.zeros(4)})
    (24, 24)
    """
    spec = spec_of(layer)
    if spec is None or spec.flops is None:
        return 0, 0
    return spec.flops(layer, recorded_input_shape(layer) if input_shape is None else input_shape, weights)


def recorded_input_shape(layer):
    """The input shape `layer` was built with.

    Raises:
        ValueError: if none is recorded.
    """
    config = layer.get_build_config() or {}
    if "input_shape" not in config:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) has no recorded input shape, so "
            f"its FLOPs are unknown. Build the model by calling it on data or with "
            f"`model.build(input_shape)`."
        )
    return tuple(config["input_shape"])
