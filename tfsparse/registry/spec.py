"""One registry of layer types: what every part of tfsparse needs to know of a layer."""

import dataclasses
from collections.abc import Callable, Mapping

import keras

from tfsparse.checks import ArgumentTypeError
from tfsparse.registry.channels import ChannelRule


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """What tfsparse knows about one Keras layer class.

    Attributes:
        prunable: names of the weights that wrappers parametrize (pruning,
            FreezeNet, Lottery Jackpots); empty for layers whose weights are
            never pruned (normalization, biases only).
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
    FreezeNet redraws its weights with the `initializers`. Classes are
    matched exactly (a subclass may compute something else).

    Args:
        cls: a `keras.layers.Layer` subclass.
        prunable: names of its prunable weights, e.g. `("kernel",)`.
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
    if isinstance(prunable, str) or not all(isinstance(name, str) for name in prunable):
        raise TypeError(f"Argument `prunable` must be a tuple of weight names, received: {prunable!r}.")
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
    spec = LayerSpec(tuple(prunable), channels, flops, dict(initializers or {}))
    _SPECS[cls] = spec
    return spec


def spec_of(layer):
    """Returns the `LayerSpec` of a layer's exact class, or None if it is not registered."""
    return _SPECS.get(type(layer))


def is_prunable(layer):
    """Returns True if tfsparse can parametrize some of `layer`'s weights."""
    spec = spec_of(layer)
    return spec is not None and bool(spec.prunable)


def prunable_layer_types():
    """Returns the names of the registered layer classes that have prunable weights."""
    return tuple(cls.__name__ for cls, spec in _SPECS.items() if spec.prunable)


def prunable_weight_names(layer):
    """Returns the names of the prunable weights of `layer`.

    Args:
        layer: a Keras layer instance.

    Returns:
        A tuple of weight names, e.g. `("kernel",)` for `Dense`.

    Raises:
        ArgumentTypeError: (a `TypeError` and a `ValueError`, as TFMOT
            raises) if the layer type has no prunable weights.

    Example:

    >>> prunable_weight_names(keras.layers.SeparableConv2D(8, 3))
    ('depthwise_kernel', 'pointwise_kernel')
    """
    if not is_prunable(layer):
        raise ArgumentTypeError(
            f"Layer {layer.name!r} of type {type(layer).__name__} cannot be pruned. Supported layer types: "
            f"{', '.join(prunable_layer_types())} (others can be added with `tfsparse.register_layer`)."
        )
    return spec_of(layer).prunable


def initializer_of(layer, name):
    """Returns the Keras initializer of weight `name` of `layer`, or None.

    Looks for the attribute registered for the weight, then Keras' usual
    spellings: `<name>_initializer`, and `<prefix>_initializer` for a weight
    named `<prefix>_kernel` (`recurrent_kernel` -> `recurrent_initializer`).
    """
    spec = spec_of(layer)
    registered = spec.initializers.get(name) if spec is not None else None
    candidates = (registered,) if registered else (f"{name}_initializer", f"{name.removesuffix('_kernel')}_initializer")
    for attribute in candidates:
        initializer = getattr(layer, attribute, None)
        if initializer is not None:
            return keras.initializers.get(initializer)
    return None
