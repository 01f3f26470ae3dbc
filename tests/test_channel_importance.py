"""Channel criteria against hand computations: filter norms, BatchNorm scale, first-order Taylor."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.surgery import dependency_groups

layers = keras.layers


def _residual(batch_norm=False):
    """Convs `a` and `b` added, then a depthwise conv `dw` (multiplier 2): one group of 3 channels."""
    inputs = keras.Input((4, 4, 2))
    a = layers.Conv2D(3, 1, name="a")(inputs)
    b = layers.Conv2D(3, 3, padding="same", use_bias=False, name="b")(inputs)
    if batch_norm:
        a, b = layers.BatchNormalization(name="bn_a")(a), layers.BatchNormalization(name="bn_b")(b)
    x = layers.DepthwiseConv2D(1, depth_multiplier=2, name="dw")(layers.Add()([a, b]))
    model = keras.Model(inputs, layers.Dense(2, name="fc")(layers.GlobalAveragePooling2D()(x)))
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    if batch_norm:  # positive variances
        for name in ("bn_a", "bn_b"):
            bn = model.get_layer(name)
            bn.moving_variance.assign(np.abs(bn.moving_variance.numpy()) + 0.5)
    return model


def _group(model):
    (group,) = [g for g in dependency_groups(model) if g.producers == ("a", "b")]
    return group


def _kernel_parts(model, values=None):
    """Per channel, the channel's entries of a's, b's and dw's kernels (or of `values` shaped like them)."""
    values = values or {n: model.get_layer(n).kernel.numpy() for n in ("a", "b", "dw")}
    return [np.concatenate([values["a"][..., c].ravel(), values["b"][..., c].ravel(), values["dw"][:, :, c].ravel()])
            for c in range(3)]


def test_l1_and_l2_pool_the_producer_and_depthwise_kernels_of_each_channel():
    model = _residual()
    group = _group(model)
    parts = _kernel_parts(model)
    np.testing.assert_allclose(ts.scoring.L1()(model, [group])[0], [np.abs(p).sum() for p in parts], rtol=1e-6)
    np.testing.assert_allclose(ts.scoring.L2()(model, [group])[0], [np.linalg.norm(p) for p in parts], rtol=1e-6)


def test_bn_scale_adds_the_absolute_gammas_of_the_batch_norms_carrying_a_channel():
    model = _residual(batch_norm=True)
    gammas = [np.abs(model.get_layer(n).gamma.numpy()) for n in ("bn_a", "bn_b")]
    np.testing.assert_allclose(ts.scoring.BNScale()(model, [_group(model)])[0], gammas[0] + gammas[1], rtol=1e-6)


def test_bn_scale_without_batch_norm_names_the_argument_and_the_group():
    model = _residual()
    with pytest.raises(ValueError, match=r"`importance`='bn_scale'.*\['a', 'b'\]"):
        ts.scoring.BNScale()(model, [_group(model)])


def _data(count=15):
    rng = np.random.default_rng(2)
    return rng.normal(size=(count, 4, 4, 2)).astype("float32"), rng.integers(0, 2, count)


def test_taylor_is_the_absolute_sum_of_weight_times_gradient_over_each_channel():
    model = _residual()
    x, y = _data()
    kernels = [model.get_layer(n).kernel for n in ("a", "b", "dw")]
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x, training=True))
    grads = dict(zip(("a", "b", "dw"), tape.gradient(loss, kernels)))
    products = {n: model.get_layer(n).kernel.numpy() * grads[n].numpy() for n in grads}
    expected = [abs(p.sum()) for p in _kernel_parts(model, products)]
    np.testing.assert_allclose(ts.scoring.Taylor()(model, [_group(model)], (x, y))[0], expected, rtol=1e-4)


def test_taylor_averages_the_gradient_over_batches():
    model = _residual()
    x, y = _data(16)
    group = _group(model)
    whole = ts.scoring.Taylor()(model, [group], (x, y))[0]
    halves = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    np.testing.assert_allclose(ts.scoring.Taylor(batches=2)(model, [group], halves)[0], whole, rtol=1e-4)


def test_taylor_scores_are_equal_under_mirrored_strategy(two_replica_strategy):
    x, y = _data()  # an odd batch: the replicas get 8 and 7 examples
    model = _residual()
    alone = ts.scoring.Taylor()(model, [_group(model)], (x, y))[0]
    with two_replica_strategy.scope():
        mirrored = _residual()
        mirrored.set_weights(model.get_weights())
        scores = ts.scoring.Taylor()(mirrored, [_group(mirrored)], (x, y))[0]
    np.testing.assert_allclose(scores, alone, rtol=1e-5)


def test_taylor_without_data_names_the_argument():
    model = _residual()
    with pytest.raises(ValueError, match="`data`"):
        ts.scoring.Taylor()(model, [_group(model)])


def test_a_custom_criterion_is_a_short_subclass():
    class Count(ts.scoring.ChannelImportance):
        def statistics(self, model, groups, data):
            return {key: [np.ones_like(w)] for key, w in self.kernels(model, groups).items()}

        def combine(self, sums, counts):
            return counts

    model = _residual()
    # a: 2 inputs, b: 3 x 3 x 2, dw: 2 (its multiplier) entries per channel.
    np.testing.assert_array_equal(Count()(model, [_group(model)])[0], [2 + 18 + 2] * 3)
