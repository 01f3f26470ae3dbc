"""The linear-time selection of the magnitude masks equals a top-k selection exactly.

The reference keeps the `keep` highest entries of each row with
`tf.math.top_k`, whose ties go to the lower index: the rule the masks
promise (block masks are checked against their definition, a stable sort
of the blocks). Every mask kind is checked eagerly, inside `tf.function`
and under XLA (where the threshold is found by bisection instead).
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import tfsparse as ts
from tfsparse.scoring import magnitude

SPARSITIES = [0.0, 0.1, 0.5, 0.9, 0.999, 1.0]
MODES = {
    "eager": lambda f: f,
    "graph": tf.function,
    "xla": lambda f: tf.function(f, jit_compile=True),
}


def reference_keep_highest(values, keep):
    """1 at the `keep` highest entries of each row by `tf.math.top_k` (ties to the lower index)."""
    rows = np.reshape(values, [-1, values.shape[-1]])
    _, indices = tf.math.top_k(rows, k=keep)
    mask = np.zeros(rows.shape, values.dtype)
    np.put_along_axis(mask, indices.numpy(), 1, axis=1)
    return mask.reshape(values.shape)


def reference_topk_mask(scores, sparsity, min_kept=0):
    """`topk_mask` by the reference selection."""
    size = scores.size
    keep = size - int(magnitude.num_pruned(magnitude.capped_sparsity(sparsity, size, min_kept), size))
    return reference_keep_highest(scores.reshape(-1), keep).reshape(scores.shape)


def scores_of(kind, shape, seed):
    """Scores with no ties (`"distinct"`), many ties (`"ties"`), mostly zeros, or of both signs."""
    rng = np.random.default_rng(seed)
    if kind == "distinct":
        return rng.random(shape, dtype=np.float32)
    if kind == "ties":
        return rng.integers(0, 4, shape).astype(np.float32)
    if kind == "zeros":
        return (rng.random(shape) * (rng.random(shape) < 0.2)).astype(np.float32)
    return rng.normal(size=shape).astype(np.float32)


KINDS = ["distinct", "ties", "zeros", "signed"]


@pytest.mark.parametrize("mode", list(MODES))
def test_topk_mask_equals_top_k(mode):
    mask_fn = MODES[mode](lambda s, sparsity, min_kept: ts.scoring.topk_mask(s, sparsity, min_kept))
    for kind, sparsity, min_kept in itertools.product(KINDS, SPARSITIES, (0, 1, 5)):
        scores = scores_of(kind, (9, 13), seed=len(kind))
        got = mask_fn(tf.constant(scores), tf.constant(sparsity), min_kept).numpy()
        expected = reference_topk_mask(scores, sparsity, min_kept)
        np.testing.assert_array_equal(got, expected, err_msg=f"{kind}, {sparsity}, {min_kept}")


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("m_by_n", [(2, 4), (1, 3), (3, 4)])
def test_m_by_n_mask_equals_top_k_per_group(mode, m_by_n):
    m, n = m_by_n
    mask_fn = MODES[mode](lambda s: ts.scoring.m_by_n_mask(s, m_by_n))
    for kind in KINDS:
        scores = np.abs(scores_of(kind, (3, 2, 10, 5), seed=n))  # 10 input channels: the last group is padded
        groups = np.pad(np.moveaxis(scores, -2, -1), [(0, 0)] * 3 + [(0, -10 % n)], constant_values=-1.0)
        kept = reference_keep_highest(groups.reshape(-1, n), n - m).reshape(groups.shape)[..., :10]
        np.testing.assert_array_equal(mask_fn(tf.constant(scores)).numpy(), np.moveaxis(kept, -1, -2), err_msg=kind)


@pytest.mark.parametrize("mode", list(MODES))
def test_global_topk_masks_equal_top_k_over_the_concatenation(mode):
    masks_fn = MODES[mode](lambda s, sparsity, min_kept: ts.scoring.global_topk_masks(s, sparsity, min_kept))
    for kind in KINDS:
        scores = [scores_of(kind, shape, seed=i) for i, shape in enumerate([(6, 5), (3,), (4, 2, 2)])]
        total = sum(s.size for s in scores)
        for sparsity, min_kept in itertools.product(SPARSITIES, (0, 1, 2)):
            got = masks_fn([tf.constant(s) for s in scores], tf.constant(sparsity), min_kept)
            # Each tensor's `min_kept` highest entries come first, then the highest of the rest.
            floors = [reference_keep_highest(s.reshape(-1), min(min_kept, s.size)).reshape(s.shape) for s in scores]
            flat = np.concatenate([np.where(f > 0, np.inf, s).reshape(-1) for f, s in zip(floors, scores)])
            keep = max(total - int(magnitude.num_pruned(sparsity, total)), min_kept * len(scores))
            expected = np.split(reference_keep_highest(flat, keep), np.cumsum([s.size for s in scores])[:-1])
            for g, e, s in zip(got, expected, scores):
                np.testing.assert_array_equal(g.numpy(), e.reshape(s.shape), err_msg=f"{sparsity}, {min_kept}")


def reference_block_mask(scores, sparsity, block_size, pooling):
    """`block_mask` by its definition: a stable sort of the blocks, the prefix closest to the target."""
    (rows, cols), (br, bc) = scores.shape, block_size
    grid = (-(-rows // br), -(-cols // bc))
    pooled, sizes = np.zeros(grid, np.float32), np.zeros(grid, np.int64)
    for i, j in np.ndindex(grid):
        block = scores[i * br:(i + 1) * br, j * bc:(j + 1) * bc]
        pooled[i, j] = block.max() if pooling == "MAX" else block.mean(dtype=np.float32)
        sizes[i, j] = block.size
    order = np.argsort(pooled.reshape(-1), kind="stable")
    pruned_so_far = np.concatenate([[0], np.cumsum(sizes.reshape(-1)[order])])
    count = np.argmin(np.abs(pruned_so_far - int(magnitude.num_pruned(sparsity, rows * cols))))
    kept = np.ones(pooled.size, np.float32)
    kept[order[:count]] = 0
    return np.repeat(np.repeat(kept.reshape(grid), br, axis=0), bc, axis=1)[:rows, :cols]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("shape", [(8, 12), (7, 10)], ids=["whole_blocks", "edge_blocks"])
def test_block_mask_equals_its_definition(mode, shape):
    for block_size, pooling in itertools.product([(2, 4), (4, 1)], ["AVG", "MAX"]):
        mask_fn = MODES[mode](lambda s, sparsity: ts.scoring.block_mask(s, sparsity, block_size, pooling))
        for kind, sparsity in itertools.product(["distinct", "ties"], SPARSITIES):
            # Scores that are exact in float32 sums, so that pooled ties are ties in both.
            scores = np.round(np.abs(scores_of(kind, shape, seed=7)) * 8) / 8
            got = mask_fn(tf.constant(scores), tf.constant(sparsity)).numpy()
            expected = reference_block_mask(scores, sparsity, block_size, pooling)
            np.testing.assert_array_equal(got, expected, err_msg=f"{block_size}, {pooling}, {kind}, {sparsity}")


def graph_ops(function, *args):
    """The op types of a traced function, with those of its branches and loop bodies."""
    graph_def = tf.function(function).get_concrete_function(*args).graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    return {node.op for node in nodes}


@pytest.mark.parametrize(
    "mask_fn",
    [
        lambda s: ts.scoring.topk_mask(s, 0.5),
        lambda s: ts.scoring.m_by_n_mask(s, (2, 4)),
        lambda s: ts.scoring.global_topk_masks([s, 2 * s], 0.5, min_kept=1),
        lambda s: ts.scoring.block_mask(s, 0.5, (2, 4)),
    ],
    ids=["topk", "m_by_n", "global", "block"],
)
def test_masks_select_without_sorting(mask_fn):
    ops = graph_ops(mask_fn, tf.TensorSpec([64, 32]))
    assert "NthElement" in ops
    assert not ops & {"TopKV2", "TopK"}  # tf.argsort is a TopKV2 too


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_bisection_handles_every_float_width(dtype):
    scores = tf.cast(scores_of("signed", (40,), seed=3), dtype)
    xla = tf.function(lambda s: ts.scoring.topk_mask(s, 0.7), jit_compile=True)
    np.testing.assert_array_equal(xla(scores).numpy(), ts.scoring.topk_mask(scores, 0.7).numpy())


def test_negative_zero_ties_with_zero():
    scores = tf.constant([0.0, -0.0, 1.0, -0.0, 0.0])
    for mode in MODES.values():
        np.testing.assert_array_equal(mode(lambda s: ts.scoring.topk_mask(s, 0.4))(scores).numpy(), [1, 1, 1, 0, 0])


PROPERTY_FUNCTIONS = {
    mode: MODES[mode](lambda s, sparsity, min_kept: ts.scoring.topk_mask(s, sparsity, min_kept))
    for mode in ("graph", "xla")
}


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    values=st.one_of(st.lists(st.integers(-3, 3), min_size=n, max_size=n) for n in (1, 24)),
    sparsity=st.floats(0.0, 1.0),
    min_kept=st.integers(0, 1),
)
def test_topk_mask_property(values, sparsity, min_kept):
    scores = np.array(values, np.float32) / 2
    expected = reference_topk_mask(scores, sparsity, min_kept)
    for mask_fn in PROPERTY_FUNCTIONS.values():
        np.testing.assert_array_equal(mask_fn(tf.constant(scores), tf.constant(sparsity), min_kept).numpy(), expected)
