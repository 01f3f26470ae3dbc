"""The centripetal gradient transform: average the gradient within clusters, pull the weights to their cluster mean."""

import numpy as np
from keras import ops


def averaging_matrix(labels):
    """The matrix that averages the positions of each cluster: `x @ matrix` replaces each by its cluster's mean.

    Args:
        labels: a sequence of ints, one per position along a weight's
            channel axis: positions with the same label `>= 0` form one
            cluster; `-1` marks a position in no cluster.

    Returns:
        A float32 NumPy array of shape `(n, n)`, symmetric, each column
        summing to 1.

    Raises:
        ValueError: if a label is below -1.

    Example:

    >>> tfsparse.optimizers.averaging_matrix([0, -1, 0]).tolist()
    [[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.size and labels.min() < -1:
        raise ValueError(f"Argument `labels` must hold cluster labels >= 0 or -1, received: {labels.tolist()}.")
    same = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
    same |= np.eye(labels.size, dtype=bool)
    return (same / same.sum(axis=0, keepdims=True)).astype(np.float32)


def cluster_mean(x, labels, axis=-1):
    """Replaces every slice of `x` along `axis` by the mean of its cluster.

    One matrix product with `averaging_matrix(labels)` on the channel axis:
    a few ops whatever the number of clusters, and `n` multiply-adds per
    entry of `x` (`n` the axis length), negligible next to a convolution's
    own cost; for a Dense layer of thousands of units it is more than the
    layer's forward pass.

    Args:
        x: a tensor.
        labels: cluster labels along `axis` (see `averaging_matrix`).
        axis: the axis the labels index.

    Returns:
        A tensor of the shape of `x`.

    Example:

    >>> x = np.array([[1.0, 2.0, 5.0], [3.0, 4.0, 7.0]], dtype="float32")
    >>> ops.convert_to_numpy(tfsparse.optimizers.cluster_mean(x, [0, -1, 0])).tolist()
    [[3.0, 2.0, 3.0], [5.0, 4.0, 5.0]]
    """
    x = ops.convert_to_tensor(x)
    matrix = ops.convert_to_tensor(averaging_matrix(labels), dtype=x.dtype)
    if axis % len(x.shape) == len(x.shape) - 1:
        return ops.matmul(x, matrix)
    return ops.moveaxis(ops.matmul(ops.moveaxis(x, axis, -1), matrix), -1, axis)


def centripetal_gradient(gradient, weight, labels, strength, weight_decay=0.0, axis=-1):
    """The C-SGD gradient `M G + D W` of one weight whose channels are clustered.

    `M` averages the gradient within each cluster (so the channels of a
    cluster get one gradient and stop drifting apart); `D W` adds weight
    decay `weight_decay * W` and the pull `strength * (W - cluster mean of
    W)`. Computed as `mean(G - strength * W) + (weight_decay + strength) * W`,
    one cluster average. A channel in no cluster gets `G +
    weight_decay * W`. The difference of two channels of a cluster then
    follows `d <- d - lr * (weight_decay + strength) * d` (through the
    momentum), whatever the loss.

    Args:
        gradient: the loss gradient `G` of the weight.
        weight: the weight `W`.
        labels: cluster labels along `axis` (see `averaging_matrix`).
        strength: the centripetal strength `epsilon`.
        weight_decay: the L2 coefficient `eta` (gradient `eta * W`).
        axis: the weight's channel axis.

    Returns:
        The transformed gradient, of the shape of `gradient`.

    Example:

    >>> g = np.array([1.0, 3.0, 0.5])
    >>> w = np.array([0.2, 0.4, 1.0])
    >>> gc = tfsparse.optimizers.centripetal_gradient(g, w, [0, 0, -1], strength=0.5)
    >>> np.round(ops.convert_to_numpy(gc), 6).tolist()  # [2 - 0.05, 2 + 0.05, 0.5]
    [1.95, 2.05, 0.5]
    """
    pulled = cluster_mean(gradient - strength * weight, labels, axis)
    return pulled + (weight_decay + strength) * weight
