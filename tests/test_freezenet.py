"""`tfsparse.freezenet`: exact k, the mask of the seeded init, training, summary, export."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.layers import Frozen, Masked

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def _data(n=32, shape=(8, 8, 1), classes=3):
    return np.random.rand(n, *shape).astype("float32"), np.random.randint(0, classes, n)


def _frozen(model):
    return [layer for layer in model.layers if isinstance(layer, Frozen)]


def _trained(model):
    return sum(int(m.numpy().sum()) for layer in _frozen(model) for m in layer.masks)


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.9, 0.99, 1.0])
def test_exactly_ceil_of_the_unfrozen_fraction_trains(rate):
    model = _model()
    n = sum(int(np.prod(model.get_layer(name).kernel.shape)) for name in ("conv", "hidden", "logits"))
    frozen = ts.freezenet(model, rate, _data(), seed=3)
    assert _trained(frozen) == math.ceil(round((1 - rate) * n, 9))


def test_lenet5_caffe_at_0995_trains_the_papers_count_and_summary_shows_its_compression():
    model = ts.models.lenet5_caffe()
    frozen = ts.freezenet(model, 0.995, _data(16, (28, 28, 1), 10), seed=1)
    weights = sum(int(np.prod(layer.layer.kernel.shape)) for layer in _frozen(frozen))
    biases = sum(int(np.prod(layer.layer.bias.shape)) for layer in _frozen(frozen))
    trained = _trained(frozen)
    assert trained == -(-weights * 5 // 1000)  # ceil(0.005 * weights), in integers
    info = ts.summary(frozen, print_fn=None)
    assert info.total["trained"] == trained
    assert info.total["frozen"] == weights - trained
    assert info.total["compression"] == (weights + biases) / (trained + biases)
    assert "compression" in str(info)


def test_mask_is_chosen_at_the_init_the_seed_reproduces():
    x, y = _data()
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    frozen = ts.freezenet(model, 0.8, (x, y), seed=42)
    seeded = ts.methods.reinitialize(_model(), 42)
    scores = ts.scoring.snip_saliency(seeded, (x, y))
    n = sum(int(s.shape.num_elements()) for s in scores.values())
    k = math.ceil(round(0.2 * n, 9))
    masks = ts.scoring.global_topk_masks(list(scores.values()), (n - k) / n)
    for layer, mask in zip(_frozen(frozen), masks):
        init = seeded.get_layer(layer.layer.name).kernel.numpy()
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.frozen_weights()["kernel"]), init)
        np.testing.assert_array_equal(layer.layer.kernel.numpy(), init)  # training starts at the init
        np.testing.assert_array_equal(layer.masks[0].numpy(), mask.numpy())
        assert layer.seed == 42 and layer.layer_path == layer.layer.name
    # Biases and the plain layers start from the seed too; the input model is untouched.
    np.testing.assert_array_equal(frozen.get_layer("bn").gamma.numpy(), seeded.get_layer("bn").gamma.numpy())
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    again = ts.freezenet(_model(), 0.8, (x, y), seed=42)
    other = ts.freezenet(_model(), 0.8, (x, y), seed=43)
    for a, b, c in zip(_frozen(frozen), _frozen(again), _frozen(other)):
        np.testing.assert_array_equal(a.masks[0].numpy(), b.masks[0].numpy())
        assert not np.array_equal(a.layer.kernel.numpy(), c.layer.kernel.numpy())


def test_seed_none_draws_a_reproducible_recorded_seed():
    x, y = _data()
    keras.utils.set_random_seed(5)
    first = ts.freezenet(_model(), 0.5, (x, y))
    keras.utils.set_random_seed(5)
    second = ts.freezenet(_model(), 0.5, (x, y))
    seeds = {layer.seed for layer in _frozen(first)}
    assert len(seeds) == 1 and seeds == {layer.seed for layer in _frozen(second)}
    np.testing.assert_array_equal(first.predict(x, verbose=0), second.predict(x, verbose=0))


def test_training_moves_trained_weights_and_biases_only_and_matches_snip_mask():
    x, y = _data(64)
    frozen = ts.freezenet(_model(), 0.9, (x, y), seed=8)
    snip = ts.snip(_model(), 0.9, (x, y), seed=8)
    before = {layer.name: {k: keras.ops.convert_to_numpy(v) for k, v in layer.effective_weights().items()} for layer in _frozen(frozen)}
    biases = {layer.name: layer.layer.bias.numpy() for layer in _frozen(frozen)}
    frozen.compile(keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=5e-4), LOSS)
    frozen.fit(x, y, epochs=2, batch_size=16, verbose=0)
    masked = [layer for layer in snip.layers if isinstance(layer, Masked)]
    for layer, pruned in zip(_frozen(frozen), masked):
        mask = layer.masks[0].numpy() == 1
        np.testing.assert_array_equal(pruned.masks[0].numpy() == 1, mask)
        after = keras.ops.convert_to_numpy(layer.effective_weights()["kernel"])
        np.testing.assert_array_equal(after[~mask], before[layer.name]["kernel"][~mask])
        assert np.any(after[mask] != before[layer.name]["kernel"][mask])
        assert np.any(layer.layer.bias.numpy() != biases[layer.name])
        # SNIP zeroes exactly what FreezeNet freezes.
        snip_kernel = keras.ops.convert_to_numpy(pruned.effective_weights()["kernel"])
        assert np.all(snip_kernel[~mask] == 0)


def _sequence_model():
    """Embedding, LSTM and MultiHeadAttention: layers whose weights are sparse-gradient or live in sublayers."""
    tokens = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="embed")(tokens)
    x = keras.layers.LSTM(8, return_sequences=True, name="lstm")(x)
    x = keras.layers.MultiHeadAttention(2, 4, name="attention")(x, x)
    return keras.Model(tokens, keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling1D()(x)))


def test_sequence_layers_freeze_at_their_seeded_init_and_survive_compact_save(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 20, (32, 6)).astype("int32"), rng.integers(0, 3, 32)
    frozen = ts.freezenet(_sequence_model(), 0.9, (x, y), seed=4)
    names = {layer.layer.name: list(layer.weight_names) for layer in _frozen(frozen)}
    assert names["lstm"] == ["lstm_cell/kernel", "lstm_cell/recurrent_kernel"]
    assert names["attention"] == ["query/kernel", "key/kernel", "value/kernel", "attention_output/kernel"]
    assert names["embed"] == ["embeddings"]
    # The untrained entries hold the values `reinitialize` draws, and keep them through training.
    reference = ts.reinitialize(_sequence_model(), seed=4)
    before = {layer.name: {k: keras.ops.convert_to_numpy(v) for k, v in layer.effective_weights().items()}
              for layer in _frozen(frozen)}
    frozen.compile(keras.optimizers.SGD(0.1), LOSS)
    frozen.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for layer in _frozen(frozen):
        drawn = dict(ts.registry.named_weights(reference.get_layer(layer.layer.name)))
        for mask, (name, value) in zip(layer.masks, layer.effective_weights().items()):
            mask, value = mask.numpy(), keras.ops.convert_to_numpy(value)
            np.testing.assert_array_equal(value[~mask], drawn[name].numpy()[~mask])
            assert np.all(value[~mask] == before[layer.name][name][~mask]), (layer.name, name)
        assert any(np.any(keras.ops.convert_to_numpy(v)[m.numpy()] != before[layer.name][k][m.numpy()])
                   for m, (k, v) in zip(layer.masks, layer.effective_weights().items())), layer.name
    ts.export.save_compact(frozen, tmp_path / "model.tfsparse")
    frozen.save(tmp_path / "model.keras")
    for restored in ts.export.load_compact(tmp_path / "model.tfsparse"), keras.saving.load_model(tmp_path / "model.keras"):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(frozen(x)))


def test_saved_model_and_tflite_exports_work_on_freezenet_models(tmp_path):
    x, _ = _data(8)
    frozen = ts.freezenet(_model(), 0.9, _data(), seed=2)
    expected = frozen.predict(x, verbose=0)
    path = ts.export.saved_model(frozen, str(tmp_path / "saved"))
    reloaded = tf.saved_model.load(path)
    served = reloaded.serve(x).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
    report = ts.export.tflite(frozen, str(tmp_path / "model.tflite"), sample_inputs=x)
    assert report.max_abs_diff <= 1e-4 * max(1.0, float(np.abs(expected).max()))


def test_bad_arguments_are_named():
    data = _data()
    with pytest.raises(ValueError, match="freeze_rate"):
        ts.freezenet(_model(), 1.5, data)
    with pytest.raises(TypeError, match="freeze_rate"):
        ts.freezenet(_model(), None, data)
    with pytest.raises(ValueError, match="seed"):
        ts.freezenet(_model(), 0.5, data, seed=-1)
    wrapped = ts.freezenet(_model(), 0.5, data, seed=1)
    with pytest.raises(ValueError, match="already holds tfsparse wrappers"):
        ts.freezenet(wrapped, 0.5, data)
    with pytest.raises(TypeError, match="model"):
        ts.freezenet(keras.layers.Dense(3), 0.5, data)


@pytest.mark.slow
def test_freezenet_trains_under_mirrored_strategy(two_replica_strategy):
    x, y = _data(64)
    strategy = two_replica_strategy
    with strategy.scope():
        frozen = ts.freezenet(_model(), 0.9, (x[:16], y[:16]), seed=4)
        frozen.compile(keras.optimizers.AdamW(0.05, weight_decay=0.5), LOSS)
    before = [keras.ops.convert_to_numpy(layer.effective_weights()["kernel"]) for layer in _frozen(frozen)]
    frozen.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for layer, old in zip(_frozen(frozen), before):
        mask = layer.masks[0].numpy()
        new = keras.ops.convert_to_numpy(layer.effective_weights()["kernel"])
        np.testing.assert_array_equal(new[~mask], old[~mask])
        assert np.any(new[mask] != old[mask])
