"""Unwrapping tfsparse wrappers: plain layers holding the effective weights."""

import keras

from tfsparse.layers.fixed import Fixed
from tfsparse.layers.gate import BlockGate
from tfsparse.layers.wrapper import ParametrizedWrapper
from tfsparse.surgery.clone import copy_layer, transform_layers


def unwrap(layer):
    """Returns a plain copy of a wrapped layer holding its effective weights.

    A `Fixed` layer or a `BlockGate` gives a copy of the layer it wraps
    (the block gates' decisions are applied by `tfsparse.strip`); any other layer
    needs no change and is returned as it is (the model before and after
    `tfsparse.strip` share it, as in TFMOT's `strip_pruning`).
    """
    if isinstance(layer, (Fixed, BlockGate)):
        return copy_layer(layer.layer)
    if not isinstance(layer, ParametrizedWrapper):
        return layer
    inner = layer.layer
    effective = {id(w): v for w, v in zip(layer.prunable_weights, layer.effective_weights().values())}
    weights = [effective.get(id(w), w) for w in inner.weights]
    return copy_layer(inner, [keras.ops.convert_to_numpy(w) for w in weights])


def unwrap_layers(model):
    """Returns `model` with every wrapper replaced by its plain layer (see `unwrap`), same widths.

    Gates are folded into the kernels that read their channels (closed
    channels read as zeros) but no channel is removed: this is the model
    `dependency_groups` reads. `tfsparse.strip` also removes closed channels.
    """
    return transform_layers(model, unwrap)
