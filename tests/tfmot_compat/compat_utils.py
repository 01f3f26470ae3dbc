"""What TFMOT's pruning tests share (its `test_utils` modules), for Keras 3 and tfsparse.

TFMOT's wrapper writes `kernel * mask` into the kernel, so its tests read the
sparsity of the stored weights. A tfsparse wrapper applies the mask in `call`
and leaves the stored kernel alone: the sparsity that matters, and the one
read here, is that of the *effective* weights (what the layer computes with,
and what `strip_pruning` exports).
"""

import keras
import numpy as np

import tfsparse as ts
from tfsparse.layers import Masked


def build_simple_dense_model():
    """TFMOT's `keras.test_utils.build_simple_dense_model`: 10 -> Dense(8) -> Dense(5)."""
    return keras.Sequential([
        keras.Input((10,)),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(5, activation="softmax"),
    ])


def _mnist_layer_list():
    return [
        keras.layers.Conv2D(32, 5, padding="same", activation="relu", input_shape=(28, 28, 1)),
        keras.layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.Conv2D(64, 5, padding="same", activation="relu"),
        keras.layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(1024, activation="relu"),
        keras.layers.Dropout(0.4),
        keras.layers.Dense(10, activation="softmax"),
    ]


def _mnist_functional_model():
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(32, 5, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D((2, 2), (2, 2), padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(64, 5, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D((2, 2), (2, 2), padding="same")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(1024, activation="relu")(x)
    x = keras.layers.Dropout(0.4)(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def _mnist_layerwise_pruned_model(params):
    prune = ts.prune_low_magnitude
    return keras.Sequential([
        prune(keras.layers.Conv2D(32, 5, padding="same", activation="relu"), input_shape=(28, 28, 1), **params),
        keras.layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
        keras.layers.BatchNormalization(),
        prune(keras.layers.Conv2D(64, 5, padding="same", activation="relu"), **params),
        keras.layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
        keras.layers.Flatten(),
        prune(keras.layers.Dense(1024, activation="relu"), **params),
        keras.layers.Dropout(0.4),
        prune(keras.layers.Dense(10, activation="softmax"), **params),
    ])


MODEL_TYPES = ("sequential", "functional", "layer_list", "layer_wise")


def build_mnist_model(model_type, params=None):
    """TFMOT's `build_mnist_model`: the same MNIST CNN as a Sequential or functional model, a layer list, or pruned layer by layer."""
    return {
        "sequential": lambda: keras.Sequential(_mnist_layer_list()),
        "functional": _mnist_functional_model,
        "layer_list": _mnist_layer_list,
        "layer_wise": lambda: _mnist_layerwise_pruned_model(params),
    }[model_type]()


def pruned_layers(model):
    """The tfsparse pruning wrappers of `model`, nested models included (TFMOT's `collect_prunable_layers`)."""
    return [layer for _, layer in ts.walk.wrappers(model) if isinstance(layer, Masked)]


def sparsity(value):
    value = keras.ops.convert_to_numpy(value)
    return 1.0 - np.count_nonzero(value) / value.size


def assert_model_sparsity(expected, model, rtol=1e-6, atol=1e-6):
    """Every prunable weight of every wrapper has sparsity `expected` (TFMOT's helper, on effective weights)."""
    for layer in pruned_layers(model):
        for name, value in layer.effective_weights().items():
            np.testing.assert_allclose(sparsity(value), expected, rtol=rtol, atol=atol, err_msg=f"{layer.name}/{name}")


def is_model_sparsity_not(expected, model):
    """True if some prunable weight of some wrapper does not have sparsity `expected`."""
    return any(
        sparsity(value) != expected for layer in pruned_layers(model) for value in layer.effective_weights().values()
    )


def random_categorical(samples=20, classes=5, features=10):
    """TFMOT's usual training data: uniform inputs and one-hot labels."""
    x = np.random.rand(samples, features).astype("float32")
    y = keras.utils.to_categorical(np.random.randint(classes, size=(samples, 1)), classes)
    return x, y


def assert_strip_pruning_matches_original(model, expected, input_data=None):
    """TFMOT's `_check_strip_pruning_matches_original`: the stripped model computes what the pruned one does."""
    assert_model_sparsity(expected, model)
    stripped = ts.strip_pruning(model)
    if input_data is None:
        input_data = np.random.randn(1, *model.input_shape[1:]).astype("float32")
    np.testing.assert_almost_equal(model.predict(input_data, verbose=0), stripped.predict(input_data, verbose=0))
