"""SNIP saliency and SNIP pruning: scores by measurement, exact k, zeroed weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.layers import Masked

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def _data(n=24):
    return np.random.rand(n, 6, 6, 2).astype("float32"), np.random.randint(0, 3, n)


def _expected(model, batches):
    """|w * mean gradient| by a plain tape, with the variables restored after."""
    before = [v.numpy() for v in model.variables]
    kernels = [model.get_layer(n).kernel for n in ("conv", "hidden", "logits")]
    grads = []
    for x, y in batches:
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=True))
        grads.append(tape.gradient(loss, kernels))
    for v, value in zip(model.variables, before):
        v.assign(value)
    mean = [sum(g[i] for g in grads) / len(grads) for i in range(len(kernels))]
    return [np.abs(k.numpy() * g.numpy()) for k, g in zip(kernels, mean)]


def test_scores_are_weight_times_gradient_of_kernels_only():
    model = _model()
    x, y = _data()
    scores = ts.scoring.snip_saliency(model, (x, y))
    assert list(scores) == ["conv/kernel", "hidden/kernel", "logits/kernel"]
    for got, want in zip(scores.values(), _expected(model, [(x, y)])):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-9)
        assert np.count_nonzero(want) > 0.5 * want.size


def test_scores_average_the_gradient_over_batches_and_change_no_variable():
    model = _model()
    x, y = _data(32)
    before = [v.numpy().copy() for v in model.variables]
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    scores = ts.scoring.snip_saliency(model, dataset, batches=3)
    for v, value in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), value)
    want = _expected(model, [(x[i:i + 8], y[i:i + 8]) for i in (0, 8, 16)])
    for got, expected in zip(scores.values(), want):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-9)


def test_compiled_loss_and_named_loss_are_used():
    model = _model()
    x, y = _data()
    onehot = keras.utils.to_categorical(y, 3)
    default = ts.scoring.snip_saliency(model, (x, y))
    mse = ts.scoring.snip_saliency(model, (x, onehot), loss="mean_squared_error")
    model.compile("sgd", loss=keras.losses.MeanSquaredError())
    compiled = ts.scoring.snip_saliency(model, (x, onehot))
    for a, b in zip(mse.values(), compiled.values()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-9)
    # The default (cross-entropy on logits) scores the same weights differently.
    assert set(default) == set(mse)
    assert all(not np.allclose(a.numpy(), b.numpy()) for a, b in zip(default.values(), mse.values()))


@pytest.mark.slow
def test_snip_pruning_keeps_exact_global_top_k_and_zeroes_the_rest_through_adamw():
    model = _model()
    x, y = _data()
    scores = ts.scoring.snip_saliency(model, (x, y))
    pruned = ts.snip(model, 0.8, (x, y))
    layers = [layer for layer in pruned.layers if isinstance(layer, Masked)]
    assert [layer.layer.name for layer in layers] == ["conv", "hidden", "logits"]
    masks = [layer.masks[0].numpy() for layer in layers]
    total = sum(m.size for m in masks)
    assert sum(int(m.sum()) for m in masks) == total - round(0.8 * total)
    kept = np.concatenate([s.numpy().ravel() for s in scores.values()])[np.concatenate([m.ravel() for m in masks]) == 1]
    dropped = np.concatenate([s.numpy().ravel() for s in scores.values()])[np.concatenate([m.ravel() for m in masks]) == 0]
    assert kept.min() >= dropped.max()
    pruned.compile(keras.optimizers.AdamW(0.05, weight_decay=0.5), LOSS)
    pruned.fit(x, y, epochs=3, batch_size=8, verbose=0)
    for layer, mask in zip(layers, masks):
        effective = layer.effective_weights()["kernel"].numpy()
        assert np.all(effective[mask == 0] == 0)
        assert np.count_nonzero(effective[mask == 1]) == mask.sum()
    # The input model is untouched.
    assert not any(isinstance(layer, Masked) for layer in model.layers)


def test_snip_with_a_seed_scores_the_seeded_init():
    x, y = _data()
    pruned = ts.snip(_model(), 0.5, (x, y), seed=11)
    seeded = ts.methods.reinitialize(_model(), 11)
    masks = ts.scoring.global_topk_masks(list(ts.scoring.snip_saliency(seeded, (x, y)).values()), 0.5)
    layers = [layer for layer in pruned.layers if isinstance(layer, Masked)]
    for layer, mask, name in zip(layers, masks, ("conv", "hidden", "logits")):
        np.testing.assert_array_equal(layer.masks[0].numpy(), mask.numpy())
        np.testing.assert_array_equal(layer.layer.kernel.numpy(), seeded.get_layer(name).kernel.numpy())


def test_bad_arguments_are_named():
    model = _model()
    x, y = _data(16)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(ValueError, match="batches"):
        ts.scoring.snip_saliency(model, (x, y), batches=0)
    with pytest.raises(ValueError, match="batches"):
        ts.scoring.snip_saliency(model, (x, y), batches=2)
    with pytest.raises(ValueError, match="gave 2 batches"):
        ts.scoring.snip_saliency(model, dataset, batches=3)
    with pytest.raises(TypeError, match="data"):
        ts.scoring.snip_saliency(model, 5)
    with pytest.raises(TypeError, match="loss"):
        ts.scoring.snip_saliency(model, (x, y), loss=3)
    with pytest.raises(ValueError, match="sparsity"):
        ts.snip(model, 1.0, (x, y))
    with pytest.raises(TypeError, match="sparsity"):
        ts.snip(model, "0.5", (x, y))
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="no prunable weight"):
        ts.scoring.snip_saliency(plain, (np.ones((2, 3)), np.zeros(2)))


def test_scoring_refuses_an_empty_batch_and_data_that_gives_nan_gradients():
    model = ts.models.lenet_300_100((8, 8, 1))
    x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype("float32")
    y = np.arange(16) % 10
    with pytest.raises(ValueError, match="gave an empty batch \\(batch 1\\)"):
        ts.scoring.snip_saliency(model, (x[:0], y[:0]))
    x[3, 2, 2, 0] = np.nan
    with pytest.raises(ValueError, match="gradient over batch 1 of `data` is not finite"):
        ts.snip(model, 0.9, (x, y))
    with pytest.raises(ValueError, match="not finite"):
        ts.freezenet(model, 0.9, (x, y), seed=1)


@pytest.mark.parametrize("method", ["snip", "freezenet"])
def test_scoring_names_data_that_does_not_fit_the_model(method):
    prune = {"snip": lambda m, d: ts.snip(m, 0.5, d), "freezenet": lambda m, d: ts.freezenet(m, 0.5, d, seed=1)}[method]
    x, y = _data(8)
    cases = [
        ((x[..., :1], y), r"Argument `data`: batch 1 has inputs of shape \(8, 6, 6, 1\); the model takes \(None, 6, 6, 2\)"),
        (x, r"Argument `data`: batch 1 has no labels"),
        (tf.data.Dataset.from_tensor_slices(x).batch(4), r"Argument `data`: batch 1 has no labels"),
        ((x, y + 3), r"Argument `data`: batch 1 has labels from 3 to 5; the model's 3 outputs take class labels 0 to 2"),
        ((x, y - 3), r"Argument `data`: batch 1 has labels from -3 to -1"),
    ]
    for data, message in cases:
        with pytest.raises(ValueError, match=message):
            prune(_model(), data)
