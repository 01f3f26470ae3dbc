"""Masks that keep the largest scores: exact top-k, blocks, and m-by-n."""

import tensorflow as tf


def num_pruned(sparsity, size):
    """Returns `round(sparsity * size)` as an int32 tensor: the exact prune count."""
    return tf.cast(tf.round(tf.cast(sparsity, tf.float64) * size), tf.int32)


def topk_mask(scores, sparsity):
    """Keeps the `n - round(sparsity * n)` highest scores of a tensor.

    Ties are broken by position, so the number of kept entries never depends
    on the values: sparsity is exact.

    Args:
        scores: a float tensor of any shape (e.g. `|w|`).
        sparsity: a scalar in [0, 1), Python float or tensor.

    Returns:
        A tensor of `scores.dtype` and shape, 1.0 where kept, 0.0 elsewhere.
    """
    flat = tf.reshape(scores, [-1])
    size = flat.shape[0]
    keep = size - num_pruned(sparsity, size)
    _, indices = tf.math.top_k(flat, k=keep, sorted=False)
    mask = tf.scatter_nd(indices[:, None], tf.ones_like(indices, scores.dtype), [size])
    return tf.reshape(mask, tf.shape(scores))


def block_mask(scores, sparsity, block_size, pooling="AVG"):
    """Top-k over blocks of a 2-D score matrix, each block kept or pruned whole.

    Args:
        scores: a rank-2 float tensor.
        sparsity: fraction of *blocks* to prune.
        block_size: `(rows, cols)` of a block; the matrix is padded with
            zeros to a whole number of blocks.
        pooling: `"AVG"` or `"MAX"`: how a block's score is pooled.

    Returns:
        A mask of the shape of `scores`.
    """
    rows, cols = scores.shape
    br, bc = block_size
    pr, pc = -rows % br, -cols % bc
    padded = tf.pad(scores, [[0, pr], [0, pc]])
    blocks = tf.reshape(padded, [(rows + pr) // br, br, (cols + pc) // bc, bc])
    pool = tf.reduce_mean if pooling == "AVG" else tf.reduce_max
    block_scores = pool(blocks, axis=[1, 3])
    kept = topk_mask(block_scores, sparsity)
    full = tf.repeat(tf.repeat(kept, br, axis=0), bc, axis=1)
    return full[:rows, :cols]


def m_by_n_mask(scores, m_by_n):
    """Prunes `m` of every `n` consecutive entries along the input-channel axis.

    The input-channel axis of a Dense or convolution kernel is axis -2
    (TFLite's innermost axis), as in TFMOT. The axis is zero-padded to a
    multiple of `n`.

    Args:
        scores: a float tensor of rank >= 2.
        m_by_n: `(m, n)`, e.g. `(2, 4)`: 2 zeros in each group of 4.

    Returns:
        A mask of the shape of `scores`.
    """
    m, n = m_by_n
    moved = tf.experimental.numpy.moveaxis(scores, -2, -1)
    shape = tf.shape(moved)
    channels = moved.shape[-1]
    pad = -channels % n
    flat = tf.reshape(moved, [-1, channels])
    groups = tf.reshape(tf.pad(flat, [[0, 0], [0, pad]], constant_values=-1.0), [-1, n])
    _, indices = tf.math.top_k(groups, k=n - m, sorted=False)
    kept = tf.reduce_sum(tf.one_hot(indices, n, dtype=scores.dtype), axis=1)
    kept = tf.reshape(kept, [-1, channels + pad])[:, :channels]
    return tf.experimental.numpy.moveaxis(tf.reshape(kept, shape), -1, -2)


def global_topk_masks(scores, sparsity):
    """Keeps the highest scores across several tensors at once.

    One threshold for all: exactly `round(sparsity * total)` entries of the
    concatenation are pruned, wherever they are.

    Args:
        scores: a list of float tensors.
        sparsity: scalar fraction to prune overall.

    Returns:
        A list of masks, one per input, of matching shapes.
    """
    flat = tf.concat([tf.reshape(s, [-1]) for s in scores], axis=0)
    mask = topk_mask(flat, sparsity)
    sizes = [s.shape.num_elements() for s in scores]
    return [tf.reshape(part, tf.shape(s)) for part, s in zip(tf.split(mask, sizes), scores)]
