"""`tfsparse.distribute.train` trains as `model.fit` does, under any strategy, and resumes from checkpoints."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse import cli

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _dataset():
    rng = np.random.RandomState(0)
    x = rng.rand(64, 8, 8, 1).astype("float32")
    y = rng.randint(0, 10, 64).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16, drop_remainder=True)


def _pruned(strategy=None):
    """A small pruned model, compiled under `strategy`, the same weights every time."""
    with (strategy or tf.distribute.get_strategy()).scope():
        keras.utils.set_random_seed(1)
        model = ts.models.lenet_300_100((8, 8, 1))
        schedule = ts.schedules.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=10, frequency=2)
        pruned = ts.prune_low_magnitude(model, schedule)
        pruned.compile(keras.optimizers.SGD(0.1, momentum=0.9), LOSS, metrics=["accuracy"])
    return pruned


def _assert_same_state(model, expected):
    for got, want in zip(model.variables, expected.variables, strict=True):
        assert got.path == want.path
        if "mask" in got.path or "step" in got.path:
            np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.path)
        else:
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6, err_msg=got.path)


def test_train_matches_fit_in_one_process():
    fitted, trained = _pruned(), _pruned()
    fit_history = fitted.fit(_dataset(), epochs=3, verbose=0, shuffle=False)
    history = ts.distribute.train(trained, _dataset(), epochs=3, verbose=0)
    _assert_same_state(trained, fitted)
    masked = [layer for layer in trained.layers if isinstance(layer, ts.layers.Masked)]
    assert masked and all(int(layer.pruning_step.numpy()) == 12 for layer in masked)  # 3 epochs of 4 batches
    masks = [layer.masks[0].numpy() for layer in masked]
    assert all(np.sum(m == 0) == round(0.8 * m.size) for m in masks)  # the schedule ended at step 10
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(history.history[key], fit_history.history[key], rtol=1e-5)


@pytest.mark.slow
def test_two_replicas_train_like_one(two_replica_strategy):
    single, mirrored = _pruned(), _pruned(two_replica_strategy)
    expected = ts.distribute.train(single, _dataset(), epochs=2, verbose=0).history
    history = ts.distribute.train(mirrored, _dataset(), epochs=2, strategy=two_replica_strategy, verbose=0).history
    _assert_same_state(mirrored, single)
    for key in ("loss", "accuracy"):  # summed over the replicas, per example
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-5)
    for layer in mirrored.layers:
        if isinstance(layer, ts.layers.Masked):
            first, second = (v.numpy() for v in layer.masks[0].value.values)
            np.testing.assert_array_equal(first, second)


class _StopAfter(keras.callbacks.Callback):
    """Stops training at the end of epoch `last` and records the epochs it saw."""

    def __init__(self, last=None):
        super().__init__()
        self.last, self.epochs = last, []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.model.stop_training = epoch == self.last


def test_resume_continues_an_interrupted_run(tmp_path):
    uninterrupted = _pruned()
    ts.distribute.train(uninterrupted, _dataset(), epochs=3, verbose=0)
    first, resumed = _StopAfter(last=1), _StopAfter()
    ts.distribute.train(_pruned(), _dataset(), epochs=3, callbacks=[first], checkpoint_dir=tmp_path, verbose=0)
    model = _pruned()
    ts.distribute.train(model, _dataset(), epochs=3, callbacks=[resumed], checkpoint_dir=tmp_path, verbose=0)
    assert first.epochs == [0, 1] and resumed.epochs == [2]
    _assert_same_state(model, uninterrupted)  # pruning step, masks, weights and momentum were restored


def test_bad_arguments_raise(two_replica_strategy):
    model = _pruned()
    with pytest.raises(ValueError, match="compiled keras.Model"):
        ts.distribute.train(ts.models.lenet_300_100((8, 8, 1)), _dataset())
    with pytest.raises(TypeError, match="tf.data.Dataset of global batches, received an object of type tuple"):
        ts.distribute.train(model, (np.zeros((4, 8, 8, 1)), np.zeros(4)))
    with pytest.raises(ValueError, match="`epochs` must be an integer >= 1, received: 0"):
        ts.distribute.train(model, _dataset(), epochs=0)
    with pytest.raises(ValueError, match="created outside the scope of `strategy` \\(MirroredStrategy\\)"):
        ts.distribute.train(model, _dataset(), strategy=two_replica_strategy)
    model.compile("sgd", [LOSS, LOSS])
    with pytest.raises(TypeError, match="compiled with one loss"):
        ts.distribute.train(model, _dataset())


@pytest.mark.slow
def test_demo_trains_with_a_strategy(tmp_path, monkeypatch, two_replica_strategy):
    # The job's own `MirroredStrategy()` would be a second one in this process (see `two_replica_strategy`).
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", lambda *args, **kwargs: two_replica_strategy)
    dense, pruned = cli.run(["demo", "--epochs", "2", "--sparsity", "0.8", "--strategy", "mirrored",
                             "--out", str(tmp_path)])
    assert pruned["non-zeros"] <= round(0.2 * (pruned["parameters"] - 410)) + 410  # kernels 80% sparse
    assert pruned["LiteRT max |diff|"] < 1e-5 and dense["LiteRT max |diff|"] < 1e-5
    for name in ("training.png", "dense.tflite", "pruned.tflite"):
        assert (tmp_path / name).stat().st_size > 1000
