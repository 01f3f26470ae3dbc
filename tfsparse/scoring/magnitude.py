"""Masks that keep the largest scores: exact top-k, blocks, and m-by-n."""

import numpy as np
import tensorflow as tf


def num_pruned(sparsity, size):
    """Returns `round(sparsity * size)` as an int32 tensor: the exact prune count."""
    return tf.cast(tf.round(tf.cast(sparsity, tf.float64) * size), tf.int32)


def capped_sparsity(sparsity, size, min_kept=1):
    """Lowers `sparsity`, if needed, so that pruning `size` entries keeps `min_kept`.

    `num_pruned(capped_sparsity(s, n, m), n)` is `min(round(s * n), n - m)`
    (and 0 when `n <= m`): exact while at least `m` entries remain, as TFMOT
    keeps at least one weight of every pruned tensor.

    Args:
        sparsity: a scalar in [0, 1], Python float or tensor.
        size: the number of entries, a Python int.
        min_kept: how many entries must remain, a Python int >= 0.

    Returns:
        A float64 scalar tensor.

    Example:

    >>> int(num_pruned(capped_sparsity(0.99, 40), 40))  # round(39.6) would prune all 40
    39
    """
    ceiling = max(size - min_kept, 0) / max(size, 1)
    return tf.minimum(tf.cast(sparsity, tf.float64), ceiling)


def topk_mask(scores, sparsity, min_kept=0):
    """Keeps the `n - round(sparsity * n)` highest scores of a tensor.

    Ties are broken by position, so the number of kept entries never depends
    on the values: sparsity is exact, except that at least `min_kept`
    entries are kept (see `capped_sparsity`).

    Args:
        scores: a float tensor of any shape (e.g. `|w|`).
        sparsity: a scalar in [0, 1], Python float or tensor.
        min_kept: the fewest entries to keep (magnitude pruning keeps 1).

    Returns:
        A tensor of `scores.dtype` and shape, 1.0 where kept, 0.0 elsewhere.

    Example:

    >>> topk_mask(tf.constant([0.3, 0.1, 0.2, 0.4]), 0.5).numpy()
    array([1., 0., 0., 1.], dtype=float32)
    """
    flat = tf.reshape(scores, [-1])
    size = flat.shape[0]
    keep = size - num_pruned(capped_sparsity(sparsity, size, min_kept), size)
    return tf.reshape(_keep_highest(flat, keep), tf.shape(scores))


def _keep_highest(flat, keep):
    """1.0 at the `keep` highest entries of a vector (ties by position), 0.0 elsewhere."""
    _, indices = tf.math.top_k(flat, k=keep, sorted=False)
    return tf.scatter_nd(indices[:, None], tf.ones_like(indices, flat.dtype), tf.shape(flat))


def block_mask(scores, sparsity, block_size, pooling="AVG"):
    """Prunes whole blocks of a 2-D score matrix, lowest block scores first.

    The matrix is tiled with `block_size` blocks from the top left; when a
    side is not a multiple of the block side, the blocks on that edge are
    partial (they hold fewer real entries). A block's score pools its real
    entries only: their mean (`"AVG"`) or their maximum (`"MAX"`), so a
    partial block is neither favoured nor penalized for its size.

    Sparsity is counted in entries, not blocks. Blocks are taken in
    increasing score order (equal scores by position, row-major), and the
    pruned blocks are the prefix of that order whose number of real
    entries is closest to the target `round(sparsity * rows * cols)`
    (between two equally close prefixes, the shorter one), so the pruned
    count is within half a block of the target.

    Args:
        scores: a rank-2 float tensor with a static shape.
        sparsity: fraction of the entries to prune, a scalar in [0, 1]
            (Python float or tensor).
        block_size: `(rows, cols)` of a block.
        pooling: `"AVG"` or `"MAX"`: how a block's score is pooled.

    Returns:
        A 0/1 mask of the shape and dtype of `scores`.

    Example:

    >>> block_mask(tf.constant([[1., 1., 9.], [1., 1., 9.]]), 0.5, (2, 2)).numpy()
    array([[0., 0., 1.],
           [0., 0., 1.]], dtype=float32)
    """
    rows, cols = scores.shape
    sizes = _block_sizes(rows, cols, block_size)
    block_scores = tf.reshape(_pooled_blocks(scores, block_size, pooling, sizes), [-1])
    order = tf.argsort(block_scores, stable=True)
    pruned_so_far = tf.concat([[0], tf.cumsum(tf.gather(sizes.reshape(-1), order))], axis=0)
    count = tf.argmin(tf.abs(pruned_so_far - num_pruned(sparsity, rows * cols)), output_type=tf.int32)
    pruned_in_order = tf.range(tf.size(order)) < count
    kept = tf.scatter_nd(order[:, None], tf.cast(tf.logical_not(pruned_in_order), scores.dtype), tf.shape(order))
    kept = tf.reshape(kept, _grid_shape(rows, cols, block_size))
    br, bc = block_size
    return tf.repeat(tf.repeat(kept, br, axis=0), bc, axis=1)[:rows, :cols]


def _grid_shape(rows, cols, block_size):
    """`(block rows, block columns)` of a `rows x cols` matrix tiled with `block_size`."""
    return -(-rows // block_size[0]), -(-cols // block_size[1])


def _block_sizes(rows, cols, block_size):
    """Number of real entries in each block, an int array of the block grid's shape."""
    block_rows, block_cols = _grid_shape(rows, cols, block_size)
    br, bc = block_size
    heights = np.minimum(br, rows - br * np.arange(block_rows))
    widths = np.minimum(bc, cols - bc * np.arange(block_cols))
    return np.outer(heights, widths).astype(np.int32)


def _pooled_blocks(scores, block_size, pooling, sizes):
    """Each block's mean or maximum over its real entries, shaped like the block grid."""
    rows, cols = scores.shape
    br, bc = block_size
    pr, pc = -rows % br, -cols % bc
    # Padding that can never win a maximum; it adds nothing to a sum.
    fill = scores.dtype.min if pooling == "MAX" else 0
    padded = tf.pad(scores, [[0, pr], [0, pc]], constant_values=fill)
    blocks = tf.reshape(padded, [(rows + pr) // br, br, (cols + pc) // bc, bc])
    if pooling == "MAX":
        return tf.reduce_max(blocks, axis=[1, 3])
    return tf.reduce_sum(blocks, axis=[1, 3]) / tf.constant(sizes, scores.dtype)


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


def global_topk_masks(scores, sparsity, min_kept=0):
    """Keeps the highest scores across several tensors at once.

    One threshold for all: exactly `round(sparsity * total)` entries of the
    concatenation are pruned, wherever they are, except that each tensor
    keeps at least its `min_kept` highest entries (then fewer are pruned if
    the count would leave less).

    Args:
        scores: a list of float tensors.
        sparsity: scalar fraction to prune overall.
        min_kept: the fewest entries to keep in each tensor (magnitude
            pruning keeps 1, so that no layer is cut off).

    Returns:
        A list of masks, one per input, of matching shapes.

    Example:

    >>> masks = global_topk_masks([tf.constant([5.0, 6.0]), tf.constant([0.1, 0.2])], 0.75, min_kept=1)
    >>> [m.numpy().tolist() for m in masks]
    [[0.0, 1.0], [0.0, 1.0]]
    """
    sizes = [s.shape.num_elements() for s in scores]
    floors = [min(min_kept, size) for size in sizes]
    parts = [tf.reshape(s, [-1]) for s in scores]
    if sum(floors):
        # Each tensor's `min_kept` highest entries outrank every other entry.
        infinity = tf.constant(float("inf"), scores[0].dtype)
        parts = [tf.where(_keep_highest(p, k) > 0, infinity, p) for p, k in zip(parts, floors)]
    flat = tf.concat(parts, axis=0)
    total = flat.shape[0]
    keep = tf.maximum(total - num_pruned(sparsity, total), sum(floors))
    mask = _keep_highest(flat, keep)
    return [tf.reshape(part, tf.shape(s)) for part, s in zip(tf.split(mask, sizes), scores)]
