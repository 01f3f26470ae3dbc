"""A surgically pruned model is an ordinary Keras model: it trains, saves, loads and converts."""

import os

import keras
import numpy as np
import pytest

import tfsparse as ts
from tfsparse.surgery import dependency_groups, merge_channels, remove_channels


def _small_mobilenet():
    """One inverted residual block: 1x1 expansion, depthwise, 1x1 projection added to its input."""
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same", name="stem")(inputs)))
    y = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(16, 1, name="expand")(x)))
    y = layers.ReLU(6.0)(layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same")(y)))
    y = layers.BatchNormalization()(layers.Conv2D(8, 1, name="project")(y))
    x = layers.GlobalAveragePooling2D()(layers.Add()([x, y]))
    return keras.Model(inputs, layers.Dense(10, name="logits")(x))


def _pruned():
    model = _small_mobilenet()
    request = {g.producers[0]: [0, 2] for g in dependency_groups(model) if g.prunable}
    assert set(request) == {"stem", "expand"}
    return remove_channels(model, request), request


@pytest.mark.slow
def test_pruned_model_trains_saves_loads_and_converts_to_tflite(tmp_path):
    pruned, request = _pruned()
    x = np.random.rand(16, 8, 8, 3).astype("float32")
    y = np.random.randint(0, 10, 16)
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in pruned.get_weights()]
    history = pruned.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, pruned.get_weights()))

    path = os.path.join(tmp_path, "pruned.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0))
    for name in request:
        assert loaded.get_layer(name).filters == pruned.get_layer(name).filters

    report = ts.export.tflite(pruned, os.path.join(tmp_path, "pruned.tflite"), sparse=False, sample_inputs=x[:4])
    assert report.max_abs_diff < 1e-4


def test_merged_model_saves_and_loads(tmp_path):
    model = _small_mobilenet()
    merged = merge_channels(model, {"project": [[0, 1, 2]], "expand": [[3, 4]]})
    path = os.path.join(tmp_path, "merged.keras")
    merged.save(path)
    x = np.random.rand(4, 8, 8, 3).astype("float32")
    np.testing.assert_array_equal(keras.models.load_model(path).predict(x, verbose=0), merged.predict(x, verbose=0))
    assert merged.get_layer("stem").filters == model.get_layer("stem").filters - 2
