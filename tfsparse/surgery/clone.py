"""Rebuilding a model layer by layer: copy, wrap or unwrap its layers."""

import keras

from tfsparse import keras_internals
from tfsparse.checks import check_model


def copy_layer(layer, weights=None):
    """Returns a new, built copy of `layer` holding `weights`.

    A `keras.layers.Lambda` is returned as it is: it holds Python code and
    no state, and Keras rebuilds it from its config (the function's
    bytecode) only in unsafe mode, without the function's globals.

    Args:
        layer: a built Keras layer (not a model), or a weightless Keras
            operation of a functional graph (e.g. the slicing `x[:, :4]`).
        weights: list of arrays in `layer.weights` order; defaults to the
            layer's current weights.

    Returns:
        The new layer (`layer` itself for a `Lambda`).
    """
    if isinstance(layer, keras.layers.Lambda):
        return layer
    new = layer.__class__.from_config(layer.get_config())
    if not isinstance(layer, keras.layers.Layer):
        return new
    build_config = layer.get_build_config()
    if build_config:
        new.build_from_config(build_config)
    new.set_weights(layer.get_weights() if weights is None else weights)
    return new


def clone_uncompiled(model, **kwargs):
    """`keras.models.clone_model(model, recursive=True, **kwargs)`, left uncompiled.

    Keras compiles the clone of a compiled model from its compile config,
    which deserializes the user's optimizer (impossible for an unregistered
    class, and a fresh optimizer state otherwise). A transform never reads
    the compile state: the clone is returned uncompiled, as TFMOT does.

    Args:
        model: a Sequential or functional model.
        **kwargs: `clone_function`, `call_function` of `clone_model`.

    The inputs of a functional clone keep the names of the model's input
    layers (Keras would name them after the input tensors), so that a
    transform and its inverse give back the same configuration.

    Returns:
        The clone, not compiled; `model` keeps its compile state.
    """
    if not isinstance(model, keras.Sequential):
        kwargs["input_tensors"] = keras.tree.map_structure(_same_input, model.input)
    with keras_internals.compile_state_hidden(model):
        return keras.models.clone_model(model, recursive=True, **kwargs)


def _same_input(tensor):
    """A new `keras.Input` like `tensor`, named as the input layer that produced it."""
    name = keras_internals.producing_call(tensor).operation.name
    return keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, sparse=tensor.sparse, name=name)


def is_graph_model(model):
    """True for Sequential and functional models (which Keras can clone)."""
    return isinstance(model, keras.Sequential) or getattr(model, "inputs", None) is not None


def transform_layers(model, fn):
    """Returns `model` with every (non-model) layer replaced by `fn(layer)`.

    Sequential and functional models, nested ones included, are cloned: the
    result is a new, uncompiled model (see `clone_uncompiled`) and `model`
    is left as it was. `fn` returns a new layer, or the layer itself to keep
    it (the new model then shares it with `model`). Subclassed models cannot be cloned by Keras: their
    layer attributes (and lists of layers) are replaced in place and the
    same model object is returned, uncompiled (compile it again before
    `fit`).

    Raises:
        ValueError: if `model` is not built.
    """
    check_model(model)
    if is_graph_model(model):
        return clone_uncompiled(model, clone_function=fn)
    with keras_internals.unlocked(model):
        _replace_attributes(model, fn)
    keras_internals.forget_compile_state(model)
    return model


def _replace_attributes(model, fn):
    for name, value in list(vars(model).items()):
        if name.startswith("_"):
            continue
        if isinstance(value, keras.Model):
            setattr(model, name, transform_layers(value, fn))
        elif isinstance(value, keras.layers.Layer):
            _swap(model, name, value, fn(value))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, keras.layers.Layer) for v in value):
            new = [fn(v) if isinstance(v, keras.layers.Layer) and not isinstance(v, keras.Model)
                   else v for v in value]
            for old, replacement in zip(value, new):
                _untrack(model, old, replacement)
            setattr(model, name, type(value)(new) if isinstance(value, tuple) else new)


def _swap(model, name, old, new):
    _untrack(model, old, new)
    setattr(model, name, new)


def _untrack(model, old, new):
    # The new layer is built now: variables cannot be created inside a
    # traced step.
    if old is new:
        return
    keras_internals.forget_sublayer(model, old)
    if old.built and not new.built:
        new.build_from_config(old.get_build_config())
