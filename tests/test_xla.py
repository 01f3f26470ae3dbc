"""Every wrapper trains under XLA (`jit_compile=True`) with the masks it has without."""

import keras
import numpy as np
import pytest

import tfsparse as ts
from tfsparse.layers import Frozen, Scored


def _lenet():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(12, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def _pruned(**kwargs):
    schedule = ts.schedules.PolynomialDecay(0.0, 0.75, begin_step=1, end_step=4, frequency=1)
    return ts.prune_low_magnitude(_lenet(), schedule, **kwargs)


def _frozen():
    inputs = keras.Input((8,))
    # Named paths: the frozen values are drawn from (seed, path).
    x = Frozen(keras.layers.Dense(12, activation="relu"), seed=3, layer_path="hidden")(inputs)
    model = keras.Model(inputs, Frozen(keras.layers.Dense(4), seed=3, layer_path="out")(x))
    rng = np.random.default_rng(1)
    for layer in model.layers[1:]:
        layer.set_masks([rng.integers(0, 2, w.shape) for w in layer.prunable_weights])
    return model


def _scored(rate=None):
    inputs = keras.Input((8,))
    x = Scored(keras.layers.Dense(12, activation="relu"), sparsity=0.5, init="random", seed=5)(inputs)
    model = keras.Model(inputs, Scored(keras.layers.Dense(4), sparsity=0.5, init="random", seed=6)(x))
    for layer in model.layers[1:]:
        layer.restrict(rate)
    return model


BUILDERS = {
    "layer": lambda: _pruned(),
    "global": lambda: _pruned(scope="global"),
    "block": lambda: _pruned(block_size=(2, 2)),
    "m_by_n": lambda: _pruned(sparsity_m_by_n=(2, 4)),
    "frozen": _frozen,
    "scored": _scored,
    "scored_restricted": lambda: _scored(rate=0.5),
}


def _trained_state(name, jit_compile):
    """Masks and trainable weights of model `name` after 4 training steps."""
    keras.utils.set_random_seed(0)
    model = BUILDERS[name]()
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit_compile)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(32, 8)).astype("float32"), rng.integers(0, 4, 32)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    masks = [m.numpy() for layer in model.layers[1:] for m in layer.masks]
    return masks, [w.numpy() for w in model.trainable_weights]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_training_under_xla_gives_the_masks_of_training_without(name):
    masks, weights = _trained_state(name, jit_compile=False)
    xla_masks, xla_weights = _trained_state(name, jit_compile=True)
    assert all(m.dtype == x.dtype for m, x in zip(masks, xla_masks))
    for mask, xla_mask in zip(masks, xla_masks):
        np.testing.assert_array_equal(xla_mask, mask)
    for weight, xla_weight in zip(weights, xla_weights):
        np.testing.assert_allclose(xla_weight, weight, rtol=1e-4, atol=1e-5)
    if name not in ("frozen", "scored", "scored_restricted"):  # their masks are not from a schedule
        assert all(0 < m.mean() < 1 for m in masks)
