"""tfsparse.register_layer: one call makes a custom layer prunable, operable, countable and seedable."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tfsparse as ts  # noqa: E402


@keras.saving.register_keras_serializable(package="test_registry")
class Affine(keras.layers.Layer):
    """A Dense written from scratch: Keras and tfsparse know nothing of it."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.kernel_initializer = keras.initializers.GlorotUniform()

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, inputs):
        return inputs @ self.kernel + self.bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


ts.register_layer(
    Affine,
    prunable=("kernel",),
    channels=ts.registry.kernel_rule(-2, -1, "units"),
    flops=ts.registry.kernel_flops(ts.registry.output_positions, ("kernel",)),
)


def _model():
    inputs = keras.Input((6,))
    hidden = keras.layers.ReLU()(Affine(8, name="hidden")(inputs))
    return keras.Model(inputs, Affine(3, name="out")(hidden))


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 6)).astype("float32"), rng.integers(0, 3, 32)


def test_a_registered_layer_is_pruned_to_the_schedule():
    pruned = ts.prune_low_magnitude(_model(), ts.schedules.ConstantSparsity(0.75, 0, frequency=1))
    x, y = _data()
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=32, epochs=1, verbose=0)
    kernels = [w.layer.kernel for w in pruned.layers if isinstance(w, ts.layers.Masked)]
    masks = [w.masks[0].numpy() for w in pruned.layers if isinstance(w, ts.layers.Masked)]
    assert [k.shape for k in kernels] == [(6, 8), (8, 3)]
    assert [int(m.sum()) for m in masks] == [12, 6]


def test_a_registered_layer_loses_channels_in_surgery_exactly():
    model = _model()
    x, _ = _data()
    hidden = model.get_layer("hidden")
    kernel, bias = hidden.get_weights()
    kernel[:, [1, 4]] = 0.0
    bias[[1, 4]] = 0.0
    hidden.set_weights([kernel, bias])
    small = ts.surgery.remove_channels(model, {"hidden": [1, 4]})
    assert small.get_layer("hidden").units == 6
    assert small.get_layer("out").kernel.shape == (6, 3)
    np.testing.assert_allclose(small(x), model(x), atol=1e-6)


def test_a_registered_layer_counts_its_flops():
    info = ts.summary(_model(), print_fn=None)
    assert [row["flops"] for row in info.rows if row["type"] == "Affine"] == [2 * 6 * 8, 2 * 8 * 3]


def test_a_registered_layer_is_frozen_at_its_seeded_init():
    x, y = _data()
    model = ts.freezenet(_model(), 0.9, (x, y), seed=5)
    frozen = [layer for layer in model.layers if isinstance(layer, ts.layers.Frozen)]
    assert [layer.layer.name for layer in frozen] == ["hidden", "out"]
    redrawn = ts.methods.reinitialize(_model(), seed=5).get_layer("hidden").kernel.numpy()
    np.testing.assert_array_equal(frozen[0].frozen_weights()["kernel"], redrawn)


def test_registration_is_checked():
    with pytest.raises(ValueError, match=r"`cls` \(Affine\) is already registered; pass `replace=True`"):
        ts.register_layer(Affine, prunable=("kernel",))
    with pytest.raises(TypeError, match=r"`cls` must be a keras.layers.Layer subclass, received: 3"):
        ts.register_layer(3)
    with pytest.raises(TypeError, match=r"`prunable` must be a tuple of weight names, received: 'kernel'"):
        ts.register_layer(keras.layers.Layer, prunable="kernel")
    with pytest.raises(TypeError, match=r"cannot be pruned.*tfsparse.register_layer"):
        ts.layers.Masked(keras.layers.LayerNormalization())
