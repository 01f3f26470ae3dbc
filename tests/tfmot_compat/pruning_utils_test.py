"""TFMOT's `pruning_utils_test.py` (its internal mask helpers), on Keras 3 and tfsparse.

`generate_m_to_n_mask` is checked through what it serves, m-by-n pruning of
a wrapped layer; the other helpers are TFMOT internals without a tfsparse
counterpart (see README.md).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.layers import Masked

INTERNAL = (
    "compares two implementations internal to TFMOT (factorized_pool with tf.nn.pool, expand_tensor with "
    "kronecker_product); tfsparse has neither: its block masks are checked by pruning_impl_test's block cases"
)


# Upstream runs each of these for 7 window shapes.
def testFactorizedAvgPool():
    pytest.skip(INTERNAL)


def testFactorizedMaxPool():
    pytest.skip(INTERNAL)


def testExpandTensor():
    pytest.skip(INTERNAL)


@pytest.mark.parametrize(
    "weight, window_shape, k, expected",
    [
        ([[1, 2, 3, 4]], (1, 4), 2, [[0, 0, 1, 1]]),
        ([[1, 2, 3, 4, 5, 6]], (1, 6), 3, [[0, 0, 0, 1, 1, 1]]),
        ([[1, 2], [3, 4]], (1, 2), 1, [[0, 1], [0, 1]]),
        # TFMOT's helper gives no mask for a row shorter than the window;
        # tfsparse pads the row and prunes it like any other group.
        ([[1, 2]], (1, 6), 1, [[0, 1]]),
    ],
)
def testGenerateMxNMask(weight, window_shape, k, expected):
    # Each row of `weight` is one output unit's weights over the inputs: a
    # window of n = window_shape[1] inputs keeps its k largest weights.
    n = window_shape[1]
    kernel = np.asarray(weight, "float32").T
    layer = Masked(
        keras.layers.Dense(kernel.shape[1], use_bias=False),
        pruning_schedule=ts.schedules.ConstantSparsity(0.5, 0, frequency=1),
        sparsity_m_by_n=(n - k, n),
    )
    layer.build((None, kernel.shape[0]))
    layer.layer.kernel.assign(kernel)
    layer(tf.ones((1, kernel.shape[0])), training=True)
    np.testing.assert_array_equal(layer.masks[0].numpy().T, expected)


def testIsPruned2x4Test():
    # Upstream checks 7 weights.
    pytest.skip("`is_pruned_2x4` is a checking helper of TFMOT's tools with no tfsparse counterpart")
