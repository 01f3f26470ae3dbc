"""Masks that keep the largest scores: exact top-k, blocks, and m-by-n."""

import numpy as np
import tensorflow as tf

from tfsparse import keras_internals


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


def topk_mask(scores, sparsity, min_kept=0, dtype=None):
    """Keeps the `n - round(sparsity * n)` highest scores of a tensor.

    Ties are broken by position, so the number of kept entries never depends
    on the values: sparsity is exact, except that at least `min_kept`
    entries are kept (see `capped_sparsity`).

    Args:
        scores: a float tensor of any shape (e.g. `|w|`).
        sparsity: a scalar in [0, 1], Python float or tensor.
        min_kept: the fewest entries to keep (magnitude pruning keeps 1).
        dtype: the mask's dtype, `scores.dtype` by default; `tf.bool`
            saves the passes that convert a boolean mask.

    Returns:
        A tensor of `scores`' shape, 1 (True) where kept, 0 elsewhere.

    Example:

    >>> topk_mask(tf.constant([0.3, 0.1, 0.2, 0.4]), 0.5).numpy()
    array([1., 0., 0., 1.], dtype=float32)
    """
    flat = tf.reshape(scores, [-1])
    size = flat.shape[0]
    keep = size - num_pruned(capped_sparsity(sparsity, size, min_kept), size)
    return tf.cast(tf.reshape(keep_highest(flat, keep), tf.shape(scores)), dtype or scores.dtype)


def keep_highest(values, keep):
    """True at the `keep` highest entries of each row (last axis), False elsewhere.

    Linear time: the `keep`-th highest value of each row is the threshold,
    every entry above it is kept, and of the entries equal to it the first
    ones by position fill the rest (ties by position, as `tf.math.top_k`).

    Args:
        values: a float tensor of rank >= 1 with a static last dimension.
        keep: how many entries to keep in every row, an int32 scalar in
            `[0, values.shape[-1]]`.

    Returns:
        A boolean tensor of `values`' shape.

    Example:

    >>> keep_highest(tf.constant([[0.3, 0.1, 0.3], [0.1, 0.2, 0.2]]), 2).numpy()
    array([[ True, False,  True],
           [False,  True,  True]])
    """
    threshold = kth_highest(values, keep)
    at_least = values >= threshold
    # Most updates have no partial tie (one entry equals the threshold);
    # then the running count of ties is not needed.
    no_partial_tie = tf.reduce_all(tf.equal(tf.reduce_sum(tf.cast(at_least, tf.int32), axis=-1), keep))
    return tf.cond(no_partial_tie, lambda: at_least, lambda: _first_ties(values, threshold, keep))


def _first_ties(values, threshold, keep):
    """True above `threshold`, and at the first entries equal to it by position, `keep` in all per row."""
    above = values > threshold
    ties = tf.equal(values, threshold)
    room = keep - tf.reduce_sum(tf.cast(above, tf.int32), axis=-1, keepdims=True)
    return tf.logical_or(above, tf.logical_and(ties, tf.cumsum(tf.cast(ties, tf.int32), axis=-1) <= room))


def kth_highest(values, keep):
    """The `keep`-th highest value of each row (the highest when `keep` is 0), with a last axis of 1.

    `NthElement` selects in linear time (`tf.math.top_k` with a large `k`
    sorts); it has no other public name, and no XLA kernel, so under XLA
    the value is found by bisection instead.
    """
    if keras_internals.in_xla_compilation():
        return _kth_highest_by_bisection(values, keep)
    size = values.shape[-1]
    return tf.raw_ops.NthElement(input=values, n=tf.clip_by_value(size - keep, 0, size - 1))[..., None]


def _kth_highest_by_bisection(values, keep):
    """`kth_highest` with one counting pass per bit of the dtype (XLA fuses each pass)."""
    keys = _ordered_keys(values)
    key_type = keys.dtype
    enough = tf.maximum(keep, 1)

    def halve(low, high):
        # The upper midpoint, computed without overflow.
        mid = tf.bitwise.bitwise_or(low, high) - tf.bitwise.right_shift(tf.bitwise.bitwise_xor(low, high), 1)
        found = tf.reduce_sum(tf.cast(keys >= mid, tf.int32), axis=-1, keepdims=True) >= enough
        return tf.where(found, mid, low), tf.where(found, high, mid - 1)

    bounds = [tf.fill(tf.concat([tf.shape(keys)[:-1], [1]], 0), tf.constant(bound, key_type))
              for bound in (key_type.min, key_type.max)]
    low, _ = tf.while_loop(
        lambda low, high: tf.reduce_any(low < high), halve, bounds, maximum_iterations=8 * key_type.size
    )
    return tf.bitcast(_flip_negative(low), values.dtype)


def _ordered_keys(values):
    """Integers of the width of `values`' dtype, in the order of the values (-0.0 counts as 0.0)."""
    key_type = {2: tf.int16, 4: tf.int32, 8: tf.int64}[values.dtype.size]
    values = tf.where(tf.equal(values, 0), tf.zeros_like(values), values)
    return _flip_negative(tf.bitcast(values, key_type))


def _flip_negative(bits):
    """Reverses the order of the negative floats' bit patterns (its own inverse)."""
    return tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, bits.dtype.max), bits)


def block_mask(scores, sparsity, block_size, pooling="AVG", dtype=None):
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

    The selection takes linear time when every block is whole (each side a
    multiple of the block side); partial edge blocks need a sort of the
    blocks (not of the entries).

    Args:
        scores: a rank-2 float tensor with a static shape.
        sparsity: fraction of the entries to prune, a scalar in [0, 1]
            (Python float or tensor).
        block_size: `(rows, cols)` of a block.
        pooling: `"AVG"` or `"MAX"`: how a block's score is pooled.
        dtype: the mask's dtype, `scores.dtype` by default (or `tf.bool`).

    Returns:
        A 0/1 mask of the shape of `scores`.

    Example:

    >>> block_mask(tf.constant([[1., 1., 9.], [1., 1., 9.]]), 0.5, (2, 2)).numpy()
    array([[0., 0., 1.],
           [0., 0., 1.]], dtype=float32)
    """
    rows, cols = scores.shape
    sizes = _block_sizes(rows, cols, block_size)
    block_scores = tf.reshape(_pooled_blocks(scores, block_size, pooling, sizes), [-1])
    target = num_pruned(sparsity, rows * cols)
    if np.all(sizes == sizes.flat[0]):
        kept = _kept_equal_blocks(block_scores, int(sizes.flat[0]), target)
    else:
        kept = _kept_blocks_in_order(block_scores, sizes.reshape(-1), target)
    kept = tf.reshape(kept, _grid_shape(rows, cols, block_size))
    br, bc = block_size
    return tf.cast(tf.repeat(tf.repeat(kept, br, axis=0), bc, axis=1)[:rows, :cols], dtype or scores.dtype)


def _kept_equal_blocks(block_scores, size, target):
    """True at the blocks that `block_mask` keeps when every block holds `size` entries, in linear time.

    Pruning `c` blocks prunes `c * size` entries: the closest count to
    `target` is its nearest multiple of `size`, the lower one at half way.
    The pruned blocks, the lowest with equal scores in position order, are
    the complement of the highest with equal scores in reversed order.
    """
    pruned = (target + (size + 1) // 2 - 1) // size
    reversed_scores = tf.reverse(block_scores, [0])
    return tf.reverse(keep_highest(reversed_scores, tf.size(block_scores) - pruned), [0])


def _kept_blocks_in_order(block_scores, sizes, target):
    """True at the blocks that `block_mask` keeps when edge blocks are smaller: a sort of the blocks.

    The pruned count of a prefix of the blocks' order depends on which
    (smaller) edge blocks it holds, so the order itself is needed.
    """
    order = tf.argsort(block_scores, stable=True)
    pruned_so_far = tf.concat([[0], tf.cumsum(tf.gather(sizes, order))], axis=0)
    count = tf.argmin(tf.abs(pruned_so_far - target), output_type=tf.int32)
    pruned_in_order = tf.range(tf.size(order)) < count
    return tf.gather(tf.logical_not(pruned_in_order), tf.argsort(order))


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


def m_by_n_mask(scores, m_by_n, dtype=None):
    """Prunes `m` of every `n` consecutive entries along the input-channel axis.

    The input-channel axis of a Dense or convolution kernel is axis -2
    (TFLite's innermost axis), as in TFMOT. The axis is zero-padded to a
    multiple of `n`.

    Args:
        scores: a float tensor of rank >= 2.
        m_by_n: `(m, n)`, e.g. `(2, 4)`: 2 zeros in each group of 4.
        dtype: the mask's dtype, `scores.dtype` by default (or `tf.bool`).

    Returns:
        A 0/1 mask of the shape of `scores`.
    """
    m, n = m_by_n
    moved = tf.experimental.numpy.moveaxis(scores, -2, -1)
    shape = tf.shape(moved)
    channels = moved.shape[-1]
    pad = -channels % n
    flat = tf.reshape(moved, [-1, channels])
    groups = tf.reshape(tf.pad(flat, [[0, 0], [0, pad]], constant_values=-1.0), [-1, n])
    kept = tf.reshape(keep_highest(groups, n - m), [-1, channels + pad])[:, :channels]
    return tf.cast(tf.experimental.numpy.moveaxis(tf.reshape(kept, shape), -1, -2), dtype or scores.dtype)


def global_topk_masks(scores, sparsity, min_kept=0, dtype=None):
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
        dtype: the masks' dtype, the scores' by default (or `tf.bool`).

    Returns:
        A list of 0/1 masks, one per input, of matching shapes.

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
        parts = [tf.where(keep_highest(p, k), infinity, p) for p, k in zip(parts, floors)]
    flat = tf.concat(parts, axis=0)
    total = flat.shape[0]
    keep = tf.maximum(total - num_pruned(sparsity, total), sum(floors))
    mask = keep_highest(flat, keep)
    return [tf.cast(tf.reshape(part, tf.shape(s)), dtype or s.dtype) for part, s in zip(tf.split(mask, sizes), scores)]
