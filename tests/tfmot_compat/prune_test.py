"""TFMOT's `prune_test.py` (tests of `prune_low_magnitude`, `strip_pruning`, `prune_scope`), on Keras 3 and tfsparse.

Upstream: tensorflow/model-optimization, tensorflow_model_optimization/python/core/sparsity/keras/prune_test.py
(see README.md for the commit). Case names are upstream's.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from compat_utils import build_simple_dense_model, pruned_layers
from tfsparse.layers import Masked



class TestSubclassedModel(keras.Model):
    """A model subclass with one dense layer."""

    __test__ = False  # not a test class

    def __init__(self):
        super().__init__(name="test_model")
        self.layer1 = keras.layers.Dense(10, activation="relu")

    def call(self, inputs):
        return self.layer1(inputs)


class CustomPrunableLayer(keras.layers.Dense):
    """TFMOT's `PrunableLayer` protocol on a Dense subclass."""

    def get_prunable_weights(self):
        return [self.kernel]


class CustomNonPrunableLayer(keras.layers.Dense):
    """Upstream's subclass of a supported layer, which TFMOT refuses and tfsparse prunes as a Dense."""


PARAMS = {"block_size": (1, 1), "block_pooling_type": "AVG"}


@pytest.fixture
def params():
    return {"pruning_schedule": ts.schedules.ConstantSparsity(0.5, 0), **PARAMS}


def _build_pruned_layer_model(layer, params):
    wrapped = ts.prune_low_magnitude(layer, **params)
    model = keras.Sequential([wrapped])
    model.build(input_shape=(10, 1))
    return wrapped


def _validate_pruned_layer(original, wrapped, params):
    """TFMOT's check, except that tfsparse wraps the given layer itself only when it wraps a single layer.

    When it prunes a model it wraps copies, leaving the given model as it was:
    the copy has the original's class and configuration.
    """
    assert isinstance(wrapped, Masked)
    assert type(wrapped.layer) is type(original)
    assert wrapped.layer.get_config() == original.get_config()
    assert wrapped.pruning_schedule is params["pruning_schedule"]
    assert wrapped.block_size == params["block_size"]
    assert wrapped.block_pooling_type == params["block_pooling_type"]


def _count_pruned_layers(model):
    return len(pruned_layers(model))


def testPruneKerasPrunableLayer(params):
    layer = keras.layers.Dense(10)
    wrapped = _build_pruned_layer_model(layer, params)
    _validate_pruned_layer(layer, wrapped, params)
    assert wrapped.layer is layer


def testPruneKerasNonPrunableLayer(params):
    # TFMOT wraps a layer without weights in a wrapper that prunes nothing;
    # tfsparse returns such a layer as it is (there is nothing to wrap).
    layer = keras.layers.Dropout(0.4)
    wrapped = _build_pruned_layer_model(layer, params)
    assert wrapped is layer


def testPruneKerasUnsupportedLayer(params):
    with pytest.raises(ValueError):
        ts.prune_low_magnitude(keras.layers.ConvLSTM2D(2, (5, 5)), **params)


def testPruneCustomPrunableLayer(params):
    layer = CustomPrunableLayer(10)
    wrapped = _build_pruned_layer_model(layer, params)
    _validate_pruned_layer(layer, wrapped, params)
    assert wrapped.prunable_weights == [wrapped.layer.kernel]


def testPruneCustomNonPrunableLayer(params):
    # TFMOT refuses a subclass of a supported layer that does not implement
    # `PrunableLayer`; tfsparse prunes it as its supported base class.
    layer = CustomNonPrunableLayer(10)
    wrapped = _build_pruned_layer_model(layer, params)
    assert wrapped.prunable_weights == [layer.kernel]


def testPruneModelValidLayersSuccessful(params):
    model = keras.Sequential([keras.layers.Dense(10), keras.layers.Dropout(0.4), CustomPrunableLayer(10)])
    pruned_model = ts.prune_low_magnitude(model, **params)
    pruned_model.build(input_shape=(1, 28, 28, 1))
    assert len(model.layers) == len(pruned_model.layers)
    for index in (0, 2):
        _validate_pruned_layer(model.layers[index], pruned_model.layers[index], params)


def testPruneModelUnsupportedKerasLayerRaisesError(params):
    with pytest.raises(ValueError):
        ts.prune_low_magnitude(
            keras.Sequential([
                keras.layers.Dense(10), keras.layers.Dropout(0.4), CustomPrunableLayer(10),
                keras.layers.ConvLSTM2D(2, (5, 5)),
            ]),
            **params,
        )


def testPruneModelCustomNonPrunableLayerRaisesError(params):
    # TFMOT refuses the model; tfsparse prunes the Dense subclass as a Dense.
    model = keras.Sequential([
        keras.layers.Dense(10), keras.layers.Dropout(0.4), CustomPrunableLayer(10), CustomNonPrunableLayer(10),
    ])
    pruned_model = ts.prune_low_magnitude(model, **params)
    assert _count_pruned_layers(pruned_model) == 3


def testPruneModelDoesNotWrapAlreadyWrappedLayer(params):
    model = keras.Sequential([keras.layers.Dense(10), ts.prune_low_magnitude(keras.layers.Dense(10), **params)])
    pruned_model = ts.prune_low_magnitude(model, **params)
    pruned_model.build(input_shape=(10, 1))

    assert len(model.layers) == len(pruned_model.layers)
    _validate_pruned_layer(model.layers[0], pruned_model.layers[0], params)
    # The second layer is used as it is, since it is already a pruned layer.
    assert model.layers[1] is pruned_model.layers[1]


def testPruneValidLayersListSuccessful(params):
    model_layers = [keras.layers.Dense(10), keras.layers.Dropout(0.4), CustomPrunableLayer(10)]
    pruned_layers_ = ts.prune_low_magnitude(model_layers, **params)
    assert len(model_layers) == len(pruned_layers_)
    for index in (0, 2):
        _validate_pruned_layer(model_layers[index], pruned_layers_[index], params)


def testPruneInferenceWorks_PruningStepCallbackNotRequired(params):
    model = ts.prune_low_magnitude(
        keras.Sequential([
            keras.layers.Dense(10, activation="relu", input_shape=(100,)),
            keras.layers.Dense(2, activation="sigmoid"),
        ]),
        **params,
    )
    model.compile(loss=keras.losses.categorical_crossentropy, optimizer=keras.optimizers.SGD(), metrics=["accuracy"])
    model.predict(np.random.rand(32, 100), verbose=0)
    model.evaluate(
        np.random.rand(32, 100), keras.utils.to_categorical(np.random.randint(2, size=(32, 1))), verbose=0
    )


def testPruneSequentialModel(params):
    # No InputLayer
    model = keras.Sequential([keras.layers.Dense(10), keras.layers.Dense(10)])
    pruned_model = ts.prune_low_magnitude(model, **params)
    assert _count_pruned_layers(pruned_model) == 2

    # With InputLayer
    model = keras.Sequential([keras.layers.Dense(10, input_shape=(10,)), keras.layers.Dense(10)])
    pruned_model = ts.prune_low_magnitude(model, **params)
    assert _count_pruned_layers(pruned_model) == 2


def testPruneSequentialModelPreservesBuiltState(params):
    # No InputLayer
    model = keras.Sequential([keras.layers.Dense(10), keras.layers.Dense(10)])
    assert not model.built
    pruned_model = ts.prune_low_magnitude(model, **params)
    assert not model.built
    assert not pruned_model.built

    # Test built state preserves across serialization
    with ts.prune_scope():
        loaded_model = keras.models.model_from_json(json.dumps(json.loads(pruned_model.to_json())))
        assert not loaded_model.built

    # With InputLayer
    model = keras.Sequential([keras.layers.Dense(10, input_shape=(10,)), keras.layers.Dense(10)])
    assert model.built
    pruned_model = ts.prune_low_magnitude(model, **params)
    assert model.built

    # Test built state preserves across serialization
    with ts.prune_scope():
        loaded_model = keras.models.model_from_json(json.dumps(json.loads(pruned_model.to_json())))
    assert loaded_model.built


def _two_input_model():
    i1 = keras.Input(shape=(10,))
    i2 = keras.Input(shape=(10,))
    x1 = keras.layers.Dense(10)(i1)
    x2 = keras.layers.Dense(10)(i2)
    return keras.Model(inputs=[i1, i2], outputs=keras.layers.Add()([x1, x2]))


def testPruneFunctionalModel(params):
    pruned_model = ts.prune_low_magnitude(_two_input_model(), **params)
    # TFMOT also wraps the Add layer, in a wrapper that prunes nothing (3);
    # tfsparse wraps the layers that have weights to prune.
    assert _count_pruned_layers(pruned_model) == 2


def testPruneFunctionalModelWithLayerReused(params):
    # The model reuses the Dense() layer. Make sure it's only pruned once.
    inp = keras.Input(shape=(10,))
    dense_layer = keras.layers.Dense(10)
    x = dense_layer(inp)
    x = dense_layer(x)
    model = keras.Model(inputs=[inp], outputs=[x])
    pruned_model = ts.prune_low_magnitude(model, **params)
    assert _count_pruned_layers(pruned_model) == 1


def testPruneFunctionalModelPreservesBuiltState(params):
    model = _two_input_model()
    assert model.built
    pruned_model = ts.prune_low_magnitude(model, **params)
    assert model.built

    # Test built state preserves across serialization
    with ts.prune_scope():
        loaded_model = keras.models.model_from_json(json.dumps(json.loads(pruned_model.to_json())))
    assert loaded_model.built


def testPruneModelRecursively(params):
    internal_model = keras.Sequential([keras.layers.Dense(10, input_shape=(10,))])
    original_model = keras.Sequential([internal_model, keras.layers.Dense(10)])
    pruned_model = ts.prune_low_magnitude(original_model, **params)
    assert _count_pruned_layers(pruned_model) == 2


def testPruneSubclassModel(params):
    # TFMOT refuses every subclassed model; tfsparse prunes a built one in
    # place, and refuses an unbuilt one such as this, with a ValueError too.
    with pytest.raises(ValueError, match="not built"):
        ts.prune_low_magnitude(TestSubclassedModel(), **params)


def testPruneMiscObject(params):
    with pytest.raises(ValueError, match=r"`to_prune` must be a keras.Model or keras.layers.Layer.*of type object"):
        ts.prune_low_magnitude(object(), **params)


def testStripPruningSequentialModel(params):
    model = keras.Sequential([keras.layers.Dense(10), keras.layers.Dense(10)])
    pruned_model = ts.prune_low_magnitude(model, **params)
    stripped_model = ts.strip_pruning(pruned_model)
    assert _count_pruned_layers(stripped_model) == 0
    assert model.get_config() == stripped_model.get_config()


def testStripPruningFunctionalModel(params):
    model = _two_input_model()
    pruned_model = ts.prune_low_magnitude(model, **params)
    stripped_model = ts.strip_pruning(pruned_model)
    assert _count_pruned_layers(stripped_model) == 0
    assert model.get_config() == stripped_model.get_config()


def testPruneScope_NeededForKerasModel(tmp_path):
    # TFMOT needs `prune_scope()` to load its wrappers; tfsparse's are
    # registered, so loading works with and without it.
    pruned_model = ts.prune_low_magnitude(build_simple_dense_model())
    keras_model = tmp_path / "pruned.keras"
    pruned_model.save(keras_model)
    keras.models.load_model(keras_model)
    with ts.prune_scope():
        keras.models.load_model(keras_model)


def testPruneScope_NotNeededForKerasCheckpoint(tmp_path):
    pruned_model = ts.prune_low_magnitude(build_simple_dense_model())
    keras_weights = tmp_path / "pruned.weights.h5"
    pruned_model.save_weights(keras_weights)
    same_architecture_model = ts.prune_low_magnitude(build_simple_dense_model())
    same_architecture_model.load_weights(keras_weights)  # would fail if `prune_scope` were needed
    for saved, loaded in zip(pruned_model.weights, same_architecture_model.weights):
        np.testing.assert_array_equal(saved.numpy(), loaded.numpy())


def testPruneScope_NotNeededForTFCheckpoint(tmp_path):
    pruned_model = ts.prune_low_magnitude(build_simple_dense_model())
    tf_weights = tf.train.Checkpoint(model=pruned_model).write(str(tmp_path / "weights"))
    same_architecture_model = ts.prune_low_magnitude(build_simple_dense_model())
    tf.train.Checkpoint(model=same_architecture_model).read(tf_weights).assert_existing_objects_matched()
    for saved, loaded in zip(pruned_model.weights, same_architecture_model.weights):
        np.testing.assert_array_equal(saved.numpy(), loaded.numpy())


def testPruneScope_NotNeededForTF2SavedModel(tmp_path):
    pruned_model = ts.prune_low_magnitude(build_simple_dense_model())
    saved_model_dir = str(tmp_path / "saved_model")
    tf.saved_model.save(pruned_model, saved_model_dir)
    tf.saved_model.load(saved_model_dir)  # would fail if `prune_scope` were needed


def testPruneScope_NeededForTF1SavedModel():
    pytest.skip("TF1 SavedModel (tf.keras.experimental.export_saved_model) does not exist on Keras 3")
