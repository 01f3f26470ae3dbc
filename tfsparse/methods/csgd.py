"""Centripetal SGD: cluster the channels, train the clusters into identical filters, trim exactly.

Ding et al., "Centripetal SGD for Pruning Very Deep Convolutional Networks
with Complicated Structure" (CVPR 2019) and "Manipulating Identical Filter
Redundancy for Efficient Pruning on Deep and Complicated CNN" (2021).

    clusters = tfsparse.csgd.clusters(model, 0.5)
    model.compile(tfsparse.optimizers.CentripetalSGD(clusters, 0.05, centripetal_strength=...), loss)
    model.fit(...)
    small = tfsparse.csgd.trim(model, clusters)
"""

import math
import numbers
import warnings
from collections.abc import Mapping

import keras
import numpy as np

from tfsparse import checks
from tfsparse.methods.finetune import CALIBRATION_BATCHES, recalibrate_batch_norm
from tfsparse.methods.structured import layer_scope_counts
from tfsparse.optimizers import CentripetalSGD
from tfsparse.optimizers.centripetal_sgd import VECTOR_STRENGTH
from tfsparse.surgery import dependency_groups, merge_channels
from tfsparse.surgery.graph import CONSUMER, PRODUCER, plain_model
from tfsparse.walk import weight_named

METHODS = ("kmeans", "even")
# Beyond this, the kernels' pull (10x the vectors') would overshoot in one step.
_MAX_VECTOR_PULL = VECTOR_STRENGTH


def clusters(model, ratio, method="kmeans", seed=None, round_to=None):
    """Partitions the channels of every prunable channel group into clusters, once, from the current weights.

    Each prunable `ChannelGroup` of `tfsparse.surgery.dependency_groups`
    loses `ratio` of its channels as `prune_channels(ratio, scope="layer")`
    counts them: its free channels are split into `size - removed - pinned`
    clusters, by scikit-learn's `KMeans` on the flattened filters of all the
    group's producers (so the addends of a residual sum share one cluster
    list), or evenly in index order. Pinned channels (model outputs, ...)
    are in no cluster and are never merged.

    The result is a plain JSON-serializable mapping:
    `"clusters"`: `{first producer of the group: [[group channels], ...]}`
    (a group's channels are its first producer's output channels when it
    makes them all, the usual case), the channel kept by the trim first;
    `"weights"`: `{variable path: {"layer", "weight", "axis", "labels"}}` for
    every weight that carries the clustered channels (kernels, biases,
    BatchNorm parameters and moving statistics, depthwise kernels): one
    cluster label per position along `axis`, `-1` for a channel alone. Pass it
    to `tfsparse.optimizers.CentripetalSGD`, `tfsparse.csgd.trim` and
    `tfsparse.callbacks.ClusterMonitor`.

    Args:
        model: a built functional or Sequential `keras.Model`.
        ratio: the fraction in [0, 1) of the prunable channels to remove, or a
            mapping `{producer name: width}` (the number of channels the
            producer's group keeps, pinned ones included) or `{producer name:
            [[group channels], ...]}` (given clusters); unnamed groups are not
            clustered.
        method: `"kmeans"` or `"even"`.
        seed: the KMeans seed (drawn from Python's `random` if None).
        round_to: with a float `ratio`, every group keeps all its channels
            or a multiple of `round_to`.

    Returns:
        A dict `{"clusters": ..., "weights": ...}`.

    Raises:
        TypeError: if `model` is not a functional or Sequential model, or
            `ratio` has the wrong type.
        ValueError: for an unknown `method`, a `ratio` outside [0, 1) or
            that cannot be reached, a name that is not a producer of a
            prunable group, a width out of range, or given clusters with a
            pinned, repeated or out-of-range channel.

    Example:

    >>> plan = tfsparse.csgd.clusters(model, 0.5, seed=0)
    >>> {name: len(c) for name, c in plan["clusters"].items()}
    {'conv1': 8, 'conv2': 16}
    >>> tfsparse.csgd.clusters(model, {"conv1": [[0, 1], [2, 5, 7]]})["weights"]["conv1/bias"]["labels"][:8]
    [0, 0, 1, -1, -1, 1, -1, 1]
    """
    if method not in METHODS:
        raise ValueError(f"Argument `method` must be one of {METHODS}, received: {method!r}.")
    seed = checks.resolve_seed(seed)
    model = plain_model(model)
    groups = [g for g in dependency_groups(model) if g.prunable]
    if isinstance(ratio, Mapping):
        targets = _named_targets(groups, ratio)
    else:
        ratio = checks.check_fraction(ratio, "ratio")
        round_to = 1 if round_to is None else checks.check_positive_int(round_to, "round_to")
        counts = layer_scope_counts(groups, ratio, round_to=round_to)
        targets = [(g, g.size - n) for g, n in zip(groups, counts) if n]
    chosen = {}
    for group, target in targets:
        if isinstance(target, int):
            chosen[group] = _partition(model, group, target - len(group.pinned), method, seed)
        else:
            chosen[group] = _checked_clusters(group, target)
    return {
        "clusters": {group.producers[0]: lists for group, lists in chosen.items()},
        "weights": _weight_labels(model, chosen),
    }


def _named_targets(groups, targets):
    """`[(group, width or clusters)]` from a `{producer name: width or clusters}` mapping."""
    group_of = {name: g for g in groups for name in g.producers}
    result = []
    for name, target in targets.items():
        if name not in group_of:
            raise ValueError(
                f"Argument `ratio` names {name!r}, which is not a producer of a prunable channel group; "
                f"producers: {sorted(group_of)}."
            )
        group = group_of[name]
        if isinstance(target, numbers.Integral) and not isinstance(target, bool):
            if not len(group.pinned) < target <= group.size:
                raise ValueError(
                    f"Argument `ratio` asks {name!r} to keep {target} channels; its group has {group.size} "
                    f"channels, {len(group.pinned)} pinned: allowed {len(group.pinned) + 1} to {group.size}."
                )
            if target < group.size:
                result.append((group, int(target)))
        elif isinstance(target, (list, tuple)):
            result.append((group, target))
        else:
            raise TypeError(
                f"Argument `ratio` must map producer names to widths (int) or lists of clusters, "
                f"received {target!r} for {name!r}."
            )
    return result


def _checked_clusters(group, given):
    """Given clusters of group channels, checked, sorted, the kept (smallest) channel first."""
    try:
        lists = [sorted(int(c) for c in cluster) for cluster in given]
    except (TypeError, ValueError):
        raise TypeError(f"Argument `ratio`: clusters must be lists of channel indices, received: {given!r}.") from None
    channels = [c for cluster in lists for c in cluster]
    bad = sorted({c for c in channels if not 0 <= c < group.size} | {c for c in channels if c in group.pinned}
                 | {c for c in channels if channels.count(c) > 1})
    if bad or not all(lists):
        raise ValueError(
            f"Argument `ratio`: the clusters of {group.producers[0]!r} must be non-empty lists of distinct, "
            f"unpinned channels from 0 to {group.size - 1}; channels {bad} are not (pinned: {sorted(group.pinned)})."
        )
    return sorted(lists)


def _partition(model, group, count, method, seed):
    """`count` clusters of the group's free channels, each sorted, in order of their first channel."""
    free = np.asarray([c for c in range(group.size) if c not in group.pinned])
    if count >= len(free):
        return [[int(c)] for c in free]
    if method == "even":
        parts = np.array_split(free, count)
    else:
        from sklearn.cluster import KMeans  # imported here: scikit-learn is slow to import

        labels = KMeans(n_clusters=count, n_init="auto", random_state=seed).fit(_filters(model, group)[free]).labels_
        parts = [free[labels == k] for k in range(count)]
    return sorted(sorted(int(c) for c in part) for part in parts if len(part))


def _filters(model, group):
    """One row per group channel: its flattened filters in every producer of the group (biases left out)."""
    blocks = []
    for piece in group.slices:
        if piece.role != PRODUCER or piece.weight == "bias":
            continue
        array = keras.ops.convert_to_numpy(weight_named(model.get_layer(piece.layer), piece.weight))
        rows = np.moveaxis(array, piece.axis, 0).reshape(array.shape[piece.axis], -1)
        width = max(map(len, piece.positions)) * rows.shape[1]
        block = np.zeros((group.size, width), dtype=np.float64)
        for channel, positions in enumerate(piece.positions):
            block[channel, :len(positions) * rows.shape[1]] = rows[list(positions)].reshape(-1)
        blocks.append(block)
    return np.concatenate(blocks, axis=1)


def _weight_labels(model, chosen):
    """`{variable path: {layer, weight, axis, labels}}` of every weight that carries clustered channels."""
    weights = {}
    for group, lists in chosen.items():
        for piece in group.slices:
            if piece.role == CONSUMER:
                continue
            variable = weight_named(model.get_layer(piece.layer), piece.weight)
            entry = weights.setdefault(variable.path, {
                "layer": piece.layer, "weight": piece.weight, "axis": piece.axis,
                "labels": [-1] * int(variable.shape[piece.axis])})
            labels = entry["labels"]
            label = max(labels) + 1
            for cluster in lists:
                if len(cluster) < 2:
                    continue
                widths = {len(piece.positions[c]) for c in cluster}
                if len(widths) != 1:
                    raise ValueError(
                        f"The channels of a cluster of {group.producers[0]!r} reach {piece.layer}/{piece.weight} at "
                        f"{sorted(widths)} positions; they cannot be made identical."
                    )
                for j in range(widths.pop()):
                    for c in cluster:
                        labels[piece.positions[c][j]] = label
                    label += 1
    return weights


def distances(model, clusters):
    """The largest distance of a clustered channel to its cluster's kept channel, per layer.

    For every weight of `clusters["weights"]` (kernels, biases, BatchNorm
    parameters and moving statistics), the Euclidean distance of each
    clustered channel's slice to the slice of the channel that `trim` keeps
    (the first of its cluster); a layer's figure is the largest over its
    weights. The trim is exact when all are ~0 (at float precision).

    Args:
        model: the model the clusters were made for (or a copy of it).
        clusters: the result of `tfsparse.csgd.clusters`.

    Returns:
        `{layer name: largest distance}`.

    Raises:
        TypeError: if `clusters` is not a clusters mapping.
        ValueError: if a clustered layer or weight is not in `model`.

    Example:

    >>> plan = tfsparse.csgd.clusters(model, {"conv1": [[0, 1]]})
    >>> kernel = model.get_layer("conv1").kernel
    >>> _ = kernel.assign(ops.concatenate([kernel[..., :1], kernel[..., :1], kernel[..., 2:]], axis=-1))
    >>> _ = model.get_layer("conv1").bias.assign(np.arange(16.0))
    >>> tfsparse.csgd.distances(model, plan)  # the biases of channels 0 and 1 still differ by 1
    {'conv1': 1.0}
    """
    _check_clusters(clusters)
    model = plain_model(model)
    found = {}
    for entry in clusters["weights"].values():
        array = keras.ops.convert_to_numpy(weight_named(model.get_layer(entry["layer"]), entry["weight"]))
        rows = np.moveaxis(array, entry["axis"], 0).reshape(len(entry["labels"]), -1).astype(np.float64)
        labels = np.asarray(entry["labels"])
        clustered = np.flatnonzero(labels >= 0)
        names, first = np.unique(labels[clustered], return_index=True)
        kept = clustered[first][np.searchsorted(names, labels[clustered])]
        largest = float(np.sqrt(np.square(rows[clustered] - rows[kept]).sum(axis=1)).max(initial=0.0))
        found[entry["layer"]] = max(found.get(entry["layer"], 0.0), largest)
    return found


def trim(model, clusters, tolerance=1e-5):
    """Keeps one channel per cluster: the exact trim of a model trained with `CentripetalSGD`.

    Through `tfsparse.surgery.merge_channels`: the first channel of each
    cluster is kept (with its bias, BatchNorm entries and moving
    statistics), the consumers' input slices of the others are added to
    it. When the channels of every cluster are identical, the trimmed model
    computes the same function; a warning gives the largest within-cluster
    distance when it is above `tolerance`.

    Args:
        model: the trained model the clusters were made for.
        clusters: the result of `tfsparse.csgd.clusters`.
        tolerance: the distance to the kept channel (see `distances`) above which
            to warn.

    Returns:
        A new, narrower, uncompiled `keras.Model`.

    Raises:
        TypeError: if `clusters` is not a clusters mapping.
        ValueError: if a clustered producer is not the first producer of a
            channel group of `model`.

    Example:

    >>> plan = tfsparse.csgd.clusters(model, 0.25, method="even")
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     small = tfsparse.csgd.trim(model, plan)
    >>> small.get_layer("conv1").filters, small.get_layer("conv3").filters
    (12, 24)
    >>> any("not yet identical" in str(w.message) for w in caught)  # untrained: the clusters differ
    True
    """
    _check_clusters(clusters)
    model = plain_model(model)
    found = distances(model, clusters)
    if found and max(found.values()) > tolerance:
        worst = max(found, key=found.get)
        warnings.warn(
            f"tfsparse.csgd.trim: the clusters are not yet identical: the largest distance to the kept channel is "
            f"{found[worst]:.3g} (layer {worst!r}, tolerance {tolerance:g}); the trimmed model will differ from "
            f"the trained one. Train longer or with a stronger `centripetal_strength`.",
            stacklevel=2,
        )
    groups = {g.producers[0]: g for g in dependency_groups(model)}
    unknown = sorted(set(clusters["clusters"]) - set(groups))
    if unknown:
        raise ValueError(
            f"Argument `clusters` names {unknown}, which are not first producers of channel groups of model "
            f"{model.name!r}: the clusters were made for another model."
        )
    return merge_channels(model, {groups[name]: lists for name, lists in clusters["clusters"].items()})


def _is_clusters(value):
    """Whether `value` has the form of `clusters`' result."""
    return (isinstance(value, Mapping) and isinstance(value.get("clusters"), Mapping)
            and isinstance(value.get("weights"), Mapping))


def _check_clusters(clusters):
    if not _is_clusters(clusters):
        raise TypeError(
            f"Argument `clusters` must be the mapping returned by `tfsparse.csgd.clusters(model, ...)`, "
            f"received: {clusters!r:.200} (of type {type(clusters).__name__})."
        )


def strength(steps, learning_rate, momentum=0.9, shrink=1e-6):
    """The centripetal strength that makes the clusters identical within a step budget.

    The difference of two channels of a cluster follows a linear recurrence
    whatever the loss: SGD with (Nesterov, Keras') momentum on `h * d^2 / 2`,
    `h` the strength (0.1x for biases and BatchNorm parameters, which are
    therefore the slowest). It shrinks by about `learning_rate * h / (1 -
    momentum)` of itself per step while that is small; stronger pulls
    oscillate through the momentum. This returns the smallest strength whose
    slowest cluster distances shrink by about `shrink` (within a small
    factor) in `steps` steps, from the recurrence's spectral radius (weight
    decay, which helps, is left out). A warning says when the budget cannot
    reach `shrink`: the strength is then capped where the kernels' pull
    would overshoot in one step. The BatchNorm moving statistics (momentum
    0.99) agree only some hundred steps after the filters: leave them steps,
    or re-estimate them.

    Args:
        steps: the number of steps the pull has, > 0.
        learning_rate: the (mean) learning rate over those steps, > 0.
        momentum: the SGD momentum, in [0, 1).
        shrink: the factor in (0, 1) by which the distances must shrink.

    Returns:
        A float strength for `CentripetalSGD(centripetal_strength=...)`.

    Raises:
        ValueError: for a bad argument.

    Example:

    >>> round(tfsparse.csgd.strength(steps=300, learning_rate=0.05), 3)
    0.541
    >>> tfsparse.csgd.strength(steps=3000, learning_rate=0.05) < 0.1
    True
    """
    steps = checks.check_positive_int(steps, "steps")
    momentum = checks.check_fraction(momentum, "momentum")
    for argument, value in (("learning_rate", learning_rate), ("shrink", shrink)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
            raise ValueError(f"Argument `{argument}` must be a positive number, received: {value!r}.")
    if not shrink < 1:
        raise ValueError(f"Argument `shrink` must be below 1, received: {shrink!r}.")

    def radius(pull):  # of the recurrence of (d, velocity) under Keras' Nesterov update, for lr * h = pull
        return max(abs(np.roots([1.0, -(1 + momentum) * (1 - pull), momentum * (1 - pull)])))

    goal = math.log(shrink) / steps
    low, high = 0.0, _MAX_VECTOR_PULL
    if math.log(radius(high)) > goal:
        warnings.warn(
            f"tfsparse.csgd.strength: {steps} steps are too few to shrink the cluster distances by {shrink:g} "
            f"(at most by {radius(high) ** steps:.3g}); train longer.",
            stacklevel=2,
        )
        return high / (VECTOR_STRENGTH * learning_rate)
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (low, middle) if math.log(radius(middle)) <= goal else (middle, high)
    return high / (VECTOR_STRENGTH * learning_rate)


def widen(build, width, target_width, method="kmeans", seed=None, **kwargs):
    """"Train wider, then squeeze": a wide model and the clusters that trim it to a narrower width.

    Args:
        build: a model function that takes `width` (e.g.
            `tfsparse.models.resnet20`) and names its layers the same at every
            width.
        width: the wide model's width multiplier.
        target_width: the width multiplier to trim it to.
        method: `"kmeans"` or `"even"` (see `clusters`).
        seed: the KMeans seed.
        **kwargs: other arguments of `build` (`input_shape`, ...).

    Returns:
        `(model, clusters)`: the wide model (`build(width=width)`) and
        clusters that give every channel group the width it has in
        `build(width=target_width)`.

    Raises:
        ValueError: if a group of the narrow model has no counterpart in the
            wide one or is wider.

    Example:

    >>> def mlp(width):
    ...     inputs = keras.Input((64,))
    ...     hidden = keras.layers.Dense(round(128 * width), activation="relu", name="fc")(inputs)
    ...     return keras.Model(inputs, keras.layers.Dense(10, name="logits")(hidden))
    >>> wide, plan = tfsparse.csgd.widen(mlp, 1.0, 0.25, method="even")  # e.g. tfsparse.models.resnet20
    >>> wide.get_layer("fc").units, len(plan["clusters"]["fc"])
    (128, 32)
    """
    model = build(width=width, **kwargs)
    narrow = build(width=target_width, **kwargs)
    widths = {g.producers[0]: g.size for g in dependency_groups(narrow) if g.prunable}
    return model, clusters(model, widths, method=method, seed=seed)


def csgd_prune(model, ratio, data, epochs, learning_rate=0.05, centripetal_strength=None, pull=(0.0, 0.75),
               method="kmeans", seed=None, loss=None, calibration_batches=CALIBRATION_BATCHES, callbacks=None,
               verbose=0):
    """The C-SGD recipe: cluster, train the clusters into identical channels, trim exactly.

    `model` is trained in place with `CentripetalSGD` (Nesterov momentum
    0.9, weight decay 1e-4, the learning rate on a cosine to 0 over
    `epochs`); its BatchNormalization statistics are then recomputed from
    the final weights (`recalibrate_batch_norm`: the moving averages of a
    cluster's channels agree only some hundred steps after their filters,
    the recomputed ones exactly), and it is trimmed with `trim`, without
    fine-tuning. By default the strength is chosen with `strength` so that
    the clusters are identical after three quarters of the steps, leaving
    the rest to train the collapsed network; `pull` moves that window (e.g.
    `(0.5, 0.875)` trains the full width for half the steps, unpulled, and
    pulls the clusters together over the next three eighths: the strength
    is then a `PiecewiseConstantDecay` schedule). With the paper's momentum 0.9
    the biases and BatchNorm parameters (pulled at 0.1x) close by at most
    about 10% a step: a pre-trained model needs some hundred steps for an
    exact trim (`trim` warns otherwise).

    Args:
        model: a built functional or Sequential `keras.Model` (usually
            trained).
        ratio: the fraction of channels to remove, a mapping (see
            `clusters`), or the clusters themselves (e.g. from `widen`).
        data: a finite `tf.data.Dataset` of `(x, y)` batches.
        epochs: training epochs, > 0.
        learning_rate: the initial learning rate.
        centripetal_strength: the pull (a float or a schedule of the step);
            None chooses it from the step budget and `pull`.
        pull: `(start, meet)`, fractions of the steps, `0 <= start < meet
            <= 1`: when the chosen pull begins and by when the clusters are
            identical (to 1e-6 of their distance). Only used when
            `centripetal_strength` is None.
        method: `"kmeans"` or `"even"`.
        seed: the clustering seed.
        loss: the training loss; defaults to sparse categorical
            cross-entropy on logits.
        calibration_batches: batches of `data` for the BatchNorm statistics
            after training; 0 keeps the moving averages.
        callbacks: more Keras callbacks for `fit` (e.g.
            `tfsparse.callbacks.ClusterMonitor(clusters)`).
        verbose: `fit` verbosity.

    Returns:
        `(trimmed model, clusters)`: the new, narrower, uncompiled model and
        the clusters used.

    Raises:
        ValueError: for a bad argument, or a `data` of unknown length
            without `centripetal_strength`.

    Example:

    >>> inputs = keras.Input((64,))
    >>> mlp = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Dense(32, name="fc")(inputs)))
    >>> data = tf.data.Dataset.from_tensor_slices((x.reshape(-1, 64), y)).batch(128)
    >>> import warnings
    >>> warnings.simplefilter("ignore")  # 2 steps are too few to make the clusters identical: it warns
    >>> small, plan = tfsparse.csgd_prune(mlp, 0.5, data, epochs=1)
    >>> small.get_layer("fc").units
    16
    """
    epochs = checks.check_positive_int(epochs, "epochs")
    pull = _check_pull(pull)
    plan = ratio if _is_clusters(ratio) else clusters(model, ratio, method=method, seed=seed)
    batches = int(data.cardinality()) if hasattr(data, "cardinality") else -1
    if batches < 0 and centripetal_strength is None:
        raise ValueError(
            "Argument `data` has an unknown number of batches: pass `centripetal_strength` (see "
            "`tfsparse.csgd.strength`) or a dataset of known length."
        )
    steps = max(epochs * batches, 1)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    if centripetal_strength is None:
        centripetal_strength = _strength_for_window(pull, steps, learning_rate)
    model.compile(CentripetalSGD(plan, schedule, centripetal_strength=centripetal_strength),
                  loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(data, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False)
    if calibration_batches:
        recalibrate_batch_norm(model, data, calibration_batches)
    return trim(model, plan), plan


def _check_pull(pull):
    """`pull` as two floats `0 <= start < meet <= 1`, or a ValueError naming it."""
    try:
        start, meet = (float(f) for f in pull)
    except (TypeError, ValueError):
        start = meet = None
    if start is None or not 0 <= start < meet <= 1:
        raise ValueError(
            f"Argument `pull` must be two fractions of the steps `(start, meet)` with 0 <= start < meet <= 1, "
            f"received: {pull!r}."
        )
    return start, meet


def _strength_for_window(pull, steps, learning_rate):
    """The strength (a float, or a schedule that is 0 before the window) that meets the clusters within `pull`."""
    start, meet = (round(steps * f) for f in pull)
    start = min(start, steps - 1)  # at least one step of pull, at a learning rate above 0
    meet = max(meet, start + 1)
    # The cosine learning rate over the window: its mean sets the pull, its peak (the window's first step) caps
    # it, where the kernels' pull would overshoot in one step.
    rates = learning_rate * 0.5 * (1 + np.cos(np.pi * np.arange(start, meet) / steps))
    value = min(strength(meet - start, float(np.mean(rates))), 1 / float(rates[0]))
    if start == 0:
        return value
    return keras.optimizers.schedules.PiecewiseConstantDecay([start], [0.0, value])
