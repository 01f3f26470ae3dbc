"""TFMOT's `pruning_impl_test.py` (mask computation), on Keras 3 and tfsparse.

Upstream drives TFMOT's internal `Pruning` object directly; here the same
weights go through a `tfsparse.layers.Masked` wrapper and a training call, and
the masks it computes are checked (TFMOT's threshold variable has no
counterpart: tfsparse computes exact top-k masks).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.layers import Masked

CONSTANT_SPARSITY = ts.schedules.ConstantSparsity(0.5, 0, 100, 1)


class TableSchedule(ts.schedules.PruningSchedule):
    """A TFMOT-style schedule: `__call__` returns `(True, sparsities[step - 1])`.

    Upstream's `Pruning` object counts steps from 0; the wrapper's k-th
    training call is step k (TFMOT's wrapper does the same), hence `- 1`.
    """

    def __init__(self, sparsities):
        self.sparsities = sparsities

    def __call__(self, step):
        return tf.constant(True), tf.gather(tf.constant(self.sparsities, tf.float32), step - 1)

    def get_config(self):
        return {"sparsities": self.sparsities}


def _masked_dense(kernel, schedule, **kwargs):
    """A `Masked` Dense (no bias) holding `kernel` (rows: inputs)."""
    kernel = np.asarray(kernel, "float32")
    layer = Masked(keras.layers.Dense(kernel.shape[1], use_bias=False), pruning_schedule=schedule, **kwargs)
    layer.build((None, kernel.shape[0]))
    layer.layer.kernel.assign(kernel)
    return layer


def _training_call(layer, inputs):
    layer(tf.ones((1, inputs)), training=True)


def testUpdateSingleMask():
    layer = _masked_dense(np.linspace(1.0, 100.0, 100).reshape(100, 1), CONSTANT_SPARSITY)
    assert np.count_nonzero(layer.masks[0].numpy()) == 100
    _training_call(layer, 100)
    assert np.count_nonzero(layer.masks[0].numpy()) == 50


def testConstructsMaskAndThresholdCorrectly():
    # Sparsity math often returns values with small tolerances.
    layer = _masked_dense(np.arange(1, 11).reshape(10, 1), TableSchedule([0.200000018]))
    _training_call(layer, 10)
    # The mask is [0, 0, 1, 1, ..., 1].
    np.testing.assert_array_equal(np.concatenate((np.zeros(2), np.ones(8))), layer.masks[0].numpy()[:, 0])


def _block_masking(block_size, block_pooling_type, weight, expected_mask):
    layer = _masked_dense(weight, CONSTANT_SPARSITY, block_size=block_size, block_pooling_type=block_pooling_type)
    _training_call(layer, len(weight))
    assert layer.masks[0].shape == np.shape(weight)
    np.testing.assert_array_equal(layer.masks[0].numpy(), expected_mask)


def testBlockMaskingAvg():
    weight = [[0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.4, 0.4], [0.3, 0.3, 0.4, 0.4]]
    expected_mask = [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    _block_masking((2, 2), "AVG", weight, expected_mask)


def testBlockMaskingMax():
    weight = [[0.1, 0.0, 0.2, 0.0], [0.0, -0.1, 0.0, -0.2], [0.3, 0.0, 0.4, 0.0], [0.0, -0.3, 0.0, -0.4]]
    expected_mask = [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    _block_masking((2, 2), "MAX", weight, expected_mask)


def testBlockMaskingWithHigherDimensionsRaisesError():
    # The weights of testBlockMasking with one extra dimension: a Conv1D
    # kernel of shape (1, 4, 4). Block masking needs 2-dimensional weights.
    layer = Masked(keras.layers.Conv1D(4, 1, use_bias=False), pruning_schedule=CONSTANT_SPARSITY, block_size=(2, 2))
    with pytest.raises(ValueError):
        layer.build((None, 3, 4))


def testConditionalMaskUpdate():
    layer = _masked_dense(
        np.linspace(1.0, 100.0, 100).reshape(100, 1), TableSchedule([0.0, 0.1, 0.1, 0.3, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5])
    )
    non_zero_count = []
    for _ in range(10):
        _training_call(layer, 100)
        non_zero_count.append(np.count_nonzero(layer.effective_weights()["kernel"].numpy()))
    # Weights pruned at steps 1, 3, 5.
    assert non_zero_count == [100, 90, 90, 70, 70, 50, 50, 50, 50, 50]
