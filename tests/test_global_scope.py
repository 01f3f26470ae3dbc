"""Global-scope magnitude pruning: one group per model, updated before any member runs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.layers import Masked


def _masked_layers(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, Masked)]


def _kept(model):
    return [int(layer.masks[0].numpy().sum()) for layer in _masked_layers(model)]


def _data(n=16):
    rng = np.random.default_rng(0)
    return rng.random((n, 6), dtype="float32"), rng.integers(0, 3, n)


class CalledOutOfOrder(keras.Model):
    """`head` is created first (group index 0) but runs last."""

    def __init__(self):
        super().__init__()
        self.head = keras.layers.Dense(3, name="head")
        self.body = keras.layers.Dense(8, name="body")

    def call(self, x, training=None):
        return self.head(self.body(x))


def _out_of_order(schedule):
    model = CalledOutOfOrder()
    model(np.zeros((1, 6), "float32"))
    return ts.prune_low_magnitude(model, schedule, scope="global")


def _dense_model():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, name="fc1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc2")(x))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_first_training_call_uses_new_masks_of_every_member(compiled):
    x, _ = _data()
    model = _out_of_order(ts.schedules.ConstantSparsity(0.75, begin_step=0, frequency=1))
    assert [layer.group["index"] for layer in (model.head, model.body)] == [0, 1]
    call = tf.function(lambda x: model(x, training=True)) if compiled else (lambda x: model(x, training=True))
    outputs = call(x)
    sizes = [layer.masks[0].shape.num_elements() for layer in _masked_layers(model)]
    assert all(0 < kept < size for kept, size in zip(_kept(model), sizes))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs), ts.strip(model)(x), rtol=1e-6, atol=1e-6)


def test_members_update_once_per_call_and_agree_on_the_step():
    model = _out_of_order(ts.schedules.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=3, frequency=1))
    x, _ = _data()
    sizes = [layer.masks[0].shape.num_elements() for layer in _masked_layers(model)]
    for step in range(1, 4):
        model(x, training=True)
        target = float(model.head.pruning_schedule.sparsity(step))
        assert sum(sizes) - sum(_kept(model)) == round(target * sum(sizes))
        assert [int(layer.pruning_step.numpy()) for layer in _masked_layers(model)] == [step, step]


def test_clone_is_its_own_group():
    x, _ = _data()
    model = ts.prune_low_magnitude(_dense_model(), ts.schedules.ConstantSparsity(0.5, 0, frequency=1), scope="global")
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone(x, training=True)
    assert _kept(model) == [48, 24]  # untouched: all ones
    assert sum(_kept(clone)) == 72 - round(0.5 * 72)
    model(x, training=True)
    assert _kept(model) == _kept(clone)


@pytest.mark.parametrize("run_eagerly", [False, True], ids=["compiled", "run_eagerly"])
def test_fit_prunes_the_whole_group(run_eagerly):
    x, y = _data()
    model = _out_of_order(ts.schedules.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=4, frequency=2))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=run_eagerly)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    total = sum(layer.masks[0].shape.num_elements() for layer in _masked_layers(model))
    assert total - sum(_kept(model)) == round(0.8 * total)


def test_mirrored_strategy_updates_the_group_on_every_replica(two_replica_strategy):
    x, y = _data(32)
    with two_replica_strategy.scope():
        schedule = ts.schedules.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=4, frequency=2)
        model = ts.prune_low_magnitude(_dense_model(), schedule, scope="global")
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    replicas = [[v.numpy() for v in layer.masks[0].value.values] for layer in _masked_layers(model)]
    for copies in replicas:
        assert len(copies) == 2 and np.array_equal(copies[0], copies[1])
    total = sum(copies[0].size for copies in replicas)
    assert sum(int(np.sum(copies[0] == 0)) for copies in replicas) == round(0.8 * total)


class Holder(keras.Model):
    """Holds two members of a group and calls only the second."""

    def __init__(self, first, second):
        super().__init__()
        self.first = first
        self.second = second

    def call(self, x, training=None):
        return self.second(x)


def test_missing_or_unbuilt_members_are_named():
    model = ts.prune_low_magnitude(_dense_model(), ts.schedules.ConstantSparsity(0.5, 0, frequency=1), scope="global")

    def member(name):
        return Masked.from_config(model.get_layer(name).get_config())

    name = model.get_layer("prune_low_magnitude_fc1").group["name"]
    x = np.ones((1, 8), "float32")
    alone = keras.Sequential([keras.Input((8,)), member("prune_low_magnitude_fc2")])
    with pytest.raises(RuntimeError, match=rf"group '{name}' of 2 layers is incomplete.*missing: \[0\], unbuilt: \[\]"):
        alone(x, training=True)
    holder = Holder(member("prune_low_magnitude_fc1"), member("prune_low_magnitude_fc2"))
    with pytest.raises(RuntimeError, match=rf"group '{name}' of 2 layers is incomplete.*missing: \[\], unbuilt: \[0\]"):
        holder(x, training=True)
    holder(x)  # inference needs no group


def test_an_index_twice_under_one_model_is_an_error():
    x, _ = _data()
    pruned = ts.prune_low_magnitude(_dense_model(), ts.schedules.ConstantSparsity(0.5, 0, frequency=1), scope="global")
    twin = keras.Sequential([keras.models.clone_model(pruned)], name="twin")
    inputs = keras.Input((6,))
    both = keras.Model(inputs, [pruned(inputs), twin(inputs)])
    name = pruned.get_layer("prune_low_magnitude_fc1").group["name"]
    with pytest.raises(RuntimeError, match=rf"group '{name}'.*indices \[0, 1\] appear more than once"):
        both(x, training=True)
