"""Rebuilding a model without some of its channels: narrower layers, sliced weights."""

import numbers

import keras
import numpy as np

from tfsparse.surgery import rules
from tfsparse.surgery.clone import copy_layer, transform_layers
from tfsparse.surgery.graph import CONSUMER, ChannelGroup


def selected_roots(graph, key, indices, argument):
    """Roots of the channels `indices` of a producer or a group.

    Args:
        graph: a `ChannelGraph`.
        key: a producer's name (`indices` are its output channels) or a
            `ChannelGroup` of the model (`indices` are group channels).
        indices: a sequence of channel indices.
        argument: the user argument they come from, for error messages.

    Returns:
        An int array of roots, one per index.

    Raises:
        TypeError: if `key` is neither a name nor a `ChannelGroup`, or
            `indices` is not a sequence of integers.
        ValueError: if `key` is not a producer or a group of the model, an
            index is out of range or repeated, or a channel is pinned.
    """
    if isinstance(key, ChannelGroup):
        roots, noun = graph.group_roots(key, argument), "channels"
    elif isinstance(key, str):
        roots, noun = graph.producer_roots(key, argument), "output channels"
    else:
        raise TypeError(
            f"Argument `{argument}` must be keyed by producer names or `ChannelGroup`s of "
            f"`dependency_groups(model)`, received the key {key!r} (of type {type(key).__name__})."
        )
    if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
        raise TypeError(
            f"Argument `{argument}` must map {key!r} to a sequence of channel indices, received: {indices!r}."
        )
    indices = list(indices)
    bad = [i for i in indices if not isinstance(i, numbers.Integral) or isinstance(i, bool)]
    if bad:
        raise TypeError(f"Argument `{argument}` must hold integer channel indices for {key!r}, received: {bad}.")
    wrong = [int(i) for i in indices if not 0 <= i < len(roots)]
    if wrong:
        raise ValueError(
            f"Argument `{argument}` holds channels {wrong} for {key!r}, which has {len(roots)} "
            f"{noun} (allowed: 0 to {len(roots) - 1})."
        )
    if len(set(map(int, indices))) != len(indices):
        raise ValueError(f"Argument `{argument}` repeats a channel of {key!r}: {indices}.")
    selected = roots[np.asarray(indices, dtype=np.int64)]
    for index, root in zip(indices, selected.tolist()):
        if root in graph.pins:
            raise ValueError(
                f"Argument `{argument}`: channel {index} of {key!r} cannot be removed: "
                f"it (or a channel tied to it) {graph.pins[root]}."
            )
    return selected


def rebuild(graph, removed, kept_for=None):
    """Returns `graph.model` without the channels whose root is in `removed`.

    Every layer that holds such channels gets a new copy of its type, from
    its config with the new width, holding its weights without the
    channels' positions in the slices of their `ChannelGroup`; other layers
    are copied as they are.

    Args:
        graph: a `ChannelGraph` of the model.
        removed: roots of the channels to remove.
        kept_for: optional `{removed root: kept root}`. Before a channel is
            removed, its consumer slices are added to those of the kept
            channel (a merge); its other slices are dropped.

    Returns:
        A new plain `keras.Model` (Sequential for a Sequential model).

    Raises:
        ValueError: if a layer would be left without channels, or a merged
            channel and its kept channel reach a consumer at different
            numbers of positions.
    """
    removed = np.asarray(sorted(set(removed)), dtype=np.int64)
    edits = _weight_edits(graph, set(removed.tolist()), kept_for or {})
    plans = {}
    for info in graph.layers.values():
        if info.rule is None or not any(np.isin(a, removed).any() for a in info.arrays()):
            continue
        for call in info.outputs:
            if any(len(a) and np.isin(a, removed).all() for a in call):
                raise ValueError(
                    f"This removes every output channel of {type(info.layer).__name__} {info.layer.name!r}; "
                    f"keep at least one (or remove the layer with `remove_blocks`)."
                )
        plans[id(info.layer)] = _plan(info, removed, edits.get(info.layer.name, {}))
    narrowed = []

    def clone(layer):
        if id(layer) not in plans:
            return copy_layer(layer)
        config, weights = plans[id(layer)]
        new = layer.__class__.from_config(config)
        narrowed.append((new, weights))
        return new

    model = transform_layers(graph.model, clone)
    for layer, weights in narrowed:
        layer.set_weights(weights)
    return model


def _weight_edits(graph, removed, kept_for):
    """What happens to each weight axis, read from the groups' slices.

    Returns:
        `{layer name: {(weight, axis): (positions, folds)}}`: the positions
        to delete along that axis, and the `(merged positions, kept
        positions)` pairs to add up first.
    """
    edits = {}
    for group, roots in graph.grouped:
        channel_of = {root: c for c, root in enumerate(roots.tolist())}
        gone = [c for c, root in enumerate(roots.tolist()) if root in removed]
        if not gone:
            continue
        for weight_slice in group.slices:
            positions, folds = edits.setdefault(weight_slice.layer, {}).setdefault(
                (weight_slice.weight, weight_slice.axis), ([], []))
            for c in gone:
                positions.extend(weight_slice.positions[c])
                kept = kept_for.get(int(roots[c]))
                if weight_slice.role == CONSUMER and kept is not None:
                    folds.append((weight_slice.positions[c], weight_slice.positions[channel_of[kept]]))
    return edits


def _plan(info, removed, edits):
    """(config, weights) of the narrowed copy of one layer."""
    layer = info.layer
    weights = {w.name: keras.ops.convert_to_numpy(w) for w in layer.weights}
    for (name, axis), (positions, folds) in edits.items():
        weights[name] = np.delete(_fold(weights[name], axis, folds, layer), positions, axis=axis)
    width = int(np.count_nonzero(~np.isin(info.outputs[0][0], removed)))
    config = rules.narrow_config(layer, info.rule, width)
    return config, [weights[w.name] for w in layer.weights]


def _fold(weight, axis, folds, layer):
    """Adds the slices of merged channels along `axis` to their kept channel's.

    A channel may occupy several positions (after Flatten, or a depthwise
    multiplier): the i-th position of a merged channel goes to the i-th
    position of the kept one.
    """
    if not folds:
        return weight
    for source, target in folds:
        if len(source) != len(target):
            raise ValueError(
                f"A merged channel and its kept channel reach {type(layer).__name__} {layer.name!r} at "
                f"{len(source)} and {len(target)} input positions; they cannot be merged."
            )
    moved = np.moveaxis(weight, axis, 0).copy()
    sources = [p for source, _ in folds for p in source]
    targets = [p for _, target in folds for p in target]
    np.add.at(moved, targets, moved[sources])
    return np.moveaxis(moved, 0, axis)
