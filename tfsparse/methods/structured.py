"""`prune_channels`: score channel groups, remove the least important channels, return a narrower model."""

import math

import numpy as np

from tfsparse import checks
from tfsparse.scoring import channel_criteria
from tfsparse.surgery import RemovalCost, dependency_groups, remove_channels
from tfsparse.surgery.graph import plain_model
from tfsparse.walk import leaf_layers

SCOPES = ("global", "layer")
TARGETS = ("channels", "params", "flops")
_TOLERANCE = 1e-9


def prune_channels(model, ratio, importance="l1", data=None, scope="global", max_layer_ratio=0.9,
                   round_to=None, exclude=(), target="channels", print_fn=print):
    """Removes the least important channels of a model and returns a narrower plain Keras model.

    Every prunable `ChannelGroup` of `tfsparse.surgery.dependency_groups`
    is scored channel by channel with `importance`; the lowest-scoring
    channels are removed with `tfsparse.surgery.remove_channels`, until
    `ratio` of the channels, parameters or FLOPs is gone.

    With `scope="global"`, all groups are ranked together on scores divided
    by the mean absolute score of their group: a channel counts by how it
    compares with the rest of its layer, since the scale of a kernel that
    BatchNormalization follows says nothing of its importance. Criteria
    whose scores are on one scale across groups (`comparable`, as
    `"hessian"`'s) are ranked as they are. With
    `scope="layer"`, every group loses the same fraction of its channels
    (within one channel). Either way the smallest number of channels that
    reaches the target is removed, so the reached value is within one
    channel (one `round_to` step) of `ratio`; `print_fn` reports it.

    Channels are never removed from a model output (the classifier's
    classes), from a pinned channel (see `ChannelGroup.pinned`), beyond
    `max_layer_ratio` of a group or down to no channel at all.

    Args:
        model: a built functional or Sequential `keras.Model` (tfsparse
            wrappers are stripped first).
        ratio: the fraction in [0, 1) of the `target` to remove.
        importance: `"l1"`, `"l2"`, `"bn_scale"`, `"taylor"`, `"hessian"` or a
            `tfsparse.scoring.ChannelImportance` (e.g.
            `tfsparse.scoring.Taylor(batches=8)`).
        data: batches for criteria that take gradients (`"taylor"`,
            `"hessian"`): a
            `tf.data.Dataset`, an iterable of `(x, y)` batches or one
            `(x, y)` tuple.
        scope: `"global"` or `"layer"`.
        max_layer_ratio: the largest fraction in [0, 1) of a group's
            channels that may be removed.
        round_to: if set, every group keeps all its channels or a multiple
            of `round_to` of them.
        exclude: names of layers whose channels are all kept (the groups
            they produce or carry are left whole).
        target: what `ratio` counts: `"channels"` (of the prunable groups),
            `"params"` or `"flops"` (of the whole model, as
            `tfsparse.summary` counts them).
        print_fn: called with a one-line report of what was removed;
            `None` prints nothing.

    Returns:
        A new, uncompiled `keras.Model` with fewer channels; `model` is
        left unchanged.

    Raises:
        ValueError: for a `ratio` or `max_layer_ratio` outside [0, 1), an
            unknown `importance`, `scope` or `target`, a bad `round_to`, an
            `exclude` name that is not a layer of the model, a criterion
            that cannot score a group (`"bn_scale"` without
            BatchNormalization, `"taylor"` or `"hessian"` without `data`), or a target that
            cannot be reached under `max_layer_ratio`.
        TypeError: if `model` is not a functional or Sequential model or
            `exclude` is not a sequence of names.

    Example:

    >>> small = tfsparse.prune_channels(model, 0.5, scope="layer", print_fn=None)
    >>> small.get_layer("conv1").filters, small.get_layer("conv2").filters
    (8, 16)
    """
    ratio = checks.check_fraction(ratio, "ratio")
    if target not in TARGETS:
        raise ValueError(f"Argument `target` must be one of {TARGETS}, received: {target!r}.")
    model, groups, units = rank_channels(model, importance, data, scope, max_layer_ratio, round_to, exclude)
    measures = _measures(model, groups)
    count = shortest_prefix(units, lambda prefix: measures[target](removed_channels(prefix)), ratio, target,
                            max_layer_ratio)
    removed = removed_channels(units[:count])
    if print_fn is not None:
        reached = ", ".join(f"{measure(removed):.2%} of {name}" for name, measure in measures.items())
        print_fn(f"prune_channels: removed {reached} (asked: {ratio:.2%} of {target}, scope {scope!r}).")
    return remove_channels(model, {groups[i]: channels for i, channels in removed.items()})


def rank_channels(model, importance, data=None, scope="global", max_layer_ratio=0.9, round_to=None, exclude=()):
    """Scores the channels of a model's prunable groups and orders their removable steps, least important first.

    The first part of `prune_channels` (same arguments): a prefix of the
    returned steps is a removal that respects `max_layer_ratio`,
    `round_to`, `exclude` and the pinned channels.

    Returns:
        `(plain model, groups, steps)`: the model with tfsparse wrappers
        stripped, its prunable `ChannelGroup`s not excluded, and the sorted
        steps `(key, group index, step, channels)` (see
        `removed_channels`).

    Raises:
        ValueError, TypeError: as `prune_channels`.

    Example:

    >>> _, groups, steps = rank_channels(model, "l1", max_layer_ratio=0.5)
    >>> len(steps)  # one step per channel, up to half of 16 and of 32
    24
    >>> sum(len(channels) for channels in removed_channels(steps[:5]).values())
    5
    """
    max_layer_ratio = checks.check_fraction(max_layer_ratio, "max_layer_ratio")
    if scope not in SCOPES:
        raise ValueError(f"Argument `scope` must be one of {SCOPES}, received: {scope!r}.")
    round_to = 1 if round_to is None else checks.check_positive_int(round_to, "round_to")
    criterion = channel_criteria.get(importance)
    model = plain_model(model)
    excluded = _excluded(model, exclude)
    groups = [g for g in dependency_groups(model)
              if g.prunable and not excluded & {*g.producers, *g.members}]
    scores = criterion(model, groups, data) if groups else []
    normalize = scope == "global" and not criterion.comparable
    units = sorted(u for i, (group, s) in enumerate(zip(groups, scores))
                   for u in _units(i, group, s, scope, max_layer_ratio, round_to, normalize))
    return model, groups, units


def layer_scope_counts(groups, ratio, max_layer_ratio=0.9, round_to=1):
    """How many channels `prune_channels(ratio, scope="layer")` removes from each group.

    Args:
        groups: prunable `ChannelGroup`s.
        ratio: the fraction in [0, 1) of all their channels to remove.
        max_layer_ratio: the largest fraction of a group that may go.
        round_to: every group keeps all its channels or a multiple of it.

    Returns:
        A list of counts, one per group (pinned channels never count).

    Raises:
        ValueError: if `ratio` cannot be reached under `max_layer_ratio`.
    """
    units = sorted(u for i, group in enumerate(groups)
                   for u in _units(i, group, np.zeros(group.size), "layer", max_layer_ratio, round_to, False))
    share = _channel_share(groups)
    count = shortest_prefix(units, lambda prefix: share(removed_channels(prefix)), ratio, "channels", max_layer_ratio)
    removed = removed_channels(units[:count])
    return [len(removed.get(i, ())) for i in range(len(groups))]


def _excluded(model, exclude):
    """`exclude` as a set of layer names of `model`."""
    if isinstance(exclude, str) or not all(isinstance(name, str) for name in exclude):
        raise TypeError(f"Argument `exclude` must be a sequence of layer names, received: {exclude!r}.")
    names = {layer.name for layer in leaf_layers(model)}
    unknown = sorted(set(exclude) - names)
    if unknown:
        raise ValueError(f"Argument `exclude` names {unknown}, which are not layers of model {model.name!r}.")
    return set(exclude)


def _units(index, group, scores, scope, max_layer_ratio, round_to, normalize):
    """The removable steps of one group, lowest scores first: `(key, group index, step, channels)`.

    A step takes the group from one allowed width to the next narrower one
    (one channel, or down to the next multiple of `round_to`). Its key
    orders all steps: the score of its most important channel, divided by
    the group's mean absolute score if `normalize` (global scope), or the
    group's removed fraction after it (layer scope); within a group keys
    never decrease.
    """
    scores = np.asarray(scores, dtype=np.float64)
    scale = np.mean(np.abs(scores))
    normalized = scores / scale if normalize and scale > 0 else scores
    free = [int(c) for c in np.argsort(scores, kind="stable") if c not in group.pinned]
    limit = min(len(free), math.floor(max_layer_ratio * group.size + _TOLERANCE), group.size - 1)
    ends = [k for k in range(1, limit + 1) if (group.size - k) % round_to == 0]
    units = []
    for step, (start, end) in enumerate(zip([0, *ends], ends)):
        key = normalized[free[end - 1]] if scope == "global" else end / group.size
        units.append((float(key), index, step, tuple(free[start:end])))
    return units


def removed_channels(units):
    """Returns `{group index: sorted channels}` removed by a prefix of the steps of `rank_channels`."""
    removed = {}
    for _, index, _, channels in units:
        removed.setdefault(index, []).extend(channels)
    return {index: sorted(channels) for index, channels in removed.items()}


def _measures(model, groups):
    """`{target: fraction of it removed by {group index: channels}}` for every target."""
    cost = RemovalCost(model, groups)

    def share(position, whole):
        return lambda removed: cost.saved(removed)[position] / whole if whole else 0.0

    return {
        "channels": _channel_share(groups),
        "params": share(0, cost.parameters),
        "flops": share(1, cost.flops),
    }


def _channel_share(groups):
    """The fraction of the groups' channels that `{group index: channels}` removes."""
    total = sum(group.size for group in groups)
    return lambda removed: sum(map(len, removed.values())) / total if total else 0.0


def shortest_prefix(units, measure, ratio, target, max_layer_ratio):
    """Returns the fewest sorted steps whose removal reaches `ratio` of the target.

    Args:
        units: the steps of `rank_channels`.
        measure: `measure(prefix of units)` -> the fraction of the target
            removed; it must not decrease as the prefix grows.
        ratio: the fraction to reach.
        target, max_layer_ratio: named in the error.

    Raises:
        ValueError: if removing every unit does not reach it.
    """
    if ratio == 0:
        return 0
    reachable = measure(units)
    if reachable < ratio - _TOLERANCE:
        raise ValueError(
            f"Argument `ratio`={ratio} of {target} cannot be reached: at most {reachable:.2%} of the {target} "
            f"can be removed with `max_layer_ratio`={max_layer_ratio} and the pinned, excluded and rounded "
            f"channels kept; lower `ratio` or raise `max_layer_ratio`."
        )
    low, high = 0, len(units)  # measure(low) < ratio <= measure(high)
    while high - low > 1:
        middle = (low + high) // 2
        if measure(units[:middle]) >= ratio - _TOLERANCE:
            high = middle
        else:
            low = middle
    return high
