"""Removing tfsparse wrappers: a plain Keras model with the effective weights."""

import keras

from tfsparse.layers.fixed import Fixed
from tfsparse.layers.wrapper import ParametrizedWrapper
from tfsparse.surgery.clone import copy_layer, transform_layers


def unwrap(layer):
    """Returns a plain copy of a wrapped layer holding its effective weights.

    A `Fixed` layer gives a copy of the layer it wraps; any other layer is
    returned as a copy with its own weights.
    """
    if isinstance(layer, Fixed):
        return copy_layer(layer.layer)
    if not isinstance(layer, ParametrizedWrapper):
        return copy_layer(layer)
    inner = layer.layer
    effective = {id(w): v for w, v in zip(layer.prunable_weights, layer.effective_weights().values())}
    weights = [effective.get(id(w), w) for w in inner.weights]
    return copy_layer(inner, [keras.ops.convert_to_numpy(w) for w in weights])


def strip(model):
    """Returns a plain Keras model with every tfsparse wrapper removed.

    Masks are multiplied into the kernels (masked entries are exactly zero),
    gates are folded in, and the layers are the original Keras layers, so
    the result saves, loads and converts without tfsparse. The input model
    is left unchanged (a subclassed model is changed in place, see
    `transform_layers`).

    Args:
        model: a built Keras model, possibly holding tfsparse wrappers.

    Returns:
        An uncompiled `keras.Model` with the same outputs and no wrappers.

    Example:

    >>> pruned = tfsparse.prune_low_magnitude(model, tfsparse.schedules.ConstantSparsity(0.5, begin_step=1))
    >>> outputs = pruned(x, training=True)  # a training step sets the masks
    >>> plain = tfsparse.strip(pruned)
    >>> float(np.mean(plain.get_layer("conv2").kernel.numpy() == 0))
    0.5
    """
    return transform_layers(model, unwrap)
