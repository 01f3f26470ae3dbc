"""Walking a model's layers: paths, leaves, weights by name.

tfsparse wrappers (`tfsparse.layers.ParametrizedWrapper`) are leaves: the
layer they wrap is part of them. This module sits below the wrappers and
recognises them by the `effective_weights` method every wrapper has.
"""

import keras

from tfsparse import keras_internals
from tfsparse.registry import is_prunable, named_weights, prunable_layer_types, prunable_weight_names


def is_wrapper(layer):
    """Returns True if `layer` is a tfsparse wrapper (it parametrizes an inner layer's weights)."""
    return isinstance(layer, keras.layers.Wrapper) and callable(getattr(layer, "effective_weights", None))


def named_layers(layer):
    """Yields `(path, layer)` for `layer` and every layer inside it.

    Models and layers holding sublayers are walked depth-first; tfsparse
    wrappers are not entered (their wrapped layer is part of them), nor are
    prunable layers (an LSTM's cell, a MultiHeadAttention's projections
    are pruned as part of them, see `tfsparse.registry.named_weights`). Paths
    are `/`-joined layer names below the top model (a layer shared by
    several parents is yielded once).

    Args:
        layer: a Keras model or layer.

    Yields:
        `(path, layer)` pairs, the given layer first (under its own name).

    Example:

    >>> features = keras.Input((4,), name="features")
    >>> block = keras.Model(features, keras.layers.Dense(2, name="fc")(features), name="block")
    >>> pixels = keras.Input((3,), name="pixels")
    >>> net = keras.Model(pixels, block(keras.layers.Dense(4, name="fc1")(pixels)), name="net")
    >>> [path for path, _ in named_layers(net)]
    ['net', 'pixels', 'fc1', 'block', 'block/features', 'block/fc']
    """
    seen = {id(layer)}

    def children(parent, prefix):
        if is_wrapper(parent) or is_prunable(parent):
            return
        for sub in keras_internals.direct_sublayers(parent):
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            path = prefix + sub.name
            yield path, sub
            yield from children(sub, path + "/")

    yield layer.name, layer
    yield from children(layer, "" if isinstance(layer, keras.Model) else layer.name + "/")


def leaf_layers(model):
    """Returns the layers of `model` that are neither models nor inputs, in order (wrappers as one layer)."""
    return [
        layer for _, layer in list(named_layers(model))[1:]
        if not isinstance(layer, (keras.Model, keras.layers.InputLayer))
    ]


def wrappers(model):
    """Returns `[(path, wrapper)]` for every tfsparse wrapper in `model`."""
    return [(path, layer) for path, layer in named_layers(model) if is_wrapper(layer)]


def weight_named(layer, name):
    """Returns the weight of `layer` called `name` (a path for a sublayer's weight, see `named_weights`).

    Raises:
        ValueError: if the layer has no such weight, or several (the message
            lists its weights).
    """
    pairs = named_weights(layer)
    found = [weight for key, weight in pairs if key == name]
    if len(found) != 1:
        raise ValueError(
            f"Layer {layer.name!r} has {'no' if not found else 'more than one'} weight named {name!r}; "
            f"it has {[key for key, _ in pairs]}."
        )
    return found[0]


def prunable_weights(model):
    """Returns `{"<layer path>/<weight name>": variable}` for every prunable weight.

    Layer paths are those of `named_layers` (`"fc1"`,
    `"encoder/conv1"`); wrapped layers contribute the variables of the layer
    they wrap, under the wrapper's path.

    Raises:
        ValueError: if the model has no prunable weight.
    """
    weights = {f"{path}/{name}": weight_named(layer, name) for path, layer, name in prunable_entries(model)}
    if not weights:
        raise ValueError(
            f"Argument `model` ({model.name!r}) has no prunable weight. "
            f"Supported layer types: {', '.join(prunable_layer_types())}."
        )
    return weights


def prunable_entries(model):
    """Yields `(layer path, layer, weight name)` for every prunable weight, in `prunable_weights` order.

    The layer is the wrapped one under a wrapper. A weight name may hold
    a `/` (an LSTM's `lstm_cell/kernel`), so a `prunable_weights` key
    cannot be split back into path and name; this gives both.
    """
    for path, layer in named_layers(model):
        inner = layer.layer if is_wrapper(layer) else layer
        if is_prunable(inner):
            for name in prunable_weight_names(inner):
                yield path, inner, name


def check_unwrapped(model, argument="model"):
    """Raises `ValueError` if `model` already holds tfsparse wrappers (naming them)."""
    wrapped = [layer.name for _, layer in wrappers(model)]
    if wrapped:
        raise ValueError(
            f"Argument `{argument}` ({model.name!r}) already holds tfsparse wrappers ({', '.join(wrapped)}); "
            f"pass a plain model, e.g. `tfsparse.strip(model)`."
        )
