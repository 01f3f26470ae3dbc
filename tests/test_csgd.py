"""Centripetal SGD: clusters, the optimizer, the exact trim, the monitor."""

import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.surgery import dependency_groups

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def small_model():
    """conv1 (16) feeds conv2 and conv3 (32), added: one group; then pooling and the logits."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    a = keras.layers.Conv2D(32, 3, padding="same", name="conv2")(h)
    b = keras.layers.Conv2D(32, 1, name="conv3")(h)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(keras.layers.Add()([a, b])))
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))


def _collapse(model, plan, rng):
    """Gives every clustered weight random values, identical within each cluster (BN statistics included)."""
    for entry in plan["weights"].values():
        variable = next(w for w in model.get_layer(entry["layer"]).weights if w.name == entry["weight"])
        positive = "variance" in entry["weight"]
        array = rng.uniform(0.5, 1.5, variable.shape) if positive else rng.normal(size=variable.shape)
        moved = np.moveaxis(array, entry["axis"], 0)
        labels = np.asarray(entry["labels"])
        for label in set(labels[labels >= 0].tolist()):
            positions = np.flatnonzero(labels == label)
            moved[positions] = moved[positions[0]]
        variable.assign(array.astype("float32") * (0.3 if variable.trainable else 1.0))


@pytest.mark.parametrize("build", [
    lambda: ts.models.resnet20(input_shape=(8, 8, 1), width=0.25),
    lambda: ts.models.mobilenet_v2_small(input_shape=(8, 8, 1), width=0.25),
], ids=["resnet20", "mobilenet_v2_small"])
def test_clusters_follow_the_channel_groups_so_the_trim_is_exact(build):
    model = build()
    plan = ts.csgd.clusters(model, 0.5, seed=0)
    assert json.loads(json.dumps(plan)) == plan
    groups = {g.producers[0]: g for g in dependency_groups(model) if g.prunable}
    assert set(plan["clusters"]) == set(groups)
    for name, lists in plan["clusters"].items():
        channels = sorted(c for cluster in lists for c in cluster)
        assert channels == [c for c in range(groups[name].size) if c not in groups[name].pinned]
        assert abs(len(lists) - groups[name].size / 2) <= 1
    _collapse(model, plan, np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(8, 8, 8, 1)).astype("float32")
    small = ts.csgd.trim(model, plan)
    np.testing.assert_allclose(small(x, training=False), model(x, training=False), rtol=0, atol=1e-5)
    assert small.count_params() < model.count_params() / 2


def _official_update(gradient, weight, lists, strength, weight_decay):
    """The official code's `M G + D W` with explicit matrices, filters as rows."""
    size = gradient.shape[-1]
    merge, decay = np.zeros((size, size)), np.zeros((size, size))
    for cluster in lists:
        for i in cluster:
            decay[i, i] = weight_decay + strength
            for j in cluster:
                merge[i, j] = 1 / len(cluster)
                decay[i, j] -= strength / len(cluster)
    rows = lambda a: np.moveaxis(a, -1, 0).reshape(size, -1)  # noqa: E731
    result = merge @ rows(gradient) + decay @ rows(weight)
    return np.moveaxis(result.reshape(np.moveaxis(gradient, -1, 0).shape), 0, -1)


def test_the_update_is_the_official_one_and_plain_sgd_elsewhere():
    model = small_model()
    plan = ts.csgd.clusters(model, {"conv2": [[0, 3, 5], [1, 2], [4]]})
    strength, decay, rate = 0.3, 1e-3, 0.1
    optimizer = ts.optimizers.CentripetalSGD(plan, rate, centripetal_strength=strength, weight_decay=decay)
    reference = keras.optimizers.SGD(rate, momentum=0.9, nesterov=True)
    variables = model.trainable_variables
    copies = [keras.Variable(v.numpy(), name=v.name) for v in variables]
    optimizer.build(variables)
    reference.build(copies)
    rng = np.random.default_rng(0)
    lists = [*plan["clusters"]["conv2"], *([c] for c in range(6, 32))]
    for _ in range(3):
        grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
        expected = []
        for g, v in zip(grads, variables):
            if v.path in ("conv2/kernel", "conv3/kernel"):
                g = _official_update(g, v.numpy(), lists, strength, decay)
            elif v.path in ("conv2/bias", "conv3/bias"):
                g = _official_update(g, v.numpy(), lists, 0.1 * strength, decay)
            else:
                g = g + decay * v.numpy()
            expected.append(g.astype("float32"))
        optimizer.apply(grads, variables)
        reference.apply(expected, copies)
        for v, c in zip(variables, copies):
            np.testing.assert_allclose(v.numpy(), c.numpy(), rtol=1e-5, atol=1e-7, err_msg=v.path)
    assert sorted(optimizer.pulled) == ["conv2/bias", "conv2/kernel", "conv3/bias", "conv3/kernel"]


def test_without_weight_decay_unclustered_variables_follow_keras_sgd_exactly():
    model = small_model()
    plan = ts.csgd.clusters(model, {"conv1": 8}, method="even")
    optimizer = ts.optimizers.CentripetalSGD(plan, 0.1, centripetal_strength=1.0, weight_decay=0)
    reference = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)
    variables = model.trainable_variables
    copies = [keras.Variable(v.numpy()) for v in variables]
    rng = np.random.default_rng(0)
    for _ in range(3):
        grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
        optimizer.apply(grads, variables)
        reference.apply(grads, copies)
    for v, c in zip(variables, copies):
        if not v.path.startswith("conv1/"):
            np.testing.assert_array_equal(v.numpy(), c.numpy())
        else:
            assert not np.array_equal(v.numpy(), c.numpy())


def _test_set():
    x, y = zip(*ts.data.load("digits", "test", batch_size=512, shuffle=False).as_numpy_iterator())
    return np.concatenate(x), np.concatenate(y)


def _assert_same_predictions(model, small):
    """The trimmed model's test logits are the trained model's within 1e-4; returns the (same) accuracy."""
    x, y = _test_set()
    logits, small_logits = (keras.ops.convert_to_numpy(m(x, training=False)) for m in (model, small))
    np.testing.assert_allclose(small_logits, logits, rtol=0, atol=1e-4)
    accuracy = float(np.mean(logits.argmax(-1) == y))
    assert float(np.mean(small_logits.argmax(-1) == y)) == accuracy
    return accuracy


def test_centripetal_training_makes_the_trim_exact_without_fine_tuning():
    train = ts.data.load("digits", "train", batch_size=64, seed=0)
    model = ts.models.lenet_300_100((8, 8, 1))
    plan = ts.csgd.clusters(model, 0.5, seed=0)
    epochs, rate = 5, 0.05
    steps = epochs * int(train.cardinality())
    strength = ts.csgd.strength(steps * 2 // 3, rate, shrink=1e-3)
    model.compile(ts.optimizers.CentripetalSGD(plan, rate, centripetal_strength=strength), LOSS, metrics=["accuracy"])
    before = max(ts.csgd.distances(model, plan).values())
    history = model.fit(train, epochs=epochs, verbose=0, callbacks=[ts.callbacks.ClusterMonitor(plan, print_fn=None)])
    assert history.history["cluster_distance"][-1] < 1e-5 < 0.1 < before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = ts.csgd.trim(model, plan)
    assert not [w for w in caught if "not yet identical" in str(w.message)]
    assert (small.get_layer("fc1").units, small.get_layer("fc2").units) == (150, 50)
    assert _assert_same_predictions(model, small) > 0.9


def _residual_bn_model():
    """A residual block with BatchNormalization on every branch: conv-BN-ReLU-conv-BN + conv-BN shortcut."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(12, 3, padding="same", name="conv1")(inputs)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(h))
    a = keras.layers.BatchNormalization(name="bn2")(keras.layers.Conv2D(16, 3, padding="same", name="conv2")(h))
    b = keras.layers.BatchNormalization(name="bn3")(keras.layers.Conv2D(16, 1, name="shortcut")(inputs))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(keras.layers.Add()([a, b])))
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))


@pytest.mark.slow
def test_csgd_prune_is_exact_with_batch_norm_statistics():
    train = ts.data.load("digits", "train", batch_size=64, seed=0)
    model = _residual_bn_model()
    monitor = ts.callbacks.ClusterMonitor(ts.csgd.clusters(model, 0.5, seed=0), print_fn=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small, plan = ts.csgd_prune(model, 0.5, train, epochs=3, seed=0, callbacks=[monitor])
    assert plan == monitor.clusters
    # The filters, gamma and beta are identical; the moving statistics only after they are recomputed.
    assert max(monitor.history[-1].values()) > 1e-4
    assert max(ts.csgd.distances(model, plan).values()) < 1e-5
    assert not [w for w in caught if "not yet identical" in str(w.message)]
    assert small.count_params() < model.count_params() / 2
    _assert_same_predictions(model, small)


def _train_step(model, x, y):
    """One eager training step through `model.optimizer`, as `fit` takes it."""
    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=True))
    model.optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)


def test_saved_model_resumes_training_identically(tmp_path):
    x, y = next(ts.data.load("digits", "train", batch_size=64, shuffle=False).as_numpy_iterator())
    model = small_model()
    plan = ts.csgd.clusters(model, 0.5, seed=0)
    model.compile(ts.optimizers.CentripetalSGD(plan, 0.05, centripetal_strength=0.5), LOSS)
    for _ in range(2):
        _train_step(model, x, y)
    model.save(tmp_path / "csgd.keras")
    loaded = keras.saving.load_model(tmp_path / "csgd.keras")
    assert isinstance(loaded.optimizer, ts.optimizers.CentripetalSGD)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # momentums and iterations
    for m in (model, loaded):
        for _ in range(2):
            _train_step(m, x, y)
    assert sorted(loaded.optimizer.pulled) == sorted(model.optimizer.pulled)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_optimizer_config_round_trip():
    plan = ts.csgd.clusters(small_model(), 0.25, method="even")
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 100)
    optimizer = ts.optimizers.CentripetalSGD(plan, schedule, momentum=0.8, centripetal_strength=0.2, weight_decay=5e-4)
    config = keras.optimizers.serialize(optimizer)
    again = keras.optimizers.deserialize(json.loads(json.dumps(config)))
    assert isinstance(again, ts.optimizers.CentripetalSGD)
    assert again.get_config() == optimizer.get_config()
    assert (again.momentum, again.centripetal_strength, again.l2, again.clusters) == (0.8, 0.2, 5e-4, plan)


def _batches(count=4):
    """`count` digits batches of 64, the same every epoch."""
    return ts.data.load("digits", "train", batch_size=64, shuffle=False).take(count).cache()


@pytest.mark.slow
def test_mirrored_strategy_trains_like_one_device(two_replica_strategy):
    train_ds = _batches()
    results = []
    for strategy in (tf.distribute.get_strategy(), two_replica_strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = small_model()
            plan = ts.csgd.clusters(model, 0.5, method="even")
            model.compile(ts.optimizers.CentripetalSGD(plan, 0.05, centripetal_strength=0.5), LOSS)
        model.fit(train_ds, epochs=1, verbose=0, shuffle=False)
        results.append((model.get_weights(), ts.csgd.distances(model, plan)))
    (single, single_distances), (mirrored, mirrored_distances) = results
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert mirrored_distances.keys() == single_distances.keys()


def test_clusters_respect_pinned_channels_and_the_mapping_form():
    model = small_model()
    groups = dependency_groups(model)
    assert not groups[-1].prunable  # the logits are a model output
    plan = ts.csgd.clusters(model, {"conv3": 20}, seed=1)
    assert list(plan["clusters"]) == ["conv2"] and len(plan["clusters"]["conv2"]) == 20
    assert sorted(plan["weights"]) == ["conv2/bias", "conv2/kernel", "conv3/bias", "conv3/kernel"]
    assert plan["weights"]["conv2/bias"]["labels"] == plan["weights"]["conv3/bias"]["labels"]
    even = ts.csgd.clusters(model, {"conv1": 4}, method="even")["clusters"]["conv1"]
    assert even == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    assert ts.csgd.clusters(model, 0.0)["clusters"] == {}


@pytest.mark.parametrize("ratio, method, error", [
    (0.5, "random", ValueError),
    (1.5, "kmeans", ValueError),
    ({"logits": 5}, "kmeans", ValueError),
    ({"conv1": 0}, "kmeans", ValueError),
    ({"conv1": [[0, 1], [1, 2]]}, "kmeans", ValueError),
    ({"conv1": "half"}, "kmeans", TypeError),
])
def test_clusters_reject_bad_arguments(ratio, method, error):
    with pytest.raises(error):
        ts.csgd.clusters(small_model(), ratio, method=method)


def test_optimizer_and_trim_reject_clusters_of_another_model():
    plan = ts.csgd.clusters(small_model(), 0.5, method="even")
    other = ts.models.lenet_300_100((8, 8, 1))
    with pytest.raises(ValueError, match="another model"):
        ts.optimizers.CentripetalSGD(plan, 0.1).build(other.trainable_variables)
    with pytest.raises(TypeError, match="tfsparse.csgd.clusters"):
        ts.optimizers.CentripetalSGD({"conv1": [[0, 1]]}, 0.1)
    with pytest.raises(ValueError):
        ts.csgd.trim(other, plan)


def test_strength_shrinks_the_vectors_distance_as_planned():
    rate, steps, shrink = 0.05, 300, 1e-3
    vector = keras.Variable(np.array([1.0, -1.0], dtype="float32"))
    plan = {"clusters": {}, "weights": {vector.path: {"layer": "", "weight": "", "axis": 0, "labels": [0, 0]}}}
    strength = ts.csgd.strength(steps, rate, shrink=shrink)
    optimizer = ts.optimizers.CentripetalSGD(plan, rate, centripetal_strength=strength, weight_decay=0)
    step = tf.function(lambda: optimizer.apply([tf.zeros(2)], [vector]))
    halfway = None
    for t in range(1, steps + 1):
        step()
        halfway = halfway or (t == steps // 2 and abs(float(vector.numpy()[0])))
    assert abs(float(vector.numpy()[0])) < 3 * shrink < halfway
    with pytest.warns(UserWarning, match="too few"):
        ts.csgd.strength(10, rate)


def test_a_scheduled_strength_starts_the_pull_at_its_boundary_and_saves_with_the_optimizer():
    vector = keras.Variable(np.array([1.0, -1.0], dtype="float32"))
    plan = {"clusters": {}, "weights": {vector.path: {"layer": "", "weight": "", "axis": 0, "labels": [0, 0]}}}
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([5], [0.0, 20.0])
    optimizer = ts.optimizers.CentripetalSGD(plan, 0.05, centripetal_strength=schedule, weight_decay=0)
    step = tf.function(lambda: optimizer.apply([tf.zeros(2)], [vector]))
    distances = []
    for _ in range(12):
        step()
        distances.append(float(vector.numpy()[0] - vector.numpy()[1]))
    # Steps 0-5 (the optimizer's iterations before each update) have no pull: without weight decay the distance
    # of a cluster does not move at all; after the boundary it shrinks.
    assert distances[:6] == [2.0] * 6
    assert distances[-1] < 0.5 * distances[6] < 2.0
    again = keras.optimizers.deserialize(json.loads(json.dumps(keras.optimizers.serialize(optimizer))))
    assert isinstance(again.centripetal_strength, keras.optimizers.schedules.PiecewiseConstantDecay)
    assert again.get_config() == optimizer.get_config()
    with pytest.raises(ValueError, match="centripetal_strength.*LearningRateSchedule.*'strong'"):
        ts.optimizers.CentripetalSGD(plan, 0.05, centripetal_strength="strong")


def test_csgd_prune_pull_window_trains_the_full_width_first_then_meets_the_clusters():
    train = _batches(8)
    model = ts.models.lenet_300_100((8, 8, 1))
    monitor = ts.callbacks.ClusterMonitor(ts.csgd.clusters(model, 0.5, seed=0), print_fn=None)
    small, _ = ts.csgd_prune(model, monitor.clusters, train, epochs=20, learning_rate=0.05, pull=(0.5, 0.875),
                             callbacks=[monitor])
    strength = model.optimizer.centripetal_strength
    assert isinstance(strength, keras.optimizers.schedules.PiecewiseConstantDecay)
    assert strength.boundaries == [80]
    distances = [max(epoch.values()) for epoch in monitor.history]
    # Unpulled for 10 epochs: the averaged gradient keeps each cluster's distances, weight decay shrinks them a
    # little; then they close.
    assert distances[9] > 0.9 * distances[0]
    assert distances[-1] < 1e-5
    assert (small.get_layer("fc1").units, small.get_layer("fc2").units) == (150, 50)
    _assert_same_predictions(model, small)


@pytest.mark.parametrize("pull", [(0.5, 0.5), (0.8, 0.2), (-0.1, 0.5), (0.0, 1.5), 0.5, ("a", "b")])
def test_csgd_prune_rejects_a_bad_pull_window(pull):
    with pytest.raises(ValueError, match=r"Argument `pull` must be two fractions"):
        ts.csgd_prune(small_model(), 0.5, _batches(1), epochs=1, pull=pull)
