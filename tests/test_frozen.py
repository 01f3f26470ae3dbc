"""`Frozen`: frozen values untouched by optimizers, regenerated bit-exactly everywhere."""

import copy
import io
import os
import subprocess
import sys
import textwrap
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsparse.layers import Frozen
from tfsparse.layers.frozen import derive_seed, fingerprint, initial_value

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model(seed=5):
    inputs = keras.Input((6, 6, 2))
    x = Frozen(keras.layers.SeparableConv2D(4, 3, depth_multiplier=2, name="sep"), seed=seed)(inputs)
    x = keras.layers.Flatten()(x)
    x = Frozen(keras.layers.Dense(8, activation="tanh", name="hidden"), seed=seed)(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def _frozen(model):
    return [layer for layer in model.layers if isinstance(layer, Frozen)]


def _random_masks(model, fraction=0.3):
    for layer in _frozen(model):
        layer.set_masks([np.random.rand(*w.shape) < fraction for w in layer.prunable_weights])


def _data(n=32):
    return np.random.rand(n, 6, 6, 2).astype("float32"), np.random.randint(0, 3, n)


def _numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def test_fresh_layer_starts_at_its_frozen_values_and_counts_them():
    layer = Frozen(keras.layers.Dense(5, name="d"), seed=3)
    layer.build((None, 4))
    frozen = _numpy(layer.frozen_weights()["kernel"])
    np.testing.assert_array_equal(layer.layer.kernel.numpy(), frozen)
    assert np.std(frozen) > 0
    mask = np.eye(4, 5)
    layer.set_masks([mask])
    layer.layer.kernel.assign(np.full((4, 5), 7.0))
    effective = _numpy(layer.effective_weights()["kernel"])
    np.testing.assert_array_equal(effective, np.where(mask == 1, 7.0, frozen))
    assert layer.summary_fields() == {"trained": 4, "frozen": 16}


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.1),
        lambda: keras.optimizers.Adam(0.05),
        lambda: keras.optimizers.AdamW(0.05, weight_decay=0.5),
    ],
    ids=["sgd_momentum", "adam", "adamw"],
)
def test_frozen_values_are_bit_identical_after_fit(optimizer):
    model = _model()
    _random_masks(model)
    x, y = _data()
    before = [{k: _numpy(v) for k, v in layer.effective_weights().items()} for layer in _frozen(model)]
    model.compile(optimizer(), LOSS)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    for layer, old in zip(_frozen(model), before):
        for (name, new), mask, frozen in zip(layer.effective_weights().items(), layer.masks, layer.frozen_weights().values()):
            new, mask = _numpy(new), mask.numpy() == 1
            np.testing.assert_array_equal(new[~mask], old[name][~mask])
            np.testing.assert_array_equal(new[~mask], _numpy(frozen)[~mask])
            assert np.all(new[mask] != old[name][mask])  # every trained entry moved
        # No variable holds the frozen values: the wrapper adds only its masks.
        assert {id(v) for v in layer.weights} == {id(v) for v in layer.layer.weights + layer.masks}
        assert not any(v.trainable for v in layer.masks)


@pytest.mark.slow
def test_regeneration_is_identical_across_keras_save_and_load(tmp_path):
    model = _model()
    _random_masks(model)
    x, y = _data()
    # Decoupled decay moves the stored variable at frozen positions away from the frozen values.
    model.compile(keras.optimizers.AdamW(0.05, weight_decay=0.5), LOSS)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    for a, b in zip(_frozen(model), _frozen(loaded)):
        for u, v in zip(a.frozen_weights().values(), b.frozen_weights().values()):
            np.testing.assert_array_equal(_numpy(u), _numpy(v))
    # The frozen values are written nowhere in the file.
    with zipfile.ZipFile(tmp_path / "model.keras") as archive, archive.open("model.weights.h5") as file:
        with h5py.File(io.BytesIO(file.read()), "r") as weights:
            stored = []
            weights.visititems(lambda name, item: stored.append(item[()]) if isinstance(item, h5py.Dataset) else None)
    for layer in _frozen(model):
        for frozen, mask in zip(layer.frozen_weights().values(), layer.masks):
            frozen, off = _numpy(frozen), mask.numpy() == 0
            same_shape = [array for array in stored if array.shape == frozen.shape]
            assert same_shape and not any(np.array_equal(array[off], frozen[off]) for array in same_shape)


@pytest.mark.slow
def test_regeneration_is_identical_in_another_process():
    layer = Frozen(keras.layers.Conv2D(6, 3, name="conv"), seed=123, layer_path="block/conv")
    layer.build((None, 8, 8, 3))
    script = textwrap.dedent(
        """
        import keras
        from tfsparse.layers import Frozen
        from tfsparse.layers.frozen import fingerprint
        keras.utils.set_random_seed(99)  # another global state: must not matter
        layer = Frozen(keras.layers.Conv2D(6, 3, name="other"), seed=123, layer_path="block/conv")
        layer.build((None, 8, 8, 3))
        print(fingerprint(layer.frozen_weights()["kernel"]))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.split()[-1] == fingerprint(layer.frozen_weights()["kernel"])


def test_values_depend_on_seed_path_and_weight_not_on_creation_order():
    first = keras.layers.Dense(4, name="a")
    first.build((None, 3))
    keras.layers.Dense(9).build((None, 9))  # other layers created in between
    second = keras.layers.Dense(4, name="b")
    second.build((None, 3))
    same = initial_value(first, "kernel", 1, "x/dense")
    np.testing.assert_array_equal(_numpy(same), _numpy(initial_value(second, "kernel", 1, "x/dense")))
    for other in (initial_value(first, "kernel", 2, "x/dense"), initial_value(first, "kernel", 1, "y/dense")):
        assert not np.any(_numpy(other) == _numpy(same))
    assert len({derive_seed(1, "p", "kernel"), derive_seed(1, "p", "bias"), derive_seed(2, "p", "kernel")}) == 3
    # Each layer's own initializer draws the values (uniform limit of Glorot).
    limit = np.sqrt(6 / (3 + 4))
    assert np.abs(_numpy(same)).max() <= limit


def test_fingerprint_mismatch_and_bad_arguments_raise():
    layer = Frozen(keras.layers.Dense(3, name="d"), seed=4)
    layer.build((None, 2))
    config = layer.get_config()
    assert config["fingerprints"] == {"kernel": fingerprint(layer.frozen_weights()["kernel"])}
    clone = Frozen.from_config(copy.deepcopy(config))
    clone.build((None, 2))
    np.testing.assert_array_equal(_numpy(clone.frozen_weights()["kernel"]), _numpy(layer.frozen_weights()["kernel"]))
    damaged = {**copy.deepcopy(config), "fingerprints": {"kernel": "0" * 64}}
    with pytest.raises(ValueError, match="regenerate differently"):
        Frozen.from_config(damaged).build((None, 2))
    with pytest.raises(ValueError, match="seed"):
        Frozen(keras.layers.Dense(3), seed=2**32)
    with pytest.raises(TypeError, match="seed"):
        Frozen(keras.layers.Dense(3), seed=1.5)
    with pytest.raises(TypeError, match="layer_path"):
        Frozen(keras.layers.Dense(3), seed=1, layer_path=3)
    with pytest.raises(ValueError, match="0/1 arrays of shape"):
        layer.set_masks([np.full((2, 3), 0.5)])
    with pytest.raises(ValueError, match="must hold 1 arrays"):
        layer.set_masks([])
    with pytest.raises(TypeError, match="takes no `seed`"):
        initial_value(_dense_with_unseeded_initializer(), "kernel", 1, "d")


def test_a_plain_function_initializer_is_refused_by_name():
    def ones(shape, dtype=None):
        return keras.ops.ones(shape, dtype=dtype)

    with pytest.raises(TypeError, match=r"weight 'kernel' of layer 'd' is a plain function \('ones'\).*seed"):
        Frozen(keras.layers.Dense(3, kernel_initializer=ones, name="d"), seed=1).build((None, 2))


def _dense_with_unseeded_initializer():
    class Unseeded(keras.initializers.Initializer):
        def __call__(self, shape, dtype=None):
            return keras.random.normal(shape, dtype=dtype)

    dense = keras.layers.Dense(3, kernel_initializer=Unseeded())
    dense.build((None, 2))
    return dense


def test_trains_under_mixed_precision_with_frozen_entries_fixed(mixed_precision):
    layer = Frozen(keras.layers.Dense(5, name="d"), seed=6)
    layer.build((None, 4))
    mask = np.random.default_rng(0).random((4, 5)) < 0.5
    layer.set_masks([mask])
    frozen = keras.ops.convert_to_numpy(layer.frozen_weights()["kernel"])
    x = np.random.default_rng(1).random((3, 4)).astype("float32")
    with tf.GradientTape() as tape:
        out = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(out, "float32") ** 2)
    assert out.dtype == "float16" and layer.layer.kernel.dtype == "float32"
    kernel = layer.layer.kernel
    keras.optimizers.SGD(0.5).apply([tape.gradient(loss, kernel)], [kernel])
    effective = keras.ops.convert_to_numpy(layer.effective_weights()["kernel"])
    np.testing.assert_array_equal(effective[~mask], frozen[~mask])
    assert np.all(effective[mask] != frozen[mask])
    expected = x.astype("float16") @ effective.astype("float16") + layer.layer.bias.numpy().astype("float16")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-2, atol=1e-2)


def test_gradient_passes_straight_through_and_only_trained_entries_change_the_layer():
    layer = Frozen(keras.layers.Dense(5, name="d"), seed=6)
    layer.build((None, 4))
    mask = np.random.rand(4, 5) < 0.5
    layer.set_masks([mask])
    frozen = keras.ops.convert_to_numpy(layer.frozen_weights()["kernel"])
    plain = keras.layers.Dense(5)
    plain.build((None, 4))
    plain.set_weights([keras.ops.convert_to_numpy(layer.effective_weights()["kernel"]), layer.layer.bias.numpy()])
    x = np.random.rand(3, 4).astype("float32")
    with tf.GradientTape(persistent=True) as tape:
        ours = tf.reduce_sum(layer(x) ** 2)
        theirs = tf.reduce_sum(plain(x) ** 2)
    got = tape.gradient(ours, layer.layer.kernel).numpy()
    np.testing.assert_array_equal(got, tape.gradient(theirs, plain.kernel).numpy())
    # A step moves the stored variable everywhere, the effective kernel only where the mask is 1.
    keras.optimizers.SGD(0.5).apply([got], [layer.layer.kernel])
    effective = keras.ops.convert_to_numpy(layer.effective_weights()["kernel"])
    np.testing.assert_array_equal(effective[~mask], frozen[~mask])
    assert np.all(effective[mask] != plain.kernel.numpy()[mask])
    assert np.all(layer.layer.kernel.numpy()[~mask] != frozen[~mask])
