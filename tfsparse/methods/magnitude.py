"""Magnitude pruning with TFMOT's API, for Keras 3 models."""

import warnings

import keras

from tfsparse import keras_internals, schedules
from tfsparse.checks import ArgumentTypeError
from tfsparse.layers.masked import Masked, new_group_name
from tfsparse.registry import is_prunable, prunable_layer_types, spec_of
from tfsparse.surgery.clone import copy_layer, transform_layers
from tfsparse.walk import is_wrapper, leaf_layers

# The name of a layer wrapped by `prune_low_magnitude` is this prefix and its own name, as in TFMOT.
WRAPPED_PREFIX = "prune_low_magnitude_"

# Layers with weights that are deliberately never pruned (as in TFMOT).
NEVER_PRUNED = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)


def prune_low_magnitude(
    to_prune,
    pruning_schedule=None,
    block_size=(1, 1),
    block_pooling_type="AVG",
    sparsity_m_by_n=None,
    scope="layer",
    skip_unsupported=False,
    **kwargs,
):
    """Wraps a model's (or one layer's) prunable weights for magnitude pruning.

    The Keras 3 counterpart of `tfmot.sparsity.keras.prune_low_magnitude`,
    with the same argument names and call forms. During `model.fit` (or any
    call with `training=True`), each wrapped layer recomputes its mask at the
    schedule's steps, keeping the largest-magnitude weights. Sparsity is
    exact: `round(s * n)` weights pruned, whatever the ties, except that at
    least one weight of every pruned tensor is kept, as in TFMOT. Steps
    follow TFMOT too: the k-th training batch is step k (from 1).

    As in TFMOT, a wrapped layer is named `prune_low_magnitude_<name>`
    (`tfsparse.strip_pruning` restores `<name>`), layers that are already
    wrapped are kept as they are, and layers without prunable weights
    (Dropout, Flatten, pooling, normalization) are left dense: given alone,
    such a layer is returned unchanged.

    Args:
        to_prune: a built Sequential or functional model (nested models
            included), an unbuilt Sequential model (the result is unbuilt
            too), a subclassed model (changed in place), a single layer
            (for use inside a model definition) or a list of layers.
        pruning_schedule: a `tfsparse.schedules` or TFMOT schedule; defaults
            to `ConstantSparsity(0.5, begin_step=0)` as in TFMOT.
        block_size: `(rows, cols)` blocks pruned together (rank-2 weights).
        block_pooling_type: `"AVG"` or `"MAX"`.
        sparsity_m_by_n: `None` or `(m, n)`, e.g. `(2, 4)`.
        scope: `"layer"` (TFMOT's rule: every weight pruned to the target) or
            `"global"`: one magnitude threshold across all wrapped weights,
            so sensitive layers keep more.
        skip_unsupported: if True, layers with weights that cannot be pruned
            are left as they are, with a warning naming them; if False they
            raise an error.
        **kwargs: for a single layer, passed on to its wrapper (e.g.
            `input_shape` or `name`), as TFMOT does.

    Returns:
        The wrapped model, uncompiled (a new one, except for subclassed
        models), a `tfsparse.layers.Masked` layer, or a list of layers.
        Pruned layers are copies; the layers that need no change are the
        same layer objects in both models, as in TFMOT (so a custom layer
        without a complete `get_config` is kept).

    Raises:
        ArgumentTypeError: (a `TypeError` and a `ValueError`, as TFMOT
            raises `ValueError`) for an unsupported layer (unless
            `skip_unsupported`) or an object that is not a model, a layer
            or a list of layers.
        ValueError: for bad arguments, an unbuilt model other than
            Sequential, or `**kwargs` with a model or a list.

    Example:

    >>> schedule = tfsparse.schedules.PolynomialDecay(0.0, 0.9, 0, end_step=14, frequency=2)
    >>> pruned = tfsparse.prune_low_magnitude(model, schedule)
    >>> pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = pruned.fit(x, y, epochs=2, verbose=0)  # no callback needed
    >>> plain = tfsparse.strip_pruning(pruned)
    >>> int(np.sum(plain.get_layer("conv2").kernel.numpy() == 0))  # round(0.9 * 4,608)
    4147
    """
    if pruning_schedule is None:
        pruning_schedule = schedules.ConstantSparsity(0.5, begin_step=0)
    params = dict(
        pruning_schedule=schedules.get(pruning_schedule),
        block_size=block_size,
        block_pooling_type=block_pooling_type,
        sparsity_m_by_n=sparsity_m_by_n,
        scope=scope,
    )
    is_layer_list = isinstance(to_prune, (list, tuple)) and all(isinstance(l, keras.layers.Layer) for l in to_prune)
    if not (is_layer_list or isinstance(to_prune, keras.layers.Layer)):
        raise ArgumentTypeError(
            f"Argument `to_prune` must be a keras.Model or keras.layers.Layer, or a list of layers, "
            f"received: {to_prune!r} (of type {type(to_prune).__name__})."
        )
    if kwargs and (is_layer_list or isinstance(to_prune, keras.Model)):
        raise ValueError(
            f"Keyword arguments {sorted(kwargs)} are passed on to the wrapper of a single layer; "
            f"they cannot be given with {'a list of layers' if is_layer_list else 'a model'}."
        )
    if scope == "global" and not isinstance(to_prune, keras.Model):
        raise ValueError(
            "Argument `scope='global'` needs a whole model (one threshold across layers), "
            f"received {'a list of layers' if is_layer_list else f'the single layer {to_prune.name!r}'}."
        )
    if is_layer_list:
        return [_wrap_layer(layer, params, skip_unsupported) for layer in to_prune]
    if not isinstance(to_prune, keras.Model):
        return _wrap_layer(to_prune, params, skip_unsupported, **kwargs)
    return _prune_model(to_prune, params, skip_unsupported)


def prune_scope():
    """TFMOT's `prune_scope()`, so that code loading pruned models inside it runs unchanged.

    tfsparse's wrappers and schedules are registered Keras serializables:
    loading a pruned model needs no scope. This returns an empty
    `keras.saving.custom_object_scope`, which changes nothing.

    Returns:
        A context manager.

    Example:

    >>> tfsparse.prune_low_magnitude(model).save("pruned.keras")
    >>> with tfsparse.prune_scope():
    ...     loaded = keras.saving.load_model("pruned.keras")
    >>> loaded.get_layer("prune_low_magnitude_conv1").layer.name
    'conv1'
    """
    return keras.saving.custom_object_scope({})


def _wrap_layer(layer, params, skip_unsupported, **kwargs):
    """A single layer, pruned as TFMOT does: wrapped, or as it is if it is already wrapped or has nothing to prune."""
    if is_wrapper(layer):
        return layer
    if not is_prunable(layer):
        unsupported = _unsupported([layer])
        if unsupported:
            _refuse(unsupported, skip_unsupported)
        if kwargs:
            raise ValueError(
                f"Keyword arguments {sorted(kwargs)} need a wrapper, but layer {layer.name!r} "
                f"({type(layer).__name__}) has nothing to prune and is returned as it is."
            )
        return layer
    kwargs.setdefault("name", f"{WRAPPED_PREFIX}{layer.name}")
    if keras_internals.input_shape_argument(layer) is not None:
        kwargs.setdefault("input_shape", keras_internals.input_shape_argument(layer))
    return Masked(layer, **params, **kwargs)


def _prune_model(model, params, skip_unsupported):
    if not model.built and isinstance(model, keras.Sequential):
        if params["scope"] == "global":
            raise ValueError(
                f"Argument `scope='global'` needs a built model (its layers' sizes set the shared "
                f"threshold); model {model.name!r} is not built. Build it first, e.g. `model.build(input_shape)`."
            )
        # As in TFMOT: the layers are wrapped unbuilt, and build with the model.
        layers = [
            layer if is_wrapper(layer) else _wrap_layer(copy_layer(layer), params, skip_unsupported)
            for layer in model.layers
        ]
        return keras.Sequential(layers, name=model.name)
    leaves = leaf_layers(model)
    prunable = [layer for layer in leaves if is_prunable(layer)]
    unsupported = _unsupported(leaves)
    if unsupported:
        _refuse(unsupported, skip_unsupported)
    if not prunable and not any(is_wrapper(layer) for layer in leaves):
        raise ValueError(
            f"Argument `to_prune` ({model.name!r}) has no prunable layer. "
            f"Supported layer types: {', '.join(prunable_layer_types())}."
        )
    scope = params["scope"]
    group = {"name": new_group_name(), "size": len(prunable)} if scope == "global" else None
    order = {id(layer): i for i, layer in enumerate(prunable)}

    def wrap(layer):
        if is_wrapper(layer):
            return layer
        if id(layer) not in order:
            return layer
        member = None if group is None else {**group, "index": order[id(layer)]}
        return Masked(copy_layer(layer), group=member, name=f"{WRAPPED_PREFIX}{layer.name}", **params)

    return transform_layers(model, wrap)


def _unsupported(layers):
    """Names the layers with weights tfsparse cannot prune.

    An unbuilt layer counts when the registry does not know its type, or
    knows it as prunable but not with these sublayers (an RNN whose cell
    cannot be pruned).
    """
    return [
        f"{layer.name} ({type(layer).__name__})"
        for layer in layers
        if not is_prunable(layer) and not is_wrapper(layer) and not isinstance(layer, NEVER_PRUNED)
        and (layer.weights if layer.built else spec_of(layer) is None or bool(spec_of(layer).prunable))
    ]


def _refuse(unsupported, skip_unsupported):
    message = (
        f"These layers have weights that tfsparse cannot prune: {', '.join(unsupported)}. "
        f"Supported layer types: {', '.join(prunable_layer_types())}."
    )
    if not skip_unsupported:
        raise ArgumentTypeError(message + " Pass `skip_unsupported=True` to leave them dense.")
    warnings.warn(message + " They are left dense.", stacklevel=4)
