"""TFMOT's `pruning_wrapper_test.py` (the `PruneLowMagnitude` wrapper), on Keras 3 and tfsparse.

TFMOT's `PruneLowMagnitude(layer, ...)` is `tfsparse.prune_low_magnitude(layer, ...)` (a
`tfsparse.layers.Masked` wrapper), and its `pruning_vars` are the wrapper's `masks`.
"""

import keras
import pytest
import tensorflow as tf

import tfsparse as ts
from compat_utils import pruned_layers

Prune = ts.prune_low_magnitude


class CustomLayer(keras.layers.Layer):
    """A custom layer which is not prunable."""

    def __init__(self, input_dim=16, output_dim=32):
        super().__init__()
        self.weight = self.add_weight(shape=(input_dim, output_dim), initializer="random_normal", trainable=True)
        self.bias = self.add_weight(shape=(output_dim,), initializer="zeros", trainable=True)

    def call(self, inputs):
        return tf.matmul(inputs, self.weight) + self.bias


class CustomLayerPrunable(CustomLayer):
    """The same layer with TFMOT's `get_prunable_weights`."""

    def get_prunable_weights(self):
        return [self.weight, self.bias]


@pytest.fixture
def params():
    return {
        "pruning_schedule": ts.schedules.ConstantSparsity(0.5, 0),
        "block_size": (1, 1),
        "block_pooling_type": "AVG",
    }


def _mask_count(model):
    return sum(len(layer.masks) for layer in pruned_layers(model))


def testPruneWrapperAllowsOnlyValidPoolingType():
    layer = keras.layers.Dense(10)
    with pytest.raises(ValueError):
        Prune(layer, block_pooling_type="MIN")
    Prune(layer, block_pooling_type="AVG")
    Prune(layer, block_pooling_type="MAX")


def testDense(params):
    model = keras.Sequential([Prune(keras.layers.Dense(10), **params)])
    model.build(input_shape=(10, 1))
    assert _mask_count(model) == 1


def testEmbedding(params):
    model = keras.Sequential([Prune(keras.layers.Embedding(10, 10), input_shape=(10,), **params)])
    # Upstream then calls `model.build(input_shape=(10, 1))`, which Keras 3
    # refuses for a model whose input shape is set: `input_shape` builds it.
    assert model.built
    assert _mask_count(model) == 1


def testConv2D(params):
    model = keras.Sequential([Prune(keras.layers.Conv2D(4, (3, 3)), **params)])
    model.build(input_shape=(1, 16, 16, 4))
    assert _mask_count(model) == 1


def testPruneModel():
    model = keras.Sequential([
        Prune(keras.layers.Conv2D(32, 5)),
        Prune(keras.layers.MaxPooling2D((2, 2), (2, 2))),
        Prune(keras.layers.Conv2D(64, 5)),
        Prune(keras.layers.MaxPooling2D((2, 2), (2, 2))),
        Prune(keras.layers.Flatten()),
        Prune(keras.layers.Dense(1024)),
        Prune(keras.layers.Dropout(0.4)),
        Prune(keras.layers.Dense(10)),
    ])
    model.build(input_shape=(1, 28, 28, 1))
    assert _mask_count(model) == 4

    # Test serialization
    model_config = model.get_config()
    pruned_model_config = model.__class__.from_config(model_config).get_config()
    for layer in model_config["layers"] + pruned_model_config["layers"]:
        layer.pop("build_config", None)
    assert model_config == pruned_model_config


def testCustomLayerNonPrunable():
    layer = CustomLayer(input_dim=16, output_dim=32)
    layer(keras.layers.Input(shape=(16,)))
    with pytest.raises(ValueError):
        Prune(layer, block_pooling_type="MAX")


def testCustomLayerPrunable():
    layer = CustomLayerPrunable(input_dim=16, output_dim=32)
    layer(keras.layers.Input(shape=(16,)))
    pruned_layer = Prune(layer, block_pooling_type="MAX")
    # The name is the layer's name prefixed by `prune_low_magnitude_`.
    assert pruned_layer.name == "prune_low_magnitude_custom_layer_prunable"


def testCollectPrunableLayers():
    lstm_layer = keras.layers.RNN(keras.layers.LSTMCell(4, dropout=0.5, recurrent_dropout=0.5))
    model = keras.Sequential([
        keras.Input((None, 4)),
        Prune(lstm_layer),
        Prune(keras.layers.BatchNormalization()),
        Prune(keras.layers.Flatten()),
        Prune(keras.layers.Dense(10)),
        Prune(keras.layers.Dropout(0.5)),
    ])
    # TFMOT wraps all 5 layers (3 in wrappers that prune nothing); tfsparse
    # wraps the 2 with weights to prune.
    assert len(pruned_layers(model)) == 2


def testConv3DWeightNotPrunedWithSparsityMbyN():
    # TFMOT applies m-by-n sparsity to rank-2 and rank-4 weights only and
    # leaves a Conv3D kernel dense (TFMOT 0.8.1 even fails to train it);
    # tfsparse prunes m of every n along the input channels of any
    # convolution kernel. With 1 input channel, no group is full: nothing is
    # pruned, as in TFMOT.
    layer = keras.layers.Conv3D(2, 3)
    model = keras.Sequential([keras.Input((4, 6, 6, 1)), Prune(layer, sparsity_m_by_n=(2, 4))])
    model(tf.random.normal((1, 4, 6, 6, 1)), training=True)
    (wrapper,) = pruned_layers(model)
    assert len(wrapper.masks) == 1
    assert bool(tf.reduce_all(wrapper.masks[0]))
