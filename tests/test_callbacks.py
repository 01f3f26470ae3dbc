"""tfsparse.callbacks: UpdatePruningStep and PruningSummaries under model.fit."""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

import tfsparse as ts
from tfsparse.callbacks import PruningSummaries, UpdatePruningStep
from tfsparse.layers import Masked

BATCH_HOOKS = [
    f"on_{mode}batch_{when}" for mode in ("", "train_", "test_", "predict_") for when in ("begin", "end")
]


def _dense_model():
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(16, name="fc1"), keras.layers.Dense(3, name="fc2")], name="net"
    )


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.random((n, 6), dtype="float32"), rng.integers(0, 3, n)


def _fit(model, callbacks, epochs=2):
    x, y = _data()
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)


def _sparsity(tensor):
    array = keras.ops.convert_to_numpy(tensor)
    return 1.0 - np.count_nonzero(array) / array.size


def _read_scalars(log_dir):
    """{(tag, step): value} of every summary under `log_dir`, checking each tag is a TensorBoard scalar."""
    scalars, plugins = {}, {}
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
                if value.HasField("metadata"):  # written with the first value of a tag
                    plugins[value.tag] = value.metadata.plugin_data.plugin_name
    assert plugins == {tag: "scalars" for tag, _ in scalars}
    return scalars


def test_callbacks_have_no_batch_hooks():
    for cls in (UpdatePruningStep, PruningSummaries):
        overridden = [hook for hook in BATCH_HOOKS if getattr(cls, hook) is not getattr(keras.callbacks.Callback, hook)]
        assert overridden == [], cls.__name__


def test_update_pruning_step_raises_without_scheduled_pruning():
    with pytest.raises(ValueError, match="UpdatePruningStep found no layer to prune in model 'net'"):
        _fit(_dense_model(), [UpdatePruningStep()])
    unscheduled = keras.Sequential([keras.Input((6,)), Masked(keras.layers.Dense(3))], name="fixed_mask")
    with pytest.raises(ValueError, match="'fixed_mask'"):
        _fit(unscheduled, [UpdatePruningStep()])


@pytest.mark.slow
def test_update_pruning_step_trains_exactly_as_without_it():
    base = _dense_model()
    schedule = ts.schedules.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=6, frequency=2)
    with_callback = ts.prune_low_magnitude(base, schedule)
    without = ts.prune_low_magnitude(base, schedule)
    _fit(with_callback, [UpdatePruningStep()], epochs=2)
    _fit(without, [], epochs=2)
    steps = 2 * (64 // 16)
    for a, b in zip(with_callback.weights, without.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for layer in with_callback.layers:
        assert int(layer.pruning_step.numpy()) == steps
        kernel = layer.effective_weights()["kernel"]
        assert np.count_nonzero(keras.ops.convert_to_numpy(kernel) == 0) == round(0.75 * kernel.shape.num_elements())


def test_pruning_summaries_match_measured_sparsity(tmp_path):
    schedule = ts.schedules.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=8, frequency=1)
    model = ts.prune_low_magnitude(_dense_model(), schedule)
    measured = {}

    class Measure(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for layer in model.layers:
                measured[(f"sparsity/{layer.name}/kernel", epoch)] = _sparsity(layer.effective_weights()["kernel"])
                target = schedule.sparsity(layer.pruning_step)
                measured[(f"target_sparsity/{layer.name}", epoch)] = float(keras.ops.convert_to_numpy(target))

    _fit(model, [PruningSummaries(tmp_path), Measure()], epochs=3)
    written = _read_scalars(str(tmp_path))
    assert set(written) == set(measured)
    for key, value in measured.items():
        assert written[key] == np.float32(value), key
    # Sparsity grows over the epochs and reaches the final target.
    kernel_tags = sorted({tag for tag, _ in measured if tag.startswith("sparsity/")})
    for tag in kernel_tags:
        assert written[(tag, 0)] < written[(tag, 1)] <= written[(tag, 2)]
        assert written[(tag, 2)] == pytest.approx(0.8, abs=0.01)


def test_pruning_summaries_target_is_that_of_the_last_batch(tmp_path):
    schedule = ts.schedules.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=8, frequency=1)
    model = ts.prune_low_magnitude(_dense_model(), schedule)
    _fit(model, [PruningSummaries(tmp_path)], epochs=2)
    written = _read_scalars(str(tmp_path))
    for epoch in (0, 1):
        for layer in model.layers:
            size = layer.masks[0].shape.num_elements()
            target = written[(f"target_sparsity/{layer.name}", epoch)]
            # The masks hold round(target * size) zeros: within half an entry.
            assert abs(written[(f"sparsity/{layer.name}/kernel", epoch)] - target) <= 0.5 / size + 1e-6


def test_pruning_summaries_every_n_epochs(tmp_path):
    model = ts.prune_low_magnitude(_dense_model(), ts.schedules.ConstantSparsity(0.5, 0, frequency=1))
    _fit(model, [PruningSummaries(tmp_path, update_freq=2)], epochs=5)
    written = _read_scalars(str(tmp_path))
    assert {step for _, step in written} == {1, 3}
    for layer in model.layers:
        final = _sparsity(layer.effective_weights()["kernel"])
        assert written[(f"sparsity/{layer.name}/kernel", 3)] == np.float32(final)
        assert written[(f"target_sparsity/{layer.name}", 3)] == np.float32(0.5)


def test_pruning_summaries_m_by_n_target(tmp_path):
    model = ts.prune_low_magnitude(
        _dense_model(), ts.schedules.ConstantSparsity(0.5, 0, frequency=1), sparsity_m_by_n=(1, 4)
    )
    _fit(model, [PruningSummaries(tmp_path)], epochs=1)
    written = _read_scalars(str(tmp_path))
    for layer in model.layers:
        assert written[(f"target_sparsity/{layer.name}", 0)] == np.float32(0.25)
        final = _sparsity(layer.effective_weights()["kernel"])
        assert written[(f"sparsity/{layer.name}/kernel", 0)] == np.float32(final)


def test_pruning_summaries_bad_arguments(tmp_path):
    for bad in (0, -2, "batch", True, 1.5):
        with pytest.raises(ValueError, match="`update_freq`"):
            PruningSummaries(tmp_path, update_freq=bad)
    with pytest.raises(TypeError, match="`log_dir`"):
        PruningSummaries(3)
    with pytest.raises(ValueError, match="`log_dir` must be a path"):  # code written for TFMOT catches ValueError
        PruningSummaries(None)
    with pytest.raises(ValueError, match="`log_dir` must be a non-empty path, received: ''"):
        PruningSummaries("")
    with pytest.raises(ValueError, match="no tfsparse wrapper in model 'net'"):
        _fit(_dense_model(), [PruningSummaries(tmp_path)])


def _round_trip(callback):
    serialized = keras.saving.serialize_keras_object(callback)
    assert serialized["registered_name"] == f"tfsparse>{type(callback).__name__}"
    return keras.saving.deserialize_keras_object(serialized)


def test_callbacks_serialize(tmp_path):
    restored = _round_trip(PruningSummaries(str(tmp_path / "run"), update_freq=3))
    assert isinstance(restored, PruningSummaries)
    assert restored.get_config() == {"log_dir": str(tmp_path / "run"), "update_freq": 3}
    model = ts.prune_low_magnitude(_dense_model(), ts.schedules.ConstantSparsity(0.5, 0, frequency=1))
    _fit(model, [restored], epochs=3)
    assert {step for _, step in _read_scalars(str(tmp_path / "run"))} == {2}
    # UpdatePruningStep has no arguments; the restored callback still makes its check.
    checker = _round_trip(UpdatePruningStep())
    assert isinstance(checker, UpdatePruningStep)
    with pytest.raises(ValueError, match="UpdatePruningStep found no layer to prune in model 'net'"):
        _fit(_dense_model(), [checker])
