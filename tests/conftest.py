"""Fixtures of the tests in `tests/` (the shared setup is in the root conftest.py)."""

import keras
import pytest
import tensorflow as tf


@pytest.fixture(scope="session")
def two_replica_strategy():
    """One MirroredStrategy over the two logical CPUs, shared by all tests.

    Separate strategy objects in one process reuse collective-op keys, so
    their gradient all-reduces can collide; one shared instance cannot.
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture
def mixed_precision():
    """Keras' global dtype policy set to `mixed_float16` for one test (float16 compute, float32 variables)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(previous)
