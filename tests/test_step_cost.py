"""The fixed cost of pruning: ops of the traced training step, and the bytes of one-byte masks."""

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.layers import Masked

# Ops that do no work when the step runs: constants, inputs and captured
# handles, identities (e.g. of a custom gradient), control anchors.
FREE_OPS = {"Const", "Placeholder", "Identity", "IdentityN", "NoOp"}
# What scheduled pruning adds to a training step, by construction. Once per
# model (layers with one schedule count together): the step counter read and
# incremented, the schedule test of a PolynomialDecay with an end and a
# frequency (>=, <=, and, sub, mod, ==, and) and one cond. Per layer: the
# counter assigned, the mask read, its cast and one multiply forward (the
# backward passes the gradient straight through). A cast and a multiply are
# one op more than a select from the boolean mask, but cheaper on CPU (see
# `apply_mask`).
OPS_PER_MODEL = 2 + 7 + 1
OPS_PER_LAYER = 1 + 1 + 2


def _lenet(widths=(12, 8, 3)):
    inputs = keras.Input((6,))
    x = inputs
    for units in widths[:-1]:
        x = keras.layers.Dense(units, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(widths[-1])(x))


def _step_ops(model):
    """`{op type: count}` of the traced training step of `model` (SGD with momentum)."""
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.optimizer.build(model.trainable_variables)
    data = (tf.zeros((4, 6)), tf.zeros((4,), "int64"))
    graph = tf.function(model.train_step).get_concrete_function(data).graph
    return collections.Counter(op.type for op in graph.get_operations() if op.type not in FREE_OPS)


def _pruned(model, **kwargs):
    schedule = ts.schedules.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
    return ts.prune_low_magnitude(model, schedule, **kwargs)


@pytest.mark.parametrize("widths", [(12, 8, 3), (12, 10, 9, 8, 3)])
def test_pruned_training_step_adds_a_bounded_number_of_ops(widths):
    dense = _lenet(widths)
    pruned = _pruned(_lenet(widths))
    layers = sum(isinstance(layer, Masked) for layer in pruned.layers)
    extra = _step_ops(pruned) - _step_ops(dense)
    assert layers == len(widths)
    assert sum(extra.values()) <= OPS_PER_MODEL + OPS_PER_LAYER * layers, extra
    # The effective kernel is one cast and one multiply in the forward pass, nothing backward.
    assert extra["Cast"] == layers and extra["Mul"] == layers and extra["SelectV2"] == 0, extra
    # One schedule test for the model.
    assert extra["If"] == 1 and extra["FloorMod"] == 1, extra


def test_layers_with_different_schedules_update_apart_and_count_together():
    inputs = keras.Input((6,))
    first = ts.schedules.ConstantSparsity(0.5, begin_step=1, end_step=1)
    second = ts.schedules.ConstantSparsity(0.8, begin_step=3, end_step=3)
    hidden = ts.prune_low_magnitude(keras.layers.Dense(12, activation="relu"), first)(inputs)
    pruned = keras.Model(inputs, ts.prune_low_magnitude(keras.layers.Dense(3), second)(hidden))
    assert _step_ops(pruned)["If"] == 2
    rng = np.random.default_rng(0)
    pruned.fit(rng.normal(size=(16, 6)), rng.integers(0, 3, 16), batch_size=4, verbose=0)
    masked = [layer for layer in pruned.layers if isinstance(layer, Masked)]
    assert [int(layer.pruning_step) for layer in masked] == [4, 4]
    # round(0.5 * 72) and round(0.8 * 36) entries pruned, each at its own step.
    assert [int(np.sum(~np.asarray(layer.masks[0]))) for layer in masked] == [36, 29]


def test_global_scope_tests_the_schedule_once_per_step():
    dense = _step_ops(_lenet())
    pruned = _step_ops(_pruned(_lenet(), scope="global"))
    extra = pruned - dense
    assert extra["If"] == 1 and extra["FloorMod"] == 1, extra


def test_masks_take_one_byte_per_entry():
    dense, pruned = _lenet(), _pruned(_lenet())
    masked = [layer for layer in pruned.layers if isinstance(layer, Masked)]
    assert all(mask.dtype == "bool" for layer in masked for mask in layer.masks)
    kernels = sum(layer.layer.kernel.shape.num_elements() for layer in masked)
    step_counters = 8 * len(masked)  # one int64 each
    assert _bytes(pruned) == _bytes(dense) + kernels + step_counters


def _bytes(model):
    return sum(v.shape.num_elements() * np.dtype(v.dtype).itemsize for v in model.weights)


def test_float_masks_of_older_files_load_as_booleans():
    layer = Masked(keras.layers.Dense(3))
    layer.build((None, 4))
    mask = np.random.default_rng(0).integers(0, 2, (4, 3)).astype("float32")
    store = {}
    layer.save_own_variables(store)
    store[next(k for k, v in store.items() if np.shape(v) == (4, 3))] = mask
    layer.load_own_variables(store)
    assert layer.masks[0].dtype == "bool"
    np.testing.assert_array_equal(layer.masks[0].numpy(), mask == 1)
