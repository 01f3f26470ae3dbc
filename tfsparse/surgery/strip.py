"""Removing tfsparse wrappers: a plain Keras model with the effective weights, without closed channels."""

import keras

from tfsparse.checks import check_model
from tfsparse.layers.gate import gate_sets
from tfsparse.surgery.clone import copy_layer
from tfsparse.surgery.graph import dependency_groups
from tfsparse.surgery.remove import remove_channels
from tfsparse.surgery.replace import remove_blocks
from tfsparse.surgery.unwrap import unwrap_layers
from tfsparse.walk import is_wrapper


def strip(model):
    """Returns a plain Keras model with every tfsparse wrapper removed.

    Masks are multiplied into the kernels (masked entries are exactly zero),
    and the layers are the original Keras layers, so the result saves,
    loads and converts without tfsparse. Channel gates
    (`tfsparse.polarize`) are dropped and the channels they close are
    removed with `tfsparse.surgery.remove_channels`, the residual blocks
    they close with `tfsparse.surgery.remove_blocks`: the result is narrower
    (and shallower) and computes what the gated model computes at inference. The input model
    is left unchanged (a subclassed model is changed in place, see
    `transform_layers`).

    Args:
        model: a built Keras model, possibly holding tfsparse wrappers, or
            an unbuilt Sequential model (whose wrapped layers are returned
            unwrapped, unbuilt).

    Returns:
        An uncompiled `keras.Model` with the same outputs and no wrappers.

    Example:

    >>> pruned = tfsparse.prune_low_magnitude(model, tfsparse.schedules.ConstantSparsity(0.5, begin_step=1))
    >>> outputs = pruned(x, training=True)  # a training step sets the masks
    >>> plain = tfsparse.strip(pruned)
    >>> float(np.mean(plain.get_layer("conv2").kernel.numpy() == 0))
    0.5
    """
    if isinstance(model, keras.Sequential) and not model.built:
        # As TFMOT does: an unbuilt wrapper holds no mask yet, so its layer is
        # returned as it was given (a copy), and the result is unbuilt too.
        return keras.Sequential([copy_layer(layer.layer if is_wrapper(layer) else layer) for layer in model.layers], name=model.name)
    check_model(model)
    closed, blocks = {}, []
    for leader, _ in gate_sets(model).values():
        closed.update({producers: channels for producers, channels in leader.closed_channels().items() if channels})
        blocks += leader.closed_blocks()
    plain = unwrap_layers(model)
    if closed:
        groups = {group.producers: group for group in dependency_groups(plain)}
        plain = remove_channels(plain, {groups[producers]: channels for producers, channels in closed.items()})
    return remove_blocks(plain, blocks) if blocks else plain
