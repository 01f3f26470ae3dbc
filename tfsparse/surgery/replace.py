"""Replacing a layer by other layers, and dropping residual branches."""

import keras

from tfsparse.keras_internals import producing_call
from tfsparse.surgery.clone import clone_uncompiled, copy_layer
from tfsparse.surgery.graph import checked_model, graph_view, model_calls


def _clone_calls(model, replace):
    """Clones `model`, calling `replace[layer](*args, **kwargs)` in place of `layer`."""

    def clone(layer):
        return layer if id(layer) in replace else copy_layer(layer)

    def call(layer, *args, **kwargs):
        if id(layer) in replace:
            return replace[id(layer)](*args, **kwargs)
        return layer(*args, **kwargs)

    return clone_uncompiled(model, clone_function=clone, call_function=call)


def _layer(view, name, argument):
    if not isinstance(name, str):
        raise TypeError(f"Argument `{argument}` must be a layer name (str), received: {name!r}.")
    try:
        return view.get_layer(name)
    except ValueError:
        names = [layer.name for layer in view.layers]
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} layers)" if len(names) > 20 else "")
        raise ValueError(
            f"Argument `{argument}` names {name!r}, which is not a layer of the model. Layers: {shown}."
        ) from None


def replace_layer(model, layer_name, build_fn):
    """Returns a copy of `model` with one layer replaced by other layers.

    `build_fn(layer)` receives the (built) layer and returns what to call in
    its place: a new Keras layer, or any function of the layer's inputs that
    builds Keras tensors (several layers, e.g. a kept convolution plus a
    parallel 1x1 implant, added). It is called once; a layer called several
    times in the model is replaced at every call. The replacement must
    return tensors of the same shapes as the layer did. Every other layer
    is copied with its weights.

    Args:
        model: a built functional or Sequential `keras.Model`.
        layer_name: name of the layer to replace.
        build_fn: `build_fn(layer) -> callable`.

    Returns:
        A new, uncompiled functional `keras.Model` (also for a Sequential
        model).

    Raises:
        TypeError: if `model` is not a Keras model, `layer_name` is not a
            string, or `build_fn` (or what it returns) is not callable.
        ValueError: if `model` is not built or subclassed, `layer_name` is
            not one of its layers, or the replacement changes an output
            shape.

    Example:

    >>> def implant(conv):
    ...     kept = tfsparse.surgery.copy_layer(conv)
    ...     cheap = keras.layers.Conv2D(conv.filters, 1, strides=conv.strides, padding="same",
    ...                                 kernel_initializer="zeros", use_bias=False)
    ...     return lambda x: keras.layers.Add()([kept(x), cheap(x)])
    >>> new = tfsparse.surgery.replace_layer(model, "conv2", implant)
    >>> new.count_params() - model.count_params()  # the 1x1 implant: 16 x 32 weights
    512
    >>> bool(np.allclose(new(x), model(x)))  # a zero implant keeps the function
    True
    """
    return replace_layers(model, {layer_name: build_fn})


def replace_layers(model, build_fns):
    """Returns a copy of `model` with several layers replaced, in one pass: `replace_layer` for each.

    Args:
        model: a built functional or Sequential `keras.Model`.
        build_fns: `{layer name: build_fn}`, each as for `replace_layer`.

    Returns:
        A new, uncompiled functional `keras.Model`.

    Raises:
        TypeError, ValueError: as `replace_layer` (naming `layer_name` for
            a bad key).

    Example:

    >>> new = tfsparse.surgery.replace_layers(model, {name: tfsparse.surgery.copy_layer for name in ("conv2", "conv3")})
    >>> bool(np.allclose(new(x), model(x)))
    True
    """
    view = graph_view(checked_model(model))
    replace = {}
    for layer_name, build_fn in build_fns.items():
        target = _layer(view, layer_name, "layer_name")
        if not callable(build_fn):
            raise TypeError(f"Argument `build_fn` must be callable, received: {build_fn!r}.")
        replace[id(target)] = _checked_replacement(target, build_fn(target), layer_name)
    return _clone_calls(view, replace)


def _checked_replacement(target, replacement, layer_name):
    """`replacement` as a call that checks it returns the shapes `target` returns."""
    if not callable(replacement):
        raise TypeError(
            f"Argument `build_fn` must return a layer or a function of the layer's inputs, "
            f"received: {replacement!r} (of type {type(replacement).__name__})."
        )

    def call(*args, **kwargs):
        outputs = replacement(*args, **kwargs)
        expected = keras.tree.map_structure(lambda t: t.shape, target.compute_output_spec(*args, **kwargs))
        received = keras.tree.map_structure(lambda t: getattr(t, "shape", t), outputs)
        if keras.tree.flatten(expected) != keras.tree.flatten(received):
            raise ValueError(
                f"Argument `build_fn`: the replacement of {layer_name!r} returns shapes {received}, "
                f"where the layer returns {expected}."
            )
        return outputs

    return call


def remove_blocks(model, merge_names):
    """Drops residual branches, keeping their identity paths.

    A residual block ends in an `Add` of its input (the identity shortcut)
    and of branches computed from it. Removing the block replaces the `Add`
    by its identity input, so the branches' layers leave the model; the
    layers after the `Add` (an activation, say) stay. Blocks whose shortcut
    is not the block's input (a projection) cannot be removed this way.

    Args:
        model: a built functional `keras.Model`.
        merge_names: names of the `Add` layers that end the blocks to drop.

    Returns:
        A new, uncompiled functional `keras.Model` without those branches.

    Raises:
        TypeError: if `model` is not a Keras model or `merge_names` is not a
            list of strings.
        ValueError: if a name is not an `Add` layer called once, or none of
            its inputs is an ancestor of all the others (no identity path).

    Example:

    >>> resnet = tfsparse.models.resnet20(width=0.25)
    >>> shallower = tfsparse.surgery.remove_blocks(resnet, ["stage2_block3_add"])
    >>> "stage2_block3_conv1" in [layer.name for layer in shallower.layers]
    False
    """
    view = graph_view(checked_model(model))
    if isinstance(merge_names, str) or not hasattr(merge_names, "__iter__"):
        raise TypeError(f"Argument `merge_names` must be a list of layer names, received: {merge_names!r}.")
    replace = {}
    for name in merge_names:
        layer = _layer(view, name, "merge_names")
        calls = [node for node in model_calls(view) if node.operation is layer]
        if type(layer) is not keras.layers.Add or len(calls) != 1:
            raise ValueError(
                f"Argument `merge_names` names {name!r} ({type(layer).__name__}), which is not an Add "
                f"layer called once; name the Add that ends each residual block."
            )
        replace[id(layer)] = _identity_of(layer, calls[0])
    return _clone_calls(view, replace)


def residual_blocks(model):
    """Returns `{Add name: identity input index}` for the residual blocks `remove_blocks` can drop.

    A block qualifies when its `Add` is called once and one of its inputs,
    of the output's shape, is an ancestor of all the others (an identity
    shortcut; a projection shortcut does not qualify).

    Args:
        model: a built functional or Sequential `keras.Model`.

    Returns:
        A dict, in the model's layer order.

    Example:

    >>> blocks = tfsparse.surgery.residual_blocks(tfsparse.models.resnet20(width=0.25))
    >>> len(blocks), blocks["stage1_block1_add"]  # the first block of stages 2 and 3 projects
    (7, 0)
    """
    view = graph_view(checked_model(model))
    calls = {}
    for node in model_calls(view):
        calls.setdefault(id(node.operation), []).append(node)
    found = {}
    for layer in view.layers:
        nodes = calls.get(id(layer), [])
        if type(layer) is keras.layers.Add and len(nodes) == 1:
            index = _identity_index(nodes[0])
            if index is not None:
                found[layer.name] = index
    return found


def _identity_of(layer, node):
    """A function returning the identity input of an Add call, given its inputs."""
    i = _identity_index(node)
    if i is None:
        raise ValueError(
            f"Argument `merge_names`: Add {layer.name!r} has no identity input of its output's shape "
            f"(an input from which all others are computed); its shortcut is probably a projection."
        )
    return lambda *args, **kwargs: [t for t in keras.tree.flatten(args) if isinstance(t, keras.KerasTensor)][i]


def _identity_index(node):
    """The index of the identity input of an Add call (an ancestor of all other inputs, of the output's shape)."""
    inputs = node.input_tensors
    for i, candidate in enumerate(inputs):
        if all(j == i or _is_ancestor(candidate, other) for j, other in enumerate(inputs)):
            return i if tuple(candidate.shape) == tuple(node.output_tensors[0].shape) else None
    return None


def _is_ancestor(tensor, other):
    """Whether `other` is computed from `tensor` in the functional graph."""
    seen, stack = set(), [other]
    while stack:
        current = stack.pop()
        if current is tensor:
            return True
        if id(current) in seen:
            continue
        seen.add(id(current))
        stack.extend(producing_call(current).input_tensors)
    return False
