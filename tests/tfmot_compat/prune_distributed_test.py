"""TFMOT's `prune_distributed_test.py` (pruning under tf.distribute strategies), on Keras 3 and tfsparse."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from compat_utils import assert_model_sparsity, build_simple_dense_model, random_categorical

STRATEGIES = ("CollectiveAllReduceStrategy", "MirroredStrategy", "OneDeviceStrategy")


@pytest.fixture
def distribution(request, two_replica_strategy):
    name = request.param
    if name == "CollectiveAllReduceStrategy":
        pytest.skip("Keras 3's model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585)")
    if name == "MirroredStrategy":
        return two_replica_strategy  # over the two logical CPUs, shared by the whole suite
    return tf.distribute.OneDeviceStrategy("/cpu:0")


@pytest.mark.parametrize("distribution", STRATEGIES, indirect=True)
def testPrunesSimpleDenseModel(distribution, tmp_path):
    with distribution.scope():
        model = ts.prune_low_magnitude(
            build_simple_dense_model(),
            pruning_schedule=ts.schedules.ConstantSparsity(0.5, 0, -1, 1),
            block_size=(1, 1),
            block_pooling_type="AVG",
        )
        model.compile(loss="categorical_crossentropy", optimizer="sgd", metrics=["accuracy"])

    # Model hasn't been trained yet. Sparsity 0.0
    assert_model_sparsity(0.0, model)

    x, y = random_categorical()
    model.fit(x, y, epochs=2, callbacks=[ts.callbacks.UpdatePruningStep()], batch_size=20, verbose=0)
    model.predict(np.random.rand(20, 10), verbose=0)
    assert_model_sparsity(0.5, model)

    keras_file = tmp_path / "model.keras"
    model.save(keras_file)
    with ts.prune_scope():
        loaded_model = keras.models.load_model(keras_file)
    assert_model_sparsity(0.5, loaded_model)
