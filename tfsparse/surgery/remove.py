"""`remove_channels`: a genuinely narrower model without some output channels."""

from collections.abc import Mapping

from tfsparse.surgery.graph import ChannelGraph
from tfsparse.surgery.rebuild import rebuild, selected_roots


def remove_channels(model, channels):
    """Removes output channels of producers or channels of groups, and everything tied to them.

    Removing channel `c` of a producer removes the channels tied to it in
    its `ChannelGroup` (the same channel of every layer added to it, its
    BatchNormalization entries, the depthwise filters that follow it, ...)
    and the matching input slices of every consumer (after `Flatten`, rows
    `c + k*C`). The result is a plain Keras model with the same layer types,
    only narrower, holding the remaining weights and BatchNormalization
    statistics: no mask, gather or slice is added. The weight axes and
    positions cut are those of the groups' `slices`.

    Args:
        model: a built functional or Sequential `keras.Model`. tfsparse
            wrappers are stripped first (masks applied); name their inner
            layers.
        channels: a mapping whose keys are producer names (the layers
            listed in `dependency_groups(model)[i].producers`), mapped to
            output channel indices of that producer, or `ChannelGroup`s
            from `dependency_groups(model)`, mapped to group channel
            indices. Both kinds of key can be mixed.

    Returns:
        A new, uncompiled `keras.Model` (Sequential if `model` is), with fewer
        parameters and FLOPs; `model` is left unchanged.

    Raises:
        TypeError: if `model` is not a Keras model or `channels` is not a
            mapping of names or groups to integer sequences.
        ValueError: if a name is not a producer, a group is not one of
            `model`'s, an index is out of range,
            a channel is pinned (a model output, or it reaches a layer the
            graph cannot map; the message says which), or a layer would be
            left without channels.

    Example:

    >>> small = tfsparse.surgery.remove_channels(model, {"conv1": [0, 3, 7]})
    >>> small.get_layer("conv1").filters
    13
    >>> group = tfsparse.surgery.dependency_groups(model)[0]  # conv1 and what is tied to it
    >>> tfsparse.surgery.remove_channels(model, {group: [0, 3, 7]}).get_layer("conv1").filters
    13
    """
    if not isinstance(channels, Mapping):
        raise TypeError(
            f"Argument `channels` must be a mapping {{layer name or ChannelGroup: channel indices}}, "
            f"received: {channels!r} (of type {type(channels).__name__})."
        )
    graph = ChannelGraph(model)
    removed = set()
    for key, indices in channels.items():
        removed.update(selected_roots(graph, key, indices, "channels").tolist())
    return rebuild(graph, removed)
