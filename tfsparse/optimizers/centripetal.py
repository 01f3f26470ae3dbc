"""The centripetal gradient transform: average the gradient within clusters, pull the weights to their cluster mean."""

import numpy as np
from keras import ops


def segment_ids(labels):
    """Turns cluster labels along an axis into segment ids, one segment per unclustered position.

    Args:
        labels: a sequence of ints, one per position along a weight's
            channel axis: positions with the same label `>= 0` form one
            cluster; `-1` marks a position in no cluster.

    Returns:
        `(ids, num_segments)`: an int32 NumPy array of segment ids (the
        clusters first, then one segment per `-1`) and the number of segments.

    Raises:
        ValueError: if a label is below -1.

    Example:

    >>> ids, n = tfsparse.optimizers.segment_ids([0, -1, 0, 1, -1, 1])
    >>> ids.tolist(), n
    ([0, 2, 0, 1, 3, 1], 4)
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.size and labels.min() < -1:
        raise ValueError(f"Argument `labels` must hold cluster labels >= 0 or -1, received: {labels.tolist()}.")
    _, ids = np.unique(labels[labels >= 0], return_inverse=True)
    clustered = int(ids.max()) + 1 if ids.size else 0
    result = np.empty(labels.shape, dtype=np.int32)
    result[labels >= 0] = ids
    alone = np.flatnonzero(labels < 0)
    result[alone] = clustered + np.arange(alone.size)
    return result, clustered + alone.size


def cluster_mean(x, ids, num_segments, axis=-1):
    """Replaces every slice of `x` along `axis` by the mean of its segment.

    Vectorised (one segment sum and one gather), so the cost grows with the
    size of `x`, not with the number of clusters.

    Args:
        x: a tensor.
        ids: int segment ids, one per position along `axis` (see `segment_ids`).
        num_segments: the number of segments.
        axis: the axis the ids index.

    Returns:
        A tensor of the shape of `x`.

    Example:

    >>> x = np.array([[1.0, 2.0, 5.0], [3.0, 4.0, 7.0]])
    >>> ops.convert_to_numpy(tfsparse.optimizers.cluster_mean(x, [0, 1, 0], 2)).tolist()
    [[3.0, 2.0, 3.0], [5.0, 4.0, 5.0]]
    """
    moved = ops.moveaxis(ops.convert_to_tensor(x), axis, 0)
    ids = ops.convert_to_tensor(np.asarray(ids, dtype=np.int32))
    sums = ops.segment_sum(moved, ids, num_segments=num_segments)
    counts = ops.segment_sum(ops.ones_like(ids, dtype=moved.dtype), ids, num_segments=num_segments)
    means = sums / ops.reshape(counts, (-1,) + (1,) * (len(moved.shape) - 1))
    return ops.moveaxis(ops.take(means, ids, axis=0), 0, axis)


def centripetal_gradient(gradient, weight, ids, num_segments, strength, weight_decay=0.0, axis=-1):
    """The C-SGD gradient `M G + D W` of one weight whose channels are clustered.

    `M` averages the gradient within each cluster (so the channels of a
    cluster get one gradient and stop drifting apart); `D W` adds weight
    decay `weight_decay * W` and the pull `strength * (W - cluster mean of
    W)`. Computed as `mean(G - strength * W) + (weight_decay + strength) * W`,
    one cluster average. A channel alone in its segment gets `G +
    weight_decay * W`. The difference of two channels of a cluster then
    follows `d <- d - lr * (weight_decay + strength) * d` (through the
    momentum), whatever the loss.

    Args:
        gradient: the loss gradient `G` of the weight.
        weight: the weight `W`.
        ids: int segment ids along `axis` (see `segment_ids`).
        num_segments: the number of segments.
        strength: the centripetal strength `epsilon`.
        weight_decay: the L2 coefficient `eta` (gradient `eta * W`).
        axis: the weight's channel axis.

    Returns:
        The transformed gradient, of the shape of `gradient`.

    Example:

    >>> g = np.array([1.0, 3.0, 0.5])
    >>> w = np.array([0.2, 0.4, 1.0])
    >>> gc = tfsparse.optimizers.centripetal_gradient(g, w, [0, 0, 1], 2, strength=0.5)
    >>> np.round(ops.convert_to_numpy(gc), 6).tolist()  # [2 - 0.05, 2 + 0.05, 0.5]
    [1.95, 2.05, 0.5]
    """
    pulled = cluster_mean(gradient - strength * weight, ids, num_segments, axis)
    return pulled + (weight_decay + strength) * weight
