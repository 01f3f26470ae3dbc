"""Rebuilding a model without some of its channels: narrower layers, sliced weights."""

import numbers

import keras
import numpy as np

from tfsparse.surgery import rules
from tfsparse.surgery.clone import copy_layer, transform_layers


def selected_roots(graph, name, indices, argument):
    """Roots of the output channels `indices` of producer `name`.

    Args:
        graph: a `ChannelGraph`.
        name: a producer's name.
        indices: a sequence of channel indices of that producer.
        argument: the user argument they come from, for error messages.

    Returns:
        An int array of roots, one per index.

    Raises:
        TypeError: if `indices` is not a sequence of integers.
        ValueError: if `name` is not a producer, an index is out of range or
            repeated, or a channel is pinned.
    """
    roots = graph.producer_roots(name, argument)
    if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
        raise TypeError(
            f"Argument `{argument}` must map {name!r} to a sequence of channel indices, received: {indices!r}."
        )
    indices = list(indices)
    bad = [i for i in indices if not isinstance(i, numbers.Integral) or isinstance(i, bool)]
    if bad:
        raise TypeError(f"Argument `{argument}` must hold integer channel indices for {name!r}, received: {bad}.")
    wrong = [int(i) for i in indices if not 0 <= i < len(roots)]
    if wrong:
        raise ValueError(
            f"Argument `{argument}` holds channels {wrong} for {name!r}, which has {len(roots)} "
            f"output channels (allowed: 0 to {len(roots) - 1})."
        )
    if len(set(map(int, indices))) != len(indices):
        raise ValueError(f"Argument `{argument}` repeats a channel of {name!r}: {indices}.")
    selected = roots[np.asarray(indices, dtype=np.int64)]
    for index, root in zip(indices, selected.tolist()):
        if root in graph.pins:
            raise ValueError(
                f"Argument `{argument}`: channel {index} of {name!r} cannot be removed: "
                f"it (or a channel tied to it) {graph.pins[root]}."
            )
    return selected


def rebuild(graph, removed, kept_for=None):
    """Returns `graph.model` without the channels whose root is in `removed`.

    Every layer that holds such channels gets a new copy of its type, from
    its config with the new width, holding its weights without those
    channels; other layers are copied as they are.

    Args:
        graph: a `ChannelGraph` of the model.
        removed: roots of the channels to remove.
        kept_for: optional `{removed root: kept root}`. Before a channel is
            removed, its input slices in every consumer are added to those
            of the kept channel (a merge); its other slices are dropped.

    Returns:
        A new plain `keras.Model` (Sequential for a Sequential model).

    Raises:
        ValueError: if a layer would be left without channels.
    """
    removed = np.asarray(sorted(set(removed)), dtype=np.int64)
    kept_for = kept_for or {}
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
        plans[id(info.layer)] = _plan(info, removed, kept_for)
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


def _plan(info, removed, kept_for):
    """(config, weights) of the narrowed copy of one layer."""
    layer, rule = info.layer, info.rule
    channels = {rules.IN: info.inputs[0][0], rules.MID: info.mid[0], rules.OUT: info.outputs[0][0]}
    weights = {w.name: keras.ops.convert_to_numpy(w) for w in layer.weights}
    for axis in rule.axes:
        if axis.summed and kept_for:
            weights[axis.weight] = _fold(weights[axis.weight], axis.axis, channels[axis.channels], kept_for, layer)
    for axis in rule.axes:
        keep = ~np.isin(channels[axis.channels], removed)
        weights[axis.weight] = np.compress(keep, weights[axis.weight], axis=axis.axis)
    width = int(np.count_nonzero(~np.isin(channels[rules.OUT], removed)))
    config = rules.narrow_config(layer, rule, width)
    return config, [weights[w.name] for w in layer.weights]


def _fold(weight, axis, channels, kept_for, layer):
    """Adds the slices of merged channels along `axis` to their kept channel's.

    A channel may occupy several positions (after Flatten, or a depthwise
    multiplier): the i-th position of a merged channel goes to the i-th
    position of the kept one.
    """
    moved = np.moveaxis(weight, axis, 0).copy()
    sources, targets = [], []
    for root in np.unique(channels).tolist():
        if root not in kept_for:
            continue
        source = np.flatnonzero(channels == root)
        target = np.flatnonzero(channels == kept_for[root])
        if len(source) != len(target):
            raise ValueError(
                f"A merged channel and its kept channel reach {type(layer).__name__} {layer.name!r} at "
                f"{len(source)} and {len(target)} input positions; they cannot be merged."
            )
        sources.append(source)
        targets.append(target)
    if sources:
        np.add.at(moved, np.concatenate(targets), moved[np.concatenate(sources)])
    return np.moveaxis(moved, 0, axis)
