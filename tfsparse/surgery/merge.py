"""`merge_channels`: one channel per cluster, the consumers' inputs summed into it."""

from collections.abc import Mapping

from tfsparse.surgery.graph import ChannelGraph
from tfsparse.surgery.rebuild import rebuild, selected_roots


def merge_channels(model, clusters):
    """Keeps one channel per cluster and sums the cluster's inputs into it.

    For each cluster of output channels of a producer, the first channel is
    kept (with its bias, BatchNormalization entries and depthwise filter);
    in every consumer, the input slices of the other channels are added to
    the kept channel's slice, then the other channels are removed like
    `remove_channels` does. When the channels of a cluster are identical
    (as Centripetal SGD makes them), the merged model computes exactly the
    same function. Channels tied to a producer's channels (see
    `dependency_groups`) are merged with them.

    Args:
        model: a built functional or Sequential `keras.Model`. tfsparse
            wrappers are stripped first; name their inner layers.
        clusters: a mapping of producer names or `ChannelGroup`s from
            `dependency_groups(model)` to lists of clusters, each cluster a
            sequence of channel indices (the producer's output channels, or
            the group's channels), the kept one first. Channels in no
            cluster are kept as they are.

    Returns:
        A new, narrower, uncompiled `keras.Model` (Sequential if `model` is).

    Raises:
        TypeError: if `model` is not a Keras model or `clusters` is not a
            mapping of names or groups to lists of integer sequences.
        ValueError: if a name is not a producer, a group is not one of
            `model`'s, a cluster is empty, an index
            is out of range or in two clusters, a merged channel is pinned,
            or two clusters disagree on a channel tied to both.

    Example:

    >>> small = tfsparse.surgery.merge_channels(model, {"conv1": [[0, 4], [1, 2, 3]]})
    >>> small.get_layer("conv1").filters
    13
    >>> group = tfsparse.surgery.dependency_groups(model)[0]  # conv1 and what is tied to it
    >>> tfsparse.surgery.merge_channels(model, {group: [[0, 4], [1, 2, 3]]}).get_layer("conv1").filters
    13
    """
    if not isinstance(clusters, Mapping):
        raise TypeError(
            f"Argument `clusters` must be a mapping {{layer name or ChannelGroup: list of clusters}}, "
            f"received: {clusters!r} (of type {type(clusters).__name__})."
        )
    graph = ChannelGraph(model)
    kept_for = {}
    for key, layer_clusters in clusters.items():
        if isinstance(layer_clusters, (str, bytes)) or not hasattr(layer_clusters, "__iter__"):
            raise TypeError(
                f"Argument `clusters` must map {key!r} to a list of clusters (sequences of channel "
                f"indices), received: {layer_clusters!r}."
            )
        layer_clusters = [list(c) if hasattr(c, "__iter__") and not isinstance(c, (str, bytes)) else c
                          for c in layer_clusters]
        if any(not isinstance(c, list) for c in layer_clusters):
            raise TypeError(
                f"Argument `clusters` must hold sequences of channel indices for {key!r}, "
                f"received: {layer_clusters!r}."
            )
        if not all(layer_clusters):
            raise ValueError(
                f"Argument `clusters` must hold non-empty sequences of channel indices for {key!r}, "
                f"received: {layer_clusters!r}."
            )
        roots = iter(selected_roots(graph, key, [i for c in layer_clusters for i in c], "clusters").tolist())
        for cluster in layer_clusters:
            kept = next(roots)
            for index, root in zip(cluster[1:], roots):
                if root != kept and kept_for.setdefault(root, kept) != kept:
                    raise ValueError(
                        f"Argument `clusters`: channel {index} of {key!r} is tied to a channel that "
                        f"another cluster merges into a different kept channel."
                    )
    if set(kept_for) & set(kept_for.values()):
        raise ValueError(
            "Argument `clusters`: a kept channel is merged away by another cluster (the clusters of "
            "tied producers disagree)."
        )
    return rebuild(graph, set(kept_for), kept_for)
