"""Tests of the short restriction rule and its callback."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.layers import Scored
from tfsparse.layers.scored import short_restriction


def _rule(scores, mask, num_pruned, rate):
    """The rule written out weight by weight."""
    s, m = scores.ravel(), mask.ravel().copy()
    threshold = np.sort(s)[num_pruned - 1]
    revive = [i for i in range(s.size) if m[i] == 0 and s[i] > threshold]
    remove = [i for i in range(s.size) if m[i] == 1 and s[i] <= threshold]
    if revive and len(revive) == len(remove):
        n = math.ceil(rate * len(revive))
        m[sorted(revive, key=lambda i: -s[i])[:n]] = 1
        m[sorted(remove, key=lambda i: s[i])[:n]] = 0
    return m.reshape(mask.shape)


def _apply(scores, mask, num_pruned, rate):
    return short_restriction(tf.constant(scores), tf.constant(mask), num_pruned, rate).numpy()


def test_equal_candidates_swap_the_best_pairs():
    scores = np.array([0.5, 0.9, 0.1, 0.8, 0.3, 0.7], "float32")
    mask = np.array([1, 0, 1, 0, 1, 0], "float32")  # keeps 0.5, 0.1, 0.3
    # threshold = 3rd smallest = 0.5: revive 0.9, 0.8, 0.7; remove 0.5, 0.1, 0.3.
    np.testing.assert_array_equal(_apply(scores, mask, 3, 1.0), [0, 1, 0, 1, 0, 1])
    # ceil(0.5 * 3) = 2 pairs: revive 0.9 and 0.8, remove 0.1 and 0.3.
    np.testing.assert_array_equal(_apply(scores, mask, 3, 0.5), [1, 1, 0, 1, 0, 0])
    # Any positive rate swaps at least one pair; rate 0 swaps none.
    np.testing.assert_array_equal(_apply(scores, mask, 3, 0.01), [1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(_apply(scores, mask, 3, 0.0), mask)


def test_unequal_candidates_leave_the_mask_unchanged():
    # Ties at the threshold: 2 kept entries at or below it, 1 pruned above it.
    scores = np.array([0.4, 0.4, 0.9, 0.1], "float32")
    mask = np.array([1, 1, 0, 0], "float32")
    np.testing.assert_array_equal(_apply(scores, mask, 2, 1.0), mask)
    # No candidates at all.
    scores = np.array([0.9, 0.8, 0.2, 0.1], "float32")
    mask = np.array([1, 1, 0, 0], "float32")
    np.testing.assert_array_equal(_apply(scores, mask, 2, 1.0), mask)


def test_rate_one_without_ties_is_top_k_of_the_scores():
    rng = np.random.default_rng(2)
    for _ in range(20):
        size = int(rng.integers(4, 200))
        num_pruned = int(rng.integers(1, size))
        scores = rng.permutation(size).astype("float32")  # distinct values
        mask = np.zeros(size, "float32")
        mask[rng.permutation(size)[: size - num_pruned]] = 1
        top_k = (scores >= np.sort(scores)[num_pruned]).astype("float32")
        np.testing.assert_array_equal(_apply(scores, mask, num_pruned, 1.0), top_k)


@pytest.mark.parametrize("rate", [1.0, 0.5, 0.3, 0.0])
def test_rule_matches_the_weight_by_weight_rule_and_keeps_counts(rate):
    rng = np.random.default_rng(1)
    swapped = 0
    for trial in range(60):
        shape = (rng.integers(2, 7), rng.integers(2, 7))
        size = shape[0] * shape[1]
        num_pruned = int(rng.integers(1, size))
        # Few distinct values: many ties at the threshold.
        values = rng.integers(0, 4 if trial % 2 else 1000, size) / 4.0
        scores = values.reshape(shape).astype("float32")
        mask = np.zeros(size, "float32")
        mask[rng.permutation(size)[: size - num_pruned]] = 1
        mask = mask.reshape(shape)
        new = _apply(scores, mask, num_pruned, rate)
        np.testing.assert_array_equal(new, _rule(scores, mask, num_pruned, rate))
        assert int(new.sum()) == size - num_pruned
        swapped += int(np.any(new != mask))
    assert (swapped > 0) == (rate > 0)


def test_rule_runs_in_the_training_step_right_after_each_optimizer_step():
    model = keras.Sequential([keras.Input((6,)), Scored(keras.layers.Dense(5), sparsity=0.6), keras.layers.Dense(3)])
    layer = model.layers[0]
    layer.restrict(0.5)
    optimizer = keras.optimizers.SGD(2.0)
    x = np.random.rand(16, 6).astype("float32")
    y = np.random.randint(0, 3, 16)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kernel = layer.layer.kernel.numpy()
    changed = 0
    for _ in range(12):
        before = layer.masks[0].numpy()
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        stored = layer.masks[0].numpy()
        expected = _rule(layer.scores[0].numpy(), stored, 18, 0.5)
        # Between steps, inference already sees the rule's result ...
        np.testing.assert_array_equal(layer.effective_weights()["kernel"], kernel * expected)
        # ... which the next training call stores.
        model(x, training=True)
        np.testing.assert_array_equal(layer.masks[0].numpy(), expected)
        assert int(expected.sum()) == 12
        changed += int(np.any(expected != stored))
        assert before.sum() == stored.sum()
    assert changed > 0


def _search_model(seed=0):
    keras.utils.set_random_seed(seed)
    base = ts.models.lenet_300_100((8, 8, 1))
    return ts.lottery_jackpot(base, 0.9, seed=seed)


def _data():
    return np.random.rand(64, 8, 8, 1).astype("float32"), np.random.randint(0, 10, 64)


class _Recorder(keras.callbacks.Callback):
    """Records each Scored layer's mask and rate at the end of every epoch."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers
        self.masks, self.rates = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.masks.append([layer.masks[0].numpy() for layer in self.layers])
        self.rates.append([float(layer.swap_rate.numpy()) for layer in self.layers])


def _fit(model, callbacks, epochs=3, lr=5.0):
    x, y = _data()
    model.compile(keras.optimizers.SGD(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    layers = [layer for layer in model.layers if isinstance(layer, Scored)]
    recorder = _Recorder(layers)
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=[*callbacks, recorder])
    return layers, recorder


def test_callback_turns_the_rule_on_with_a_scheduled_rate():
    model = _search_model()
    layers, recorder = _fit(model, [ts.callbacks.ShortRestriction(rate=lambda epoch: 1.0 / (epoch + 1))])
    assert all(bool(layer.restricted.numpy()) for layer in layers)
    assert recorder.rates == [[1.0] * 2, [0.5] * 2, [pytest.approx(1 / 3)] * 2]
    for masks in recorder.masks:
        assert [int(m.sum()) for m in masks] == [m.size - layer.num_pruned[0] for m, layer in zip(masks, layers)]


@pytest.mark.slow
def test_rate_zero_freezes_the_mask_while_plain_reranking_moves_it():
    frozen_layers, frozen = _fit(_search_model(), [ts.callbacks.ShortRestriction(rate=0.0)])
    moving_layers, moving = _fit(_search_model(), [])
    initial = [layer.initial_masks()[0].numpy() for layer in frozen_layers]
    for masks in frozen.masks:
        assert all(np.array_equal(m, i) for m, i in zip(masks, initial))
    assert sum(layer.summary_fields()["hamming"] for layer in moving_layers) > 0
    assert not any(bool(layer.restricted.numpy()) for layer in moving_layers)


def test_callback_errors():
    with pytest.raises(ValueError, match="rate"):
        ts.callbacks.ShortRestriction(rate=1.5)
    with pytest.raises(TypeError, match="rate"):
        ts.callbacks.ShortRestriction(rate="fast")
    plain = ts.models.lenet_300_100((8, 8, 1))
    plain.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="Scored"):
        plain.fit(*_data(), epochs=1, verbose=0, callbacks=[ts.callbacks.ShortRestriction()])
    with pytest.raises(ValueError, match="rate"):
        _fit(_search_model(), [ts.callbacks.ShortRestriction(rate=lambda epoch: 2.0)], epochs=1)
    config = ts.callbacks.ShortRestriction(rate=0.25).get_config()
    assert ts.callbacks.ShortRestriction.from_config(config).rate == 0.25
