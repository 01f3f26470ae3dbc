"""Hutchinson Hessian traces against the exact Hessian of a tiny model; HAP's channel criterion."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.surgery import dependency_groups

layers = keras.layers
KEYS = ("hidden/kernel", "logits/kernel")


def _tiny():
    """16 inputs -> Dense(32, tanh) -> Dense(10) logits, on 256 examples: a Hessian small enough to form."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((16,))
    h = layers.Dense(32, activation="tanh", name="hidden")(inputs)
    model = keras.Model(inputs, layers.Dense(10, name="logits")(h))
    rng = np.random.default_rng(2)
    return model, rng.normal(size=(256, 16)).astype("float32"), rng.integers(0, 10, 256)


def _exact_hessian(model, x, y):
    """The Hessian of the mean loss with respect to both kernels, flattened, and the kernels' sizes."""
    kernels = [model.get_layer(key.split("/")[0]).kernel for key in KEYS]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            value = loss(y, model(x, training=False))
        grads = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(value, kernels)], axis=0)
    rows = outer.jacobian(grads, kernels)
    hessian = np.concatenate([np.reshape(r, (grads.shape[0], -1)) for r in rows], axis=1).astype(np.float64)
    return hessian, [int(np.prod(k.shape)) for k in kernels]


def _blocks(sizes):
    starts = np.cumsum([0, *sizes])
    return [np.arange(a, b) for a, b in zip(starts[:-1], starts[1:])]


def _hutchinson_stderr(hessian, block, samples):
    """The standard error of `samples` Rademacher estimates of the trace of `block`, from the exact Hessian."""
    inside = hessian[np.ix_(block, block)]
    outside = np.delete(hessian[block], block, axis=1)
    variance = 2 * (np.square(inside).sum() - np.square(np.diag(inside)).sum()) + np.square(outside).sum()
    return np.sqrt(variance / samples)


@pytest.fixture(scope="module")
def tiny_exact():
    """`(model, x, y, exact Hessian, kernel sizes, 200-sample estimates per layer)` of `_tiny()`."""
    model, x, y = _tiny()
    hessian, sizes = _exact_hessian(model, x, y)
    traces = ts.scoring.hessian_trace(model, (x, y), samples=200, per="layer", seed=3, verbose=0)
    return model, x, y, hessian, sizes, traces


def test_200_samples_estimate_each_weight_trace_within_ten_percent_with_the_right_stderr(tiny_exact):
    _, _, _, hessian, sizes, traces = tiny_exact
    assert list(traces) == list(KEYS)
    for key, block in zip(KEYS, _blocks(sizes)):
        exact = np.trace(hessian[np.ix_(block, block)])
        assert traces[key].value == pytest.approx(exact, rel=0.1)
        assert traces[key].stderr == pytest.approx(_hutchinson_stderr(hessian, block, 200), rel=0.3)


def test_channel_estimates_agree_with_the_exact_diagonal(tiny_exact):
    model, x, y, hessian, sizes, _ = tiny_exact
    channels = ts.scoring.hessian_trace(model, (x, y), samples=200, per="channel", seed=3, verbose=0)
    for key, block in zip(KEYS, _blocks(sizes)):
        shape = model.get_layer(key.split("/")[0]).kernel.shape
        exact = np.diag(hessian)[block].reshape(shape).sum(axis=0)  # output channels: the last axis
        estimate = channels[key]
        assert estimate.value.shape == estimate.stderr.shape == (shape[-1],)
        # Every channel within 4 standard errors: the estimate is unbiased and its error is what it says.
        assert np.all(np.abs(estimate.value - exact) < 4 * estimate.stderr)


def test_entry_estimates_sum_to_the_channel_and_layer_estimates_of_the_same_vectors(tiny_exact):
    model, x, y, _, _, _ = tiny_exact
    entries = ts.scoring.hessian_trace(model, (x, y), samples=200, per="weight", seed=3, verbose=0)
    channels = ts.scoring.hessian_trace(model, (x, y), samples=200, per="channel", seed=3, verbose=0)
    for key in KEYS:
        assert entries[key].value.shape == tuple(model.get_layer(key.split("/")[0]).kernel.shape)
        np.testing.assert_allclose(entries[key].value.sum(axis=0), channels[key].value, rtol=1e-6, atol=1e-9)
        assert entries[key].value.sum() == pytest.approx(tiny_exact[5][key].value, rel=1e-6)


def test_the_standard_error_shrinks_like_one_over_the_square_root_of_the_samples(tiny_exact):
    model, x, y, _, _, many = tiny_exact  # 200 samples
    few = ts.scoring.hessian_trace(model, (x, y), samples=50, per="layer", seed=4, verbose=0)
    for key in KEYS:
        assert few[key].stderr / many[key].stderr == pytest.approx(2.0, rel=0.25)


def _batch_norm_model():
    inputs = keras.Input((6, 6, 2))
    h = layers.BatchNormalization(name="bn")(layers.Conv2D(4, 3, name="conv")(inputs))
    h = layers.GlobalAveragePooling2D()(layers.ReLU()(h))
    model = keras.Model(inputs, layers.Dense(3, name="logits")(layers.Dropout(0.5)(h)))
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(4, 0.3, "float32"))
    bn.moving_variance.assign(np.full(4, 2.0, "float32"))
    rng = np.random.default_rng(5)
    return model, rng.normal(size=(15, 6, 6, 2)).astype("float32"), rng.integers(0, 3, 15)


def test_kernels_only_in_inference_mode_and_no_variable_changes():
    model, x, y = _batch_norm_model()
    before = [w.numpy().copy() for w in model.weights]
    traces = ts.scoring.hessian_trace(model, (x, y), samples=1, per="channel", seed=1, verbose=0)
    assert list(traces) == ["conv/kernel", "logits/kernel"]  # no bias, no BatchNormalization
    for old, weight in zip(before, model.weights):
        np.testing.assert_array_equal(weight.numpy(), old)
    again = ts.scoring.hessian_trace(model, (x, y), samples=1, per="channel", seed=1, verbose=0)
    # Inference mode: Dropout is off and BatchNormalization uses its moving statistics, so the estimate is repeatable.
    np.testing.assert_array_equal(again["conv/kernel"].value, traces["conv/kernel"].value)


@pytest.mark.slow
def test_estimates_are_equal_under_mirrored_strategy(two_replica_strategy):
    model, x, y = _batch_norm_model()  # 15 examples: the replicas get 7 and 8
    alone = ts.scoring.hessian_trace(model, (x, y), samples=4, seed=6, verbose=0)
    with two_replica_strategy.scope():
        mirrored, _, _ = _batch_norm_model()
        mirrored.set_weights(model.get_weights())
        spread = ts.scoring.hessian_trace(mirrored, (x, y), samples=4, seed=6, verbose=0)
    for key in alone:
        np.testing.assert_allclose(spread[key].value, alone[key].value, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_several_batches_average_the_hessian():
    model, x, y = _tiny()
    whole = ts.scoring.hessian_trace(model, (x, y), samples=2, per="layer", seed=7, verbose=0)
    halves = tf.data.Dataset.from_tensor_slices((x, y)).batch(128)
    split = ts.scoring.hessian_trace(model, halves, samples=2, batches=2, per="layer", seed=7, verbose=0)
    for key in KEYS:
        assert split[key].value == pytest.approx(whole[key].value, rel=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"per": "row"}, r"`per` must be one of \('channel', 'layer', 'weight'\), received: 'row'"),
     ({"samples": 0}, r"`samples` must be a positive integer, received: 0"),
     ({"batches": 2}, r"`batches` must be 1"),
     ({"verbose": 2}, r"`verbose` must be 0 or 1, received: 2")],
)
def test_bad_arguments_are_named(kwargs, match):
    model, x, y = _tiny()
    with pytest.raises(ValueError, match=match):
        ts.scoring.hessian_trace(model, (x, y), **kwargs)


def _residual():
    """Convs `a` and `b` added: one group of 3 channels with two producers."""
    inputs = keras.Input((5, 5, 2))
    a = layers.Conv2D(3, 1, name="a")(inputs)
    b = layers.Conv2D(3, 3, padding="same", name="b")(inputs)
    h = layers.GlobalAveragePooling2D()(layers.Activation("tanh")(layers.Add()([a, b])))
    model = keras.Model(inputs, layers.Dense(4, name="fc")(h))
    rng = np.random.default_rng(8)
    return model, rng.normal(size=(20, 5, 5, 2)).astype("float32"), rng.integers(0, 4, 20)


def test_hessian_criterion_sums_trace_times_mean_square_over_the_producers():
    model, x, y = _residual()
    (group,) = [g for g in dependency_groups(model) if g.producers == ("a", "b")]
    traces = ts.scoring.hessian_trace(model, (x, y), samples=2, seed=9, verbose=0)
    mean_squares = {name: np.square(model.get_layer(name).kernel.numpy()).reshape(-1, 3).mean(0) for name in "ab"}
    expected = sum(traces[f"{name}/kernel"].value * mean_squares[name] for name in "ab")
    scores = ts.scoring.HessianTrace(samples=2, seed=9, verbose=0)(model, [group], (x, y))[0]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_hessian_criterion_per_layer_gives_each_entry_its_layer_mean_diagonal():
    model, x, y = _residual()
    (group,) = [g for g in dependency_groups(model) if g.producers == ("a", "b")]
    traces = ts.scoring.hessian_trace(model, (x, y), samples=2, seed=9, per="layer", verbose=0)
    kernels = {name: model.get_layer(name).kernel.numpy() for name in "ab"}
    # T_layer * ||W_c||^2 / numel(W), summed over the producers.
    expected = sum(float(traces[f"{n}/kernel"].value) * np.square(k).reshape(-1, 3).sum(0) / k.size
                   for n, k in kernels.items())
    criterion = ts.scoring.HessianTrace(samples=2, seed=9, verbose=0, per="layer")
    np.testing.assert_allclose(criterion(model, [group], (x, y))[0], expected, rtol=1e-5)
    assert criterion.get_config()["per"] == "layer"
    with pytest.raises(ValueError, match="Argument `per` must be 'channel' or 'layer', received: 'weight'"):
        ts.scoring.HessianTrace(per="weight")


def _two_groups():
    """conv1 (4 channels) -> conv2 (4 channels) -> logits: two groups."""
    inputs = keras.Input((5, 5, 2))
    h = layers.Conv2D(4, 3, padding="same", activation="tanh", name="conv1")(inputs)
    h = layers.Conv2D(4, 3, padding="same", activation="tanh", name="conv2")(h)
    model = keras.Model(inputs, layers.Dense(3, name="fc")(layers.GlobalAveragePooling2D()(h)))
    rng = np.random.default_rng(8)
    for name in ("conv1", "conv2"):  # random biases tell the channels apart
        model.get_layer(name).bias.assign(rng.normal(size=4).astype("float32"))
    return model, rng.normal(size=(20, 5, 5, 2)).astype("float32"), rng.integers(0, 3, 20)


class _Given(ts.scoring.ChannelImportance):
    """Given scores: conv1's channels score 1 to 4, conv2's 10 to 40 (in reverse order)."""

    def statistics(self, model, groups, data):
        return {}

    def __call__(self, model, groups, data=None):
        return [np.array([2.0, 1.0, 4.0, 3.0]), np.array([40.0, 30.0, 20.0, 10.0])]

    def combine(self, sums, counts):
        return sums[0]


def test_prune_channels_ranks_comparable_scores_globally_as_they_are():
    model, x, y = _two_groups()
    assert ts.scoring.HessianTrace.comparable and not ts.scoring.L1.comparable

    def biases(criterion):
        small = ts.prune_channels(model, 3 / 8, importance=criterion, print_fn=None)
        return [small.get_layer(name).bias.numpy().tolist() for name in ("conv1", "conv2")]

    comparable = type("Comparable", (_Given,), {"comparable": True})()
    conv1, conv2 = (model.get_layer(name).bias.numpy() for name in ("conv1", "conv2"))
    # As they are: the 3 lowest of all 8 are conv1's; normalized by their group's mean, 2 of conv1's and 1 of conv2's.
    assert biases(comparable) == [conv1[[2]].tolist(), conv2.tolist()]
    assert biases(_Given()) == [conv1[[2, 3]].tolist(), conv2[[0, 1, 2]].tolist()]


def test_prune_channels_takes_the_hessian_criterion_by_name():
    model, x, y = _two_groups()
    small = ts.prune_channels(model, 0.25, importance="hessian", data=(x, y), print_fn=None)
    assert small.get_layer("conv1").filters + small.get_layer("conv2").filters == 6


def test_an_empty_batch_and_a_non_finite_hessian_vector_product_are_refused():
    model, x, y = _tiny()
    x, y = x[:6].copy(), y[:6]
    with pytest.raises(ValueError, match=r"gave an empty batch \(batch 1\)"):
        ts.scoring.hessian_trace(model, (x[:0], y[:0]), samples=2, verbose=0)
    x[2, 1] = np.inf
    with pytest.raises(ValueError, match="Hessian-vector product over batch 1 of `data` is not finite"):
        ts.scoring.hessian_trace(model, (x, y), samples=2, verbose=0)


def test_sequence_layers_estimate_their_traces_keyed_by_registry_names():
    keras.utils.set_random_seed(4)
    tokens = keras.Input((5,), dtype="int32")
    x = layers.Embedding(6, 3, name="embed")(tokens)
    x = layers.SimpleRNN(4, name="rnn")(x)
    model = keras.Model(tokens, layers.Dense(3, name="logits")(x))
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 6, (64, 5)).astype("int32"), rng.integers(0, 3, 64)
    keys = ["embed/embeddings", "rnn/simple_rnn_cell/kernel", "rnn/simple_rnn_cell/recurrent_kernel", "logits/kernel"]
    weights = ts.walk.prunable_weights(model)
    assert list(weights) == keys
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            value = loss(y, model(x, training=False))
        # The Embedding's gradient comes as IndexedSlices.
        grads = tf.concat([tf.reshape(tf.convert_to_tensor(g), [-1]) for g in inner.gradient(value, list(weights.values()))], 0)
    rows = outer.jacobian(grads, list(weights.values()), experimental_use_pfor=False)
    hessian = np.concatenate([np.reshape(r, (grads.shape[0], -1)) for r in rows], axis=1).astype(np.float64)
    samples = 300
    traces = ts.scoring.hessian_trace(model, (x, y), samples=samples, per="layer", seed=5, verbose=0)
    assert list(traces) == keys
    for key, block in zip(keys, _blocks([int(np.prod(w.shape)) for w in weights.values()])):
        exact, stderr = np.trace(hessian[np.ix_(block, block)]), _hutchinson_stderr(hessian, block, samples)
        assert abs(traces[key].value - exact) <= 4 * stderr + 1e-6, (key, traces[key].value, exact, stderr)
    channels = ts.scoring.hessian_trace(model, (x, y), samples=2, per="channel", seed=5, verbose=0)
    assert [np.shape(channels[key].value) for key in keys] == [(3,), (4,), (4,), (3,)]
