"""One registry of layer types: what every part of tfsparse needs to know of a layer."""

import dataclasses
from collections.abc import Callable, Mapping

import keras

from tfsparse import keras_internals
from tfsparse.checks import ArgumentTypeError
from tfsparse.registry.channels import ChannelRule

SUBLAYERS = "sublayers"


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """What tfsparse knows about one Keras layer class.

    Attributes:
        prunable: names of the weights that wrappers parametrize (pruning,
            FreezeNet, Lottery Jackpots); empty for layers whose weights are
            never pruned (normalization, biases only). A weight of a
            sublayer is named by its path below the layer (`"query/kernel"`
            for MultiHeadAttention, see `named_weights`). `SUBLAYERS` makes
            a container prunable through its direct sublayers (an RNN
            through its cell, `StackedRNNCells` through its cells,
            `Bidirectional` through its two RNNs): it prunes their
            prunable weights, and is prunable only if every one of them is.
        channels: how the layer carries channels, for graph surgery: a
            `ChannelRule`, or a function `(layer, rank) -> ChannelRule` that
            may raise `Unsupported`; `None` if the layer cannot be mapped
            channel by channel (its channels are then pinned).
        flops: a function `(layer, input_shape, weights) -> (dense, effective)`
            giving the FLOPs of one example (`weights` maps weight names to
            NumPy arrays of their effective values); `None` counts zero.
        initializers: `{weight name: initializer attribute}` where the
            attribute is not named `<weight>_initializer` (FreezeNet draws
            weights with them).
    """

    prunable: tuple = ()
    channels: ChannelRule | Callable | None = None
    flops: Callable | None = None
    initializers: Mapping = dataclasses.field(default_factory=dict)

    def channel_rule(self, layer, rank):
        """Returns the `ChannelRule` of `layer` called on inputs of rank `rank`, or None."""
        if self.channels is None or isinstance(self.channels, ChannelRule):
            return self.channels
        return self.channels(layer, rank)


_SPECS = {}


def register_layer(cls, prunable=(), channels=None, flops=None, initializers=None, replace=False):
    """Tells tfsparse how to prune, rebuild, count and initialize a layer class.

    One call makes a layer type known everywhere: `prune_low_magnitude`,
    FreezeNet, SNIP and Lottery Jackpots wrap its `prunable` weights; graph
    surgery follows its channels; `tfsparse.summary` counts its FLOPs;
    FreezeNet redraws its weights with the `initializers`.

    Subclasses inherit the prunable weights of their nearest registered
    base class (a `class MyDense(keras.layers.Dense)` prunes `kernel`):
    pruning zeroes entries of a named weight, which stays meaningful
    whatever a subclass computes with it. Channel rules and FLOPs match the
    exact class only: they describe a computation, which a subclass may
    change, and surgery on a wrong rule would silently change the outputs
    (see `spec_of`). A layer with a `get_prunable_weights()` method (TFMOT's
    `PrunableLayer` protocol) needs no registration to be pruned.

    Args:
        cls: a `keras.layers.Layer` subclass.
        prunable: names of its prunable weights, e.g. `("kernel",)`, with
            paths for weights of sublayers (`"query/kernel"`), or
            `SUBLAYERS` (see `LayerSpec`).
        channels: a `ChannelRule` (see `tfsparse.registry.kernel_rule`) or a
            function `(layer, rank) -> ChannelRule`; `None` leaves the layer
            opaque to surgery.
        flops: a function `(layer, input_shape, weights) -> (dense,
            effective)`; `None` counts zero. `kernel_flops(positions)` builds
            one for kernels used `positions(layer, input_shape)` times.
        initializers: `{weight name: initializer attribute}` for weights
            whose initializer is not in `<weight>_initializer`.
        replace: whether to replace an existing registration of `cls`.

    Returns:
        The `LayerSpec` registered.

    Raises:
        TypeError: if `cls` is not a Keras layer class, or an argument has
            the wrong type.
        ValueError: if `cls` is already registered and `replace` is False.

    Example:

    >>> class Scale(keras.layers.Layer):
    ...     def build(self, input_shape):
    ...         self.kernel = self.add_weight(shape=input_shape[-1:], initializer="ones")
    ...     def call(self, x):
    ...         return x * self.kernel
    >>> spec = tfsparse.register_layer(Scale, prunable=("kernel",))
    >>> tfsparse.registry.is_prunable(Scale())
    True
    """
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        raise TypeError(f"Argument `cls` must be a keras.layers.Layer subclass, received: {cls!r}.")
    if prunable != SUBLAYERS and (
        isinstance(prunable, str) or not all(isinstance(name, str) for name in prunable)
    ):
        raise TypeError(
            f"Argument `prunable` must be a tuple of weight names, received: {prunable!r} "
            f"(or `tfsparse.registry.SUBLAYERS`, for a container of prunable layers)."
        )
    if channels is not None and not (isinstance(channels, ChannelRule) or callable(channels)):
        raise TypeError(f"Argument `channels` must be a ChannelRule, a function or None, received: {channels!r}.")
    if flops is not None and not callable(flops):
        raise TypeError(f"Argument `flops` must be a function or None, received: {flops!r}.")
    if initializers is not None and not isinstance(initializers, Mapping):
        raise TypeError(f"Argument `initializers` must be a mapping or None, received: {initializers!r}.")
    if cls in _SPECS and not replace:
        raise ValueError(
            f"Argument `cls` ({cls.__name__}) is already registered; pass `replace=True` to replace it."
        )
    spec = LayerSpec(prunable if prunable == SUBLAYERS else tuple(prunable), channels, flops, dict(initializers or {}))
    _SPECS[cls] = spec
    return spec


def spec_of(layer):
    """Returns the `LayerSpec` of a layer's exact class, or None if it is not registered."""
    return _SPECS.get(type(layer))


def _inherited_spec(layer):
    """The `LayerSpec` of the nearest registered class in `layer`'s MRO, or None."""
    return next((_SPECS[cls] for cls in type(layer).__mro__ if cls in _SPECS), None)


def _has_protocol(layer):
    """True for TFMOT's `PrunableLayer` protocol: a `get_prunable_weights()` method.

    Duck typed, as TFMOT's wrapper does: any subclass of
    `tfmot.sparsity.keras.PrunableLayer` has the method (it is abstract
    there), and so may any other layer.
    """
    return callable(getattr(layer, "get_prunable_weights", None))


def is_prunable(layer):
    """Returns True if tfsparse can parametrize some of `layer`'s weights.

    That is: `layer` has a `get_prunable_weights()` method, or its nearest
    registered class (see `register_layer`) names prunable weights; a
    `SUBLAYERS` container needs direct sublayers that are all prunable.
    """
    if _has_protocol(layer):
        return True
    spec = _inherited_spec(layer)
    if spec is None or not spec.prunable:
        return False
    if spec.prunable == SUBLAYERS:
        sublayers = keras_internals.direct_sublayers(layer)
        return bool(sublayers) and all(is_prunable(sub) for sub in sublayers)
    return True


def prunable_layer_types():
    """Returns the names of the registered layer classes that have prunable weights."""
    return tuple(cls.__name__ for cls, spec in _SPECS.items() if spec.prunable)


def check_prunable(layer):
    """Raises `ArgumentTypeError` (naming the supported layers) unless `is_prunable(layer)`."""
    if not is_prunable(layer):
        raise ArgumentTypeError(
            f"Layer {layer.name!r} of type {type(layer).__name__} cannot be pruned. Supported layer types: "
            f"{', '.join(prunable_layer_types())}, subclasses of these, and layers with a "
            f"`get_prunable_weights()` method (others can be added with `tfsparse.register_layer`)."
        )


def prunable_weight_names(layer):
    """Returns the names of the prunable weights of `layer`.

    Names are those of `named_weights`: a weight's own name (`"kernel"`),
    or its path below `layer` for a weight of a sublayer
    (`"lstm_cell/recurrent_kernel"` for an LSTM).

    Args:
        layer: a Keras layer instance; built if it prunes the weights its
            `get_prunable_weights()` returns.

    Returns:
        A tuple of weight names, e.g. `("kernel",)` for `Dense`.

    Raises:
        ArgumentTypeError: (a `TypeError` and a `ValueError`, as TFMOT
            raises) if the layer type has no prunable weights.
        ValueError: if `get_prunable_weights()` is asked of an unbuilt
            layer, or returns something that is not one of the layer's
            weights or a weight whose name is ambiguous.

    Example:

    >>> prunable_weight_names(keras.layers.SeparableConv2D(8, 3))
    ('depthwise_kernel', 'pointwise_kernel')
    >>> prunable_weight_names(keras.layers.LSTM(4))
    ('lstm_cell/kernel', 'lstm_cell/recurrent_kernel')
    """
    check_prunable(layer)
    if _has_protocol(layer):
        return _protocol_names(layer)
    prunable = _inherited_spec(layer).prunable
    if prunable != SUBLAYERS:
        return prunable
    return tuple(
        f"{sub.name}/{name}" for sub in keras_internals.direct_sublayers(layer) for name in prunable_weight_names(sub)
    )


def _protocol_names(layer):
    """The names of the weights `layer.get_prunable_weights()` returns."""
    if not layer.built:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) names its prunable weights with "
            f"`get_prunable_weights()`, which needs the layer built: call `layer.build(input_shape)` first."
        )
    pairs = named_weights(layer)
    names = {}
    for name, weight in pairs:
        names.setdefault(id(weight), name)
    result = []
    for weight in layer.get_prunable_weights():
        name = names.get(id(weight))
        if name is None or sum(n == name for n, _ in pairs) > 1:
            raise ValueError(
                f"`get_prunable_weights()` of layer {layer.name!r} must return weights of the layer with "
                f"distinct names; it returned {getattr(weight, 'path', weight)!r}, "
                + ("which is not one of them." if name is None else f"whose name {name!r} is not unique.")
            )
        result.append(name)
    return tuple(result)


def named_weights(layer):
    """Returns `[(name, variable)]` for every weight of `layer`, its sublayers' included.

    A layer's own weights keep their names; a sublayer's weights are named
    by the sublayer's name and their name in it, `/`-joined, recursively
    (an LSTM's `lstm_cell/kernel`, a MultiHeadAttention's `query/kernel`).
    Unlike `Variable.path`, these names do not depend on where or how the
    layer was built, cloned or loaded.

    Example:

    >>> lstm = keras.layers.LSTM(4)
    >>> lstm.build((None, 5, 3))
    >>> [name for name, _ in named_weights(lstm)]
    ['lstm_cell/kernel', 'lstm_cell/recurrent_kernel', 'lstm_cell/bias']
    """
    sublayers = keras_internals.direct_sublayers(layer)
    inner = {id(w) for sub in sublayers for w in sub.weights}
    pairs = [(w.name, w) for w in layer.weights if id(w) not in inner]
    for sub in sublayers:
        pairs += [(f"{sub.name}/{name}", w) for name, w in named_weights(sub)]
    return pairs


def initializer_of(layer, name):
    """Returns the Keras initializer of weight `name` of `layer`, or None.

    Looks for the attribute registered for the weight, then Keras' usual
    spellings: `<name>_initializer`, and `<prefix>_initializer` for a weight
    named `<prefix>_kernel` (`recurrent_kernel` -> `recurrent_initializer`).
    A weight of a sublayer (`"lstm_cell/kernel"`) is looked up on the
    sublayer.
    """
    if "/" in name:
        head, rest = name.split("/", 1)
        sub = next((s for s in keras_internals.direct_sublayers(layer) if s.name == head), None)
        return None if sub is None else initializer_of(sub, rest)
    spec = _inherited_spec(layer)
    registered = spec.initializers.get(name) if spec is not None else None
    candidates = (registered,) if registered else (f"{name}_initializer", f"{name.removesuffix('_kernel')}_initializer")
    for attribute in candidates:
        initializer = getattr(layer, attribute, None)
        if initializer is not None:
            return keras.initializers.get(initializer)
    return None
