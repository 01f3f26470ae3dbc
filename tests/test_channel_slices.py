"""Channel groups list their weight slices: layer, weight, axis, role and positions of every channel."""

import keras
import numpy as np
import pytest

import tfsparse as ts
from tfsparse.surgery import WeightSlice, dependency_groups, merge_channels, remove_channels

from test_surgery_exact import MERGE_MODELS  # the small models of the surgery exactness tests

layers = keras.layers


def _group_of(model, producer):
    return next(g for g in dependency_groups(model) if producer in g.producers)


def _slices(model, producer):
    """`{(layer, weight, axis): (role, positions)}` of the group of `producer`."""
    return {(s.layer, s.weight, s.axis): (s.role, s.positions) for s in _group_of(model, producer).slices}


def _each(count, positions_of):
    return tuple(tuple(positions_of(c)) for c in range(count))


def test_dense_produces_on_its_output_axis_and_consumes_on_its_input_axis():
    inputs = keras.Input((6,))
    x = layers.Dense(4, name="a")(inputs)
    model = keras.Model(inputs, layers.Dense(3, name="b")(x))
    one = _each(4, lambda c: [c])
    assert _slices(model, "a") == {
        ("a", "kernel", 1): ("producer", one),
        ("a", "bias", 0): ("producer", one),
        ("b", "kernel", 0): ("consumer", one),
    }


def test_conv_and_batch_normalization_slices():
    inputs = keras.Input((5, 5, 2))
    x = layers.BatchNormalization(name="bn")(layers.Conv2D(3, 3, use_bias=False, name="conv")(inputs))
    model = keras.Model(inputs, layers.Conv2D(2, 1, name="next")(x))
    one = _each(3, lambda c: [c])
    assert _slices(model, "conv") == {
        ("conv", "kernel", 3): ("producer", one),
        **{("bn", w, 0): ("member", one) for w in ("gamma", "beta", "moving_mean", "moving_variance")},
        ("next", "kernel", 2): ("consumer", one),
    }
    group = _group_of(model, "conv")
    assert [s.layer for s in group.slices] == ["conv", "bn", "bn", "bn", "bn", "next"]
    assert all(isinstance(s, WeightSlice) for s in group.slices)


def test_transposed_convolution_kernels_carry_output_channels_on_axis_minus_two():
    inputs = keras.Input((4, 4, 2))
    x = layers.Conv2DTranspose(5, 3, name="up")(inputs)
    model = keras.Model(inputs, layers.Conv2DTranspose(3, 2, name="next")(x))
    one = _each(5, lambda c: [c])
    assert model.get_layer("up").kernel.shape == (3, 3, 5, 2)
    assert _slices(model, "up") == {
        ("up", "kernel", 2): ("producer", one),
        ("up", "bias", 0): ("producer", one),
        ("next", "kernel", 3): ("consumer", one),
    }


def test_depthwise_convolution_is_a_member_with_its_multiplier():
    inputs = keras.Input((5, 5, 2))
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(layers.Conv2D(4, 1, name="conv")(inputs))
    model = keras.Model(inputs, layers.Conv2D(3, 1, name="pw")(x))
    one, two = _each(4, lambda c: [c]), _each(4, lambda c: [2 * c, 2 * c + 1])
    assert _slices(model, "conv") == {
        ("conv", "kernel", 3): ("producer", one),
        ("conv", "bias", 0): ("producer", one),
        ("dw", "kernel", 2): ("member", one),
        ("dw", "bias", 0): ("member", two),
        ("pw", "kernel", 2): ("consumer", two),
    }


def test_separable_convolution_is_a_member_and_a_consumer_of_its_input_and_produces_its_output():
    inputs = keras.Input((5, 5, 2))
    x = layers.SeparableConv2D(6, 3, depth_multiplier=2, name="sep")(layers.Conv2D(4, 1, name="conv")(inputs))
    model = keras.Model(inputs, layers.Dense(3, name="dense")(layers.GlobalAveragePooling2D()(x)))
    conv = _slices(model, "conv")
    assert conv[("sep", "depthwise_kernel", 2)] == ("member", _each(4, lambda c: [c]))
    assert conv[("sep", "pointwise_kernel", 2)] == ("consumer", _each(4, lambda c: [2 * c, 2 * c + 1]))
    one = _each(6, lambda c: [c])
    assert _slices(model, "sep") == {
        ("sep", "pointwise_kernel", 3): ("producer", one),
        ("sep", "bias", 0): ("producer", one),
        ("dense", "kernel", 0): ("consumer", one),
    }


def test_add_gives_every_coupled_producer_a_producer_slice():
    inputs = keras.Input((4, 4, 3))
    a = layers.Conv2D(4, 1, use_bias=False, name="a")(inputs)
    b = layers.Conv2D(4, 1, use_bias=False, name="b")(inputs)
    x = layers.GlobalAveragePooling2D()(layers.Add()([a, b]))
    model = keras.Model(inputs, layers.Dense(2, name="dense")(x))
    group = _group_of(model, "a")
    assert group.slices_of(2) == [("a", "kernel", 3, (2,)), ("b", "kernel", 3, (2,)), ("dense", "kernel", 0, (2,))]
    assert group.slices_of(2, roles=("producer",)) == group.slices_of(2)[:2]


def test_concatenate_offsets_the_positions_of_its_later_inputs():
    inputs = keras.Input((5, 5, 2))
    a = layers.Conv2D(4, 1, name="a")(inputs)
    b = layers.Conv2D(6, 1, name="b")(inputs)
    model = keras.Model(inputs, layers.Flatten()(layers.Conv2D(3, 1, name="c")(layers.Concatenate()([a, b]))))
    assert _slices(model, "a")[("c", "kernel", 2)] == ("consumer", _each(4, lambda c: [c]))
    assert _slices(model, "b")[("c", "kernel", 2)] == ("consumer", _each(6, lambda c: [4 + c]))


def test_flatten_spreads_channel_c_over_c_plus_k_times_channels():
    inputs = keras.Input((3, 2, 2))
    x = layers.Flatten()(layers.Conv2D(5, 1, name="conv")(inputs))
    model = keras.Model(inputs, layers.Dense(4, name="dense")(x))
    assert _slices(model, "conv")[("dense", "kernel", 0)] == ("consumer", _each(5, lambda c: range(c, 30, 5)))


def test_a_channel_tied_twice_into_a_tensor_has_two_positions():
    inputs = keras.Input((4, 4, 3))
    a = layers.Conv2D(3, 1, name="a")(inputs)
    x = layers.Add()([layers.Concatenate()([a, a]), layers.Conv2D(6, 1, name="b")(inputs)])
    model = keras.Model(inputs, layers.Flatten()(layers.Conv2D(2, 1, name="reads")(x)))
    slices = _slices(model, "a")
    assert _group_of(model, "a").size == 3
    assert slices[("a", "kernel", 3)] == ("producer", _each(3, lambda c: [c]))
    assert slices[("b", "kernel", 3)] == ("producer", _each(3, lambda c: [c, c + 3]))
    assert slices[("reads", "kernel", 2)] == ("consumer", _each(3, lambda c: [c, c + 3]))


def test_a_consumer_of_one_producer_has_no_positions_for_the_others_channels():
    inputs = keras.Input((4, 4, 3))
    a, b = layers.Conv2D(3, 1, name="a")(inputs), layers.Conv2D(2, 1, name="b")(inputs)
    x = layers.Add()([layers.Concatenate()([a, b]), layers.Conv2D(5, 1, name="c")(inputs)])
    y = layers.Conv2D(2, 1, name="reads_a")(a)
    model = keras.Model(inputs, layers.Concatenate()([layers.Flatten()(y), layers.Flatten()(x)]))
    group = _group_of(model, "a")
    assert group.producers == ("a", "b", "c") and group.size == 5
    assert _slices(model, "a")[("reads_a", "kernel", 2)] == ("consumer", ((0,), (1,), (2,), (), ()))
    assert [s[0] for s in group.slices_of(4)] == ["b", "b", "c", "c"]


def test_slices_of_checks_its_arguments():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, layers.Dense(2)(layers.Dense(4, name="a")(inputs)))
    group = _group_of(model, "a")
    with pytest.raises(ValueError, match=r"`channel` must be from 0 to 3 .* received: 4"):
        group.slices_of(4)
    with pytest.raises(TypeError, match="`channel` must be an integer"):
        group.slices_of(1.0)
    with pytest.raises(ValueError, match="`roles` must be a sequence of roles"):
        group.slices_of(0, roles="producer")
    with pytest.raises(ValueError, match="`roles` must be a sequence of roles"):
        group.slices_of(0, roles=("producers",))
    assert repr(group) == "ChannelGroup(producers=('a',), size=4, pinned=0)"


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def transposed_model():
    """Transposed and depthwise convolutions, BatchNormalization and PReLU between them."""
    inputs = keras.Input((4, 4, 3))
    x = layers.BatchNormalization(name="enc_bn")(layers.Conv2D(6, 3, padding="same", name="enc")(inputs))
    x = layers.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = layers.BatchNormalization(name="up_bn")(layers.Conv2DTranspose(5, 3, strides=2, name="up")(x))
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(layers.ReLU()(x))
    x = layers.Flatten()(layers.Conv2DTranspose(4, 2, name="up2")(x))
    return keras.Model(inputs, layers.Dense(3, name="logits")(x))


SLICE_MODELS = {"transposed": transposed_model, **MERGE_MODELS}


def _randomize(model, rng):
    """Random biases, normalization parameters and statistics, PReLU slopes: a slice left out shows."""
    for weight in model.weights:
        if weight.name in ("gamma", "moving_variance"):
            weight.assign(rng.uniform(0.5, 1.5, weight.shape))
        elif weight.name in ("bias", "beta", "moving_mean", "alpha"):
            weight.assign(rng.normal(0.0, 0.5, weight.shape))


def _zero(model, slices):
    for layer, weight, axis, indices in slices:
        variable = next(w for w in model.get_layer(layer).weights if w.name == weight)
        array = _numpy(variable).copy()
        array[(slice(None),) * axis + (list(indices),)] = 0.0
        variable.assign(array)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLICE_MODELS))
def test_zeroing_the_slices_of_a_channel_computes_what_removing_it_computes(name):
    """Silencing a channel (producer and member slices) or ignoring it (consumer slices) is removing it."""
    model = SLICE_MODELS[name]()
    rng = np.random.default_rng(0)
    _randomize(model, rng)
    x = np.random.default_rng(1).uniform(size=(2, *model.input_shape[1:])).astype("float32")
    chosen = {group: int(rng.choice([i for i in range(group.size) if i not in group.pinned]))
              for group in dependency_groups(model) if group.prunable and group.size > 1}
    assert chosen
    removed = _numpy(remove_channels(model, {group: [channel] for group, channel in chosen.items()})(x, training=False))
    weights = model.get_weights()
    for roles in (("producer", "member"), ("consumer",)):
        for group, channel in chosen.items():
            _zero(model, group.slices_of(channel, roles))
        np.testing.assert_allclose(_numpy(model(x, training=False)), removed, rtol=1e-5,
                                   atol=1e-5 * np.abs(removed).max(), err_msg=f"{roles} slices zeroed")
        model.set_weights(weights)


def coupled_model():
    """Group channel i is channel i of `c`, of `a` for i < 4, of `b` (at i - 4) after."""
    inputs = keras.Input((4, 4, 3))
    a, b = layers.Conv2D(4, 1, name="a")(inputs), layers.Conv2D(2, 1, name="b")(inputs)
    x = layers.Add()([layers.Concatenate()([a, b]), layers.Conv2D(6, 1, name="c")(inputs)])
    x = layers.Conv2D(2, 1, name="reader")(layers.BatchNormalization(name="bn")(x))
    return keras.Model(inputs, layers.Dense(3, name="logits")(layers.Flatten()(x)))


def _assert_same_weights(first, second):
    assert [layer.name for layer in first.layers] == [layer.name for layer in second.layers]
    for one, other in zip(first.weights, second.weights):
        np.testing.assert_array_equal(_numpy(one), _numpy(other))


def test_removing_and_merging_by_group_equals_by_producer():
    model = coupled_model()
    group = _group_of(model, "a")
    assert group.producers == ("a", "b", "c") and group.size == 6
    by_group = remove_channels(model, {group: [1, 5]})
    assert by_group.get_layer("b").filters == 1
    _assert_same_weights(by_group, remove_channels(model, {"c": [1, 5]}))
    _assert_same_weights(by_group, remove_channels(model, {"a": [1], "b": [1]}))
    clusters = [[0, 4], [1, 2, 3]]
    _assert_same_weights(merge_channels(model, {group: clusters}), merge_channels(model, {"c": clusters}))


def test_groups_of_a_wrapped_model_are_keys_of_the_wrapped_model():
    model = ts.models.lenet5_caffe((16, 16, 1))
    pruned = ts.prune_low_magnitude(model, ts.schedules.ConstantSparsity(0.5, 0))
    group = _group_of(pruned, "conv2")
    _assert_same_weights(remove_channels(pruned, {group: [0, 1]}), remove_channels(pruned, {"conv2": [0, 1]}))


def test_groups_of_another_model_and_bad_keys_are_refused():
    model = coupled_model()
    group = _group_of(model, "a")
    pruned = remove_channels(model, {group: [0]})
    with pytest.raises(ValueError, match=r"`channels` holds ChannelGroup\(producers=\('a', 'b', 'c'\), size=6, "
                                         r"pinned=0\), which is not a channel group of model"):
        remove_channels(pruned, {group: [1]})
    with pytest.raises(ValueError, match="`clusters` holds .* which is not a channel group"):
        merge_channels(pruned, {group: [[1, 2]]})
    with pytest.raises(TypeError, match="keyed by producer names or `ChannelGroup`s .* the key 3 "):
        remove_channels(model, {3: [0]})
    with pytest.raises(ValueError, match=r"channels \[6\] for ChannelGroup.*, which has 6 channels"):
        remove_channels(model, {group: [6]})
    logits = _group_of(model, "logits")
    with pytest.raises(ValueError, match=r"channel 0 of ChannelGroup\(producers=\('logits',\), size=3, pinned=3\) "
                                         "cannot be removed: it .* is model output 0"):
        remove_channels(model, {logits: [0]})
