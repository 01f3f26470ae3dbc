"""Every model transform returns an uncompiled model and never reads the compile state."""

import keras
import numpy as np
import pytest

import tfsparse as ts
from tfsparse.surgery import copy_layer


class UnregisteredSGD(keras.optimizers.SGD):
    """An optimizer subclass that Keras cannot deserialize (it is not registered)."""


def _functional():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    branch = keras.layers.Conv2D(8, 3, padding="same", name="branch")(x)
    x = keras.layers.Add(name="block_add")([x, branch])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="classifier")(x))


def _sequential():
    return keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(6, name="fc"), keras.layers.Dense(4)]
    )


def _data():
    return np.random.rand(8, 8, 8, 3).astype("float32"), np.random.randint(0, 4, 8)


TRANSFORMS = {
    "prune_low_magnitude": lambda m: ts.prune_low_magnitude(m, ts.schedules.ConstantSparsity(0.5, 0)),
    "snip": lambda m: ts.snip(m, 0.5, _data()),
    "freezenet": lambda m: ts.freezenet(m, 0.5, _data(), seed=1),
    "lottery_jackpot": lambda m: ts.lottery_jackpot(m, 0.5, seed=1),
    "strip": ts.strip,
    "reinitialize": lambda m: ts.methods.reinitialize(m, seed=3),
    "remove_channels": lambda m: ts.surgery.remove_channels(m, {"stem": [0]}),
    "merge_channels": lambda m: ts.surgery.merge_channels(m, {"stem": [[0, 1]]}),
    "replace_layer": lambda m: ts.surgery.replace_layer(m, "classifier", copy_layer),
    "remove_blocks": lambda m: ts.surgery.remove_blocks(m, ["block_add"]),
}
SEQUENTIAL = ["prune_low_magnitude", "snip", "freezenet", "lottery_jackpot", "strip", "reinitialize"]


def _compiled(model):
    model.compile(UnregisteredSGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*_data(), verbose=0)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_of_a_model_compiled_with_an_unregistered_optimizer(name):
    model = _compiled(_functional())
    new = TRANSFORMS[name](model)
    assert new is not model and not new.compiled
    assert model.compiled and isinstance(model.optimizer, UnregisteredSGD)


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_transform_of_a_compiled_sequential_model(name):
    new = TRANSFORMS[name](_compiled(_sequential()))
    assert not new.compiled


def test_wrapped_model_strips_after_compiling():
    pruned = _compiled(ts.prune_low_magnitude(_functional(), ts.schedules.ConstantSparsity(0.5, 0)))
    assert not ts.strip(pruned).compiled
    assert not ts.surgery.remove_channels(pruned, {"stem": [0]}).compiled


class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(6)
        self.head = keras.layers.Dense(4)

    def call(self, x, training=None):
        return self.head(self.hidden(x, training=training), training=training)


def test_subclassed_model_changed_in_place_is_left_uncompiled_and_trains_its_new_layers():
    model = SubclassedNet()
    x, y = np.random.rand(8, 5).astype("float32"), np.random.randint(0, 4, 8)
    model(x)
    model.compile(UnregisteredSGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, verbose=0)  # traces a train step over the old layers
    pruned = ts.prune_low_magnitude(model, ts.schedules.ConstantSparsity(0.5, begin_step=1))
    assert pruned is model and not pruned.compiled
    pruned.compile(UnregisteredSGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    kernel = pruned.hidden.layer.kernel.numpy()
    pruned.fit(x, y, verbose=0)
    assert not np.array_equal(kernel, pruned.hidden.layer.kernel.numpy())
    assert int(np.sum(pruned.hidden.masks[0].numpy() == 0)) == 15


def _with_lambda():
    """`_functional()` with a Lambda layer before the classifier."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    branch = keras.layers.Conv2D(8, 3, padding="same", name="branch")(x)
    x = keras.layers.Add(name="block_add")([x, branch])
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Lambda(lambda t: 2.0 * t, name="double")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="classifier")(x))


# Channel surgery through the Lambda is refused by name: the graph cannot map its channels.
THROUGH_LAMBDA = sorted(set(TRANSFORMS) - {"remove_channels", "merge_channels"})


@pytest.mark.parametrize(
    "name", [n if n in SEQUENTIAL[:3] else pytest.param(n, marks=pytest.mark.slow) for n in THROUGH_LAMBDA]
)
def test_transform_keeps_a_lambda_layer_as_it_is(name):
    model = _with_lambda()
    new = TRANSFORMS[name](model)
    assert new.get_layer("double").function is model.get_layer("double").function
    x, _ = _data()
    assert new.predict(x, verbose=0).shape == (8, 4)
