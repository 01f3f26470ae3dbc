"""TFMOT's `pruning_schedule_test.py` (ConstantSparsity, PolynomialDecay), on Keras 3 and tfsparse."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts

SCHEDULE_TYPES = ("constant_sparsity", "polynomial_decay")


def _construct_pruning_schedule(schedule_type, begin_step, end_step, frequency=10):
    # Default values for sparsity: only begin_step, end_step and frequency are tested here.
    if schedule_type == "constant_sparsity":
        return ts.schedules.ConstantSparsity(0.5, begin_step, end_step, frequency)
    return ts.schedules.PolynomialDecay(0.2, 0.8, begin_step, end_step, 3, frequency)


def _should_prune(schedule, step):
    return bool(schedule(tf.Variable(step))[0])


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
def testBeginStepGreaterThanEqualsZero(schedule_type):
    for begin_step in (-1, -5):
        with pytest.raises(ValueError):
            _construct_pruning_schedule(schedule_type, begin_step, 1000)
    for begin_step in (0, 1, 100):
        _construct_pruning_schedule(schedule_type, begin_step, 1000)


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
def testEndStepGreaterThanEqualsZero(schedule_type):
    with pytest.raises(ValueError):
        _construct_pruning_schedule(schedule_type, 10, -5)
    for end_step in (0, 1, 100):
        _construct_pruning_schedule(schedule_type, 0, end_step)


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
def testEndStepGreaterThanEqualsBeginStep(schedule_type):
    with pytest.raises(ValueError):
        _construct_pruning_schedule(schedule_type, 10, 5)
    _construct_pruning_schedule(schedule_type, 10, 10)
    _construct_pruning_schedule(schedule_type, 10, 20)


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
def testFrequencyIsPositive(schedule_type):
    for frequency in (0, -1, -5):
        with pytest.raises(ValueError):
            _construct_pruning_schedule(schedule_type, 10, 1000, frequency)
    _construct_pruning_schedule(schedule_type, 10, 1000, 1)
    _construct_pruning_schedule(schedule_type, 10, 1000, 10)


def _validate_sparsity(schedule_construct_fn):
    for sparsity in (-0.001, -1.0, -10.0, 1.0, 10.0):  # must be in [0, 1)
        with pytest.raises(ValueError):
            schedule_construct_fn(sparsity)
    for sparsity in (0.0, 0.001, 0.5, 0.99):
        schedule_construct_fn(sparsity)


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
def testSparsityValueIsValid(schedule_type):
    if schedule_type == "constant_sparsity":
        _validate_sparsity(lambda s: ts.schedules.ConstantSparsity(s, 0))
    else:
        _validate_sparsity(lambda s: ts.schedules.PolynomialDecay(s, 0.8, 0, 10))
        _validate_sparsity(lambda s: ts.schedules.PolynomialDecay(0.2, s, 0, 10))


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
def testPrunesOnlyInBeginEndStepRange(schedule_type):
    schedule = _construct_pruning_schedule(schedule_type, 100, 200, 1)
    # Before begin step, in range, after end step.
    assert [_should_prune(schedule, step) for step in (90, 99)] == [False, False]
    assert [_should_prune(schedule, step) for step in (100, 110, 200)] == [True, True, True]
    assert [_should_prune(schedule, step) for step in (201, 210)] == [False, False]


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
def testOnlyPrunesAtValidFrequencySteps(schedule_type):
    schedule = _construct_pruning_schedule(schedule_type, 100, 200, 10)
    assert [_should_prune(schedule, step) for step in (109, 111)] == [False, False]
    assert [_should_prune(schedule, step) for step in (100, 110)] == [True, True]


def testPrunesForeverIfEndStepIsNegativeOne():
    schedule = ts.schedules.ConstantSparsity(0.5, 0, -1, 10)
    for step in (10000, 100000000):
        should_prune, sparsity = schedule(tf.Variable(step))
        assert bool(should_prune)
        np.testing.assert_allclose(0.5, float(sparsity))


def testPrunesWithConstantSparsity():
    schedule = ts.schedules.ConstantSparsity(0.5, 100, 200, 10)
    for step in (100, 110, 200):
        np.testing.assert_allclose(0.5, float(schedule(tf.Variable(step))[1]))


def _round_trip(schedule):
    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))


def testConstantSparsitySerializeDeserialize():
    schedule = ts.schedules.ConstantSparsity(0.7, 10, 20, 10)
    assert schedule.__dict__ == _round_trip(schedule).__dict__


def testRaisesErrorIfEndStepIsNegative():
    with pytest.raises(ValueError):
        ts.schedules.PolynomialDecay(0.4, 0.8, 10, -1)


def testPolynomialDecay_PrunesCorrectly():
    schedule = ts.schedules.PolynomialDecay(0.2, 0.8, 100, 110, 3, 2)
    # Upstream's values, from tf.polynomial_decay with the same parameters.
    expected = {100: 0.2, 102: 0.4928, 105: 0.725, 110: 0.8}
    for step, sparsity in expected.items():
        np.testing.assert_allclose(sparsity, float(schedule(tf.Variable(step))[1]), rtol=1e-6)


def testPolynomialDecaySerializeDeserialize():
    schedule = ts.schedules.PolynomialDecay(0.2, 0.6, 10, 20, 5, 10)
    assert schedule.__dict__ == _round_trip(schedule).__dict__
