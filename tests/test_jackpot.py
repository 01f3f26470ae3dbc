"""Tests of `tfsparse.lottery_jackpot`: a mask search over frozen pre-trained weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.layers import Scored
from tfsparse.layers.fixed import Fixed
from tfsparse.methods.jackpot import freeze_weights

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _pretrained():
    """A small conv net with BatchNormalization, its weights "pre-trained" (random)."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(12, 3, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(10, name="classifier")(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([np.random.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()])
    return model


def _data(n=64):
    return np.random.rand(n, 8, 8, 1).astype("float32"), np.random.randint(0, 10, n)


def _scored(model):
    return [layer for layer in model.layers if isinstance(layer, Scored)]


def _weights_by_layer(model):
    """`{layer name: [arrays]}` of the plain layers, or the wrapped layers' own weights."""
    out = {}
    for layer in model.layers:
        inner = layer.layer if isinstance(layer, (Scored, Fixed)) else layer
        if inner.weights:
            out[inner.name] = [w.numpy() for w in inner.weights]
    return out


def _global_masks(model, sparsity, excluded=("classifier",)):
    """Magnitude masks from one global threshold, computed in NumPy."""
    kernels = {layer.name: layer.kernel.numpy() for layer in model.layers
               if layer.name not in excluded and hasattr(layer, "kernel")}
    flat = np.concatenate([np.abs(k).ravel() for k in kernels.values()])
    pruned = round(sparsity * flat.size)
    threshold = np.sort(flat)[pruned]  # the smallest kept magnitude (no ties in random weights)
    return {name: (np.abs(k) >= threshold).astype("float32") for name, k in kernels.items()}, pruned


def test_search_starts_from_the_given_pretrained_weights_and_magnitude_mask():
    pretrained = _pretrained()
    expected, pruned = _global_masks(pretrained, 0.9)
    search = ts.lottery_jackpot(pretrained, 0.9, seed=0)
    assert [layer.layer.name for layer in _scored(search)] == ["conv1", "conv2", "fc"]
    before = _weights_by_layer(pretrained)
    after = _weights_by_layer(search)
    assert before.keys() == after.keys()
    for name in before:
        for a, b in zip(before[name], after[name]):
            assert a.tobytes() == b.tobytes()
    total = 0
    for layer in _scored(search):
        np.testing.assert_array_equal(layer.masks[0].numpy(), expected[layer.layer.name])
        total += layer.num_pruned[0]
    assert total == pruned
    # Before any search step, the model is the magnitude-pruned pre-trained model.
    reference = keras.models.clone_model(pretrained)
    reference.set_weights(pretrained.get_weights())
    for layer in reference.layers:
        if layer.name in expected:
            layer.kernel.assign(layer.kernel.numpy() * expected[layer.name])
    x, _ = _data(8)
    np.testing.assert_allclose(search(x).numpy(), reference(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: ts.optimizers.cosine_sgd(steps=8),
        lambda: keras.optimizers.Adam(0.05),
        lambda: keras.optimizers.AdamW(0.05, weight_decay=0.1),
    ],
    ids=["sgd_momentum", "adam", "adamw"],
)
def test_weights_stay_bit_identical_under_any_optimizer(optimizer):
    pretrained = _pretrained()
    search = ts.lottery_jackpot(pretrained, 0.8, seed=0)
    before = _weights_by_layer(search)
    scores = [layer.scores[0].numpy() for layer in _scored(search)]
    search.compile(optimizer(), LOSS)
    search.fit(*_data(), batch_size=16, epochs=2, verbose=0, callbacks=[ts.callbacks.ShortRestriction()])
    after = _weights_by_layer(search)
    for name, arrays in before.items():
        for variable_index, (a, b) in enumerate(zip(arrays, after[name])):
            if name.startswith("bn") and variable_index >= 2:
                # BatchNormalization normalised with batch statistics: its moving
                # statistics moved; gamma and beta did not.
                assert not np.array_equal(a, b)
            else:
                assert a.tobytes() == b.tobytes(), name
    assert all(np.any(s != layer.scores[0].numpy()) for s, layer in zip(scores, _scored(search)))
    plain = ts.strip_pruning(search)
    pretrained_kernels = {layer.name: layer.kernel.numpy() for layer in pretrained.layers if hasattr(layer, "kernel")}
    for layer in plain.layers:
        if hasattr(layer, "kernel"):
            kernel = layer.kernel.numpy()
            kept = kernel != 0
            assert kernel[kept].tobytes() == pretrained_kernels[layer.name][kept].tobytes()


class _BudgetProbe(keras.callbacks.Callback):
    """Counts each Scored layer's kept weights after every training batch."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers
        self.kept = []

    def on_train_batch_end(self, batch, logs=None):
        self.kept.append(
            [
                (int(np.sum(layer.masks[0].numpy())), int(np.sum(layer.effective_weights()["kernel"] != 0)))
                for layer in self.layers
            ]
        )


@pytest.mark.slow
@pytest.mark.parametrize("restricted", [True, False])
def test_budgets_are_exact_for_every_step_of_the_search(restricted):
    search = ts.lottery_jackpot(_pretrained(), 0.9, seed=0)
    layers = _scored(search)
    budgets = [layer.masks[0].shape.num_elements() - layer.num_pruned[0] for layer in layers]
    probe = _BudgetProbe(layers)
    callbacks = [ts.callbacks.ShortRestriction()] if restricted else []
    search.compile(keras.optimizers.SGD(5.0, momentum=0.9), LOSS)
    search.fit(*_data(), batch_size=8, epochs=2, verbose=0, callbacks=[*callbacks, probe])
    assert len(probe.kept) == 16
    for step in probe.kept:
        assert [kept for kept, _ in step] == budgets
        assert [nonzero for _, nonzero in step] == budgets
    assert sum(layer.summary_fields()["hamming"] for layer in layers) > 0


def test_classifier_stays_dense_unless_asked():
    pretrained = _pretrained()
    assert "classifier" not in [layer.layer.name for layer in _scored(ts.lottery_jackpot(pretrained, 0.5))]
    everything = ts.lottery_jackpot(pretrained, 0.5, exclude=())
    assert [layer.layer.name for layer in _scored(everything)] == ["conv1", "conv2", "fc", "classifier"]
    some = ts.lottery_jackpot(pretrained, 0.5, exclude=["conv1", "classifier"])
    assert [layer.layer.name for layer in _scored(some)] == ["conv2", "fc"]
    classifier = some.get_layer("fixed_classifier").layer
    assert not any(v.trainable for v in classifier.weights)


def test_random_init_gives_each_layer_its_own_seeded_scores():
    pretrained = _pretrained()
    first = _scored(ts.lottery_jackpot(pretrained, 0.9, init="random", seed=5))
    again = _scored(ts.lottery_jackpot(pretrained, 0.9, init="random", seed=5))
    assert len({layer.seed for layer in first}) == len(first)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.scores[0].numpy(), b.scores[0].numpy())
        scores, mask = a.scores[0].numpy(), a.masks[0].numpy()
        assert scores[mask == 1].min() > scores[mask == 0].max()
    expected, _ = _global_masks(pretrained, 0.9)
    assert [layer.num_pruned[0] for layer in first] == [int(np.sum(expected[layer.layer.name] == 0)) for layer in first]


def test_only_scores_train_and_weight_decay_is_on_the_scores():
    search = ts.lottery_jackpot(_pretrained(), 0.9, weight_decay=4e-4)
    scores = [v for layer in _scored(search) for v in layer.scores]
    assert [v.path for v in search.trainable_variables] == [v.path for v in scores]
    search(np.zeros((1, 8, 8, 1), "float32"), training=True)
    penalty = float(tf.add_n(search.losses))
    assert penalty == pytest.approx(2e-4 * sum(float(np.sum(v.numpy() ** 2)) for v in scores), rel=1e-5)
    assert ts.lottery_jackpot(_pretrained(), 0.9, weight_decay=0).losses == []


def test_save_load_and_freeze_weights_resume_the_search(tmp_path):
    search = ts.lottery_jackpot(_pretrained(), 0.9, seed=0)
    search.compile(keras.optimizers.SGD(5.0), LOSS)
    search.fit(*_data(), batch_size=16, epochs=1, verbose=0, callbacks=[ts.callbacks.ShortRestriction(0.5)])
    path = tmp_path / "search.keras"
    search.save(path)
    loaded = keras.saving.load_model(path)
    assert freeze_weights(loaded) == 3
    assert [v.path for v in loaded.trainable_variables] == [v.path for v in search.trainable_variables]
    x, _ = _data(8)
    np.testing.assert_array_equal(search(x).numpy(), loaded(x).numpy())
    assert [layer.summary_fields() for layer in _scored(loaded)] == [layer.summary_fields() for layer in _scored(search)]
    info = ts.summary(loaded, print_fn=None)
    assert "hamming" in info.columns
    assert info.total["hamming"] == sum(layer.summary_fields()["hamming"] for layer in _scored(search))


def _search_state(search):
    """Every variable of the search and of its optimizer, and the learning rate."""
    optimizer = search.optimizer
    return {
        "variables": {v.path: v.numpy() for v in search.variables},
        "optimizer": [v.numpy() for v in optimizer.variables],
        "iterations": int(optimizer.iterations.numpy()),
        "learning_rate": float(optimizer.learning_rate.numpy()),
    }


@pytest.mark.slow
def test_reloaded_search_continues_exactly_as_an_uninterrupted_one(tmp_path):
    x, y = _data()
    pretrained = _pretrained()

    def fit(model, epochs, initial_epoch=0):
        model.fit(x, y, batch_size=16, epochs=epochs, initial_epoch=initial_epoch, shuffle=False, verbose=0,
                  callbacks=[ts.callbacks.ShortRestriction(lambda epoch: 0.5 ** epoch)])

    uninterrupted = ts.lottery_jackpot(pretrained, 0.9, seed=0)
    uninterrupted.compile(ts.optimizers.cosine_sgd(steps=12, learning_rate=2.0), LOSS)
    fit(uninterrupted, epochs=3)
    interrupted = ts.lottery_jackpot(pretrained, 0.9, seed=0)
    interrupted.compile(ts.optimizers.cosine_sgd(steps=12, learning_rate=2.0), LOSS)
    fit(interrupted, epochs=1)
    interrupted.save(tmp_path / "search.keras")
    resumed = keras.saving.load_model(tmp_path / "search.keras")
    assert [v.path for v in resumed.trainable_variables] == [v.path for v in interrupted.trainable_variables]
    assert int(resumed.optimizer.iterations.numpy()) == 4
    fit(resumed, epochs=3, initial_epoch=1)
    expected, received = _search_state(uninterrupted), _search_state(resumed)
    assert received["variables"].keys() == expected["variables"].keys()
    for path, value in expected["variables"].items():
        np.testing.assert_array_equal(received["variables"][path], value, err_msg=path)
    for a, b in zip(expected["optimizer"], received["optimizer"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert received["iterations"] == expected["iterations"] == 12
    assert received["learning_rate"] == expected["learning_rate"]
    pretrained_weights = _weights_by_layer(pretrained)
    for name in ("bn1", "bn2", "classifier"):
        for variable_index, (a, b) in enumerate(zip(pretrained_weights[name], _weights_by_layer(resumed)[name])):
            if variable_index < 2:  # kernel and bias, gamma and beta: frozen
                assert a.tobytes() == b.tobytes(), name


def test_strip_unwraps_the_fixed_layers_into_trainable_plain_ones():
    pretrained = _pretrained()
    search = ts.lottery_jackpot(pretrained, 0.9, seed=0)
    assert {type(layer.layer).__name__ for layer in search.layers if isinstance(layer, Fixed)} == {
        "BatchNormalization", "Dense"
    }
    plain = ts.strip_pruning(search)
    assert not any(isinstance(layer, (Fixed, Scored)) for layer in plain.layers)
    assert [layer.name for layer in plain.layers[1:]] == [layer.name for layer in pretrained.layers[1:]]
    assert len(plain.trainable_variables) == 2 * 4 + 2 * 2  # kernels and biases, gammas and betas


def test_cosine_sgd_is_sgd_momentum_with_cosine_learning_rate():
    optimizer = ts.optimizers.cosine_sgd(steps=100)
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.momentum == 0.9
    schedule = keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(50)) == pytest.approx(0.05)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)


def test_mirrored_strategy_keeps_masks_identical_on_replicas(two_replica_strategy):
    strategy = two_replica_strategy
    pretrained = ts.models.lenet_300_100((8, 8, 1))
    with strategy.scope():
        search = ts.lottery_jackpot(pretrained, 0.9, seed=0)
        search.compile(keras.optimizers.SGD(5.0), LOSS)
    search.fit(*_data(), batch_size=16, epochs=2, verbose=0, callbacks=[ts.callbacks.ShortRestriction()])
    moved = 0
    for layer in _scored(search):
        replicas = [v.numpy() for v in layer.masks[0].value.values]
        assert len(replicas) == 2
        assert all(np.array_equal(replicas[0], r) for r in replicas)
        assert int(replicas[0].sum()) == replicas[0].size - layer.num_pruned[0]
        moved += int(np.sum(replicas[0] != layer.initial_masks()[0].numpy()))
    assert moved > 0


def test_bad_arguments_raise():
    model = _pretrained()
    with pytest.raises(ValueError, match="sparsity"):
        ts.lottery_jackpot(model, 1.0)
    with pytest.raises(ValueError, match="init"):
        ts.lottery_jackpot(model, 0.5, init="kaiming")
    with pytest.raises(ValueError, match="exclude.*nope"):
        ts.lottery_jackpot(model, 0.5, exclude=["nope"])
    with pytest.raises(ValueError, match="weight_decay"):
        ts.lottery_jackpot(model, 0.5, weight_decay=-1.0)
    with pytest.raises(TypeError, match="seed"):
        ts.lottery_jackpot(model, 0.5, seed="7")
    with pytest.raises(TypeError, match="model"):
        ts.lottery_jackpot(keras.layers.Dense(3), 0.5)
    with pytest.raises(ValueError, match="no prunable layer left"):
        ts.lottery_jackpot(model, 0.5, exclude=["conv1", "conv2", "fc", "classifier"])
    with pytest.raises(ValueError, match="already holds tfsparse wrappers"):
        ts.lottery_jackpot(ts.lottery_jackpot(model, 0.5), 0.5)
    with pytest.raises(ValueError, match="steps"):
        ts.optimizers.cosine_sgd(steps=0)

