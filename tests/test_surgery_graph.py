"""The channel dependency graph: groups, channel positions after surgery, clear errors."""

import keras
import numpy as np
import pytest

import tfsparse as ts
from tfsparse.layers import ParametrizedWrapper
from tfsparse.surgery import dependency_groups, merge_channels, remove_channels

layers = keras.layers


def _weights(model, name):
    return [keras.ops.convert_to_numpy(w) for w in model.get_layer(name).weights]


def _group_of(model, producer):
    return next(g for g in dependency_groups(model) if producer in g.producers)


def _residual_model():
    inputs = keras.Input((6, 6, 3))
    stem = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    stem = layers.ReLU()(layers.BatchNormalization(name="stem_bn")(stem))
    branch = layers.BatchNormalization(name="block_bn")(layers.Conv2D(8, 3, padding="same", name="block")(stem))
    x = layers.ReLU()(layers.Add()([stem, branch]))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(5, 1, name="out")(x))
    return keras.Model(inputs, layers.Dense(3, name="logits")(x))


def test_add_ties_its_inputs_into_one_group():
    model = _residual_model()
    groups = {g.producers: g for g in dependency_groups(model)}
    assert set(groups) == {("stem", "block"), ("out",), ("logits",)}
    group = groups[("stem", "block")]
    assert group.size == 8 and group.prunable and group.reason is None
    assert group.channels == tuple((("stem", i), ("block", i)) for i in range(8))
    assert group.consumers == ("block", "out")
    assert group.members == ("stem_bn", "block_bn")
    assert group.indices("block") == list(range(8))
    assert groups[("out",)].consumers == ("logits",)


def test_removing_a_tied_channel_slices_every_layer_of_the_group():
    model = _residual_model()
    new = remove_channels(model, {"block": [2, 5]})
    keep = [0, 1, 3, 4, 6, 7]
    old_stem, new_stem = _weights(model, "stem"), _weights(new, "stem")
    np.testing.assert_array_equal(new_stem[0], old_stem[0][..., keep])
    np.testing.assert_array_equal(new_stem[1], old_stem[1][keep])
    old_block, new_block = _weights(model, "block"), _weights(new, "block")
    np.testing.assert_array_equal(new_block[0], old_block[0][:, :, keep][..., keep])
    for bn in ("stem_bn", "block_bn"):  # gamma, beta, moving mean and variance
        for old, sliced in zip(_weights(model, bn), _weights(new, bn)):
            np.testing.assert_array_equal(sliced, old[keep])
    np.testing.assert_array_equal(_weights(new, "out")[0], _weights(model, "out")[0][:, :, keep])
    np.testing.assert_array_equal(_weights(new, "logits")[0], _weights(model, "logits")[0])


@pytest.mark.parametrize("scale, center", [(False, True), (True, False)])
def test_normalization_without_gamma_or_beta_is_sliced(scale, center):
    inputs = keras.Input((4, 4, 3))
    x = layers.BatchNormalization(scale=scale, center=center, name="bn")(layers.Conv2D(6, 1, name="conv")(inputs))
    x = layers.LayerNormalization(scale=scale, center=center, name="ln")(x)
    model = keras.Model(inputs, layers.Dense(2)(layers.Flatten()(x)))
    assert _group_of(model, "conv").members == ("bn", "ln")
    new = remove_channels(model, {"conv": [0, 4]})
    for name in ("bn", "ln"):
        old = _weights(model, name)
        assert len(old) == (4 if name == "bn" else 2) - 1
        for before, after in zip(old, _weights(new, name)):
            np.testing.assert_array_equal(after, before[[1, 2, 3, 5]])


def test_concatenate_offsets_the_channels_of_its_later_inputs():
    inputs = keras.Input((5, 5, 2))
    a = layers.Conv2D(4, 1, name="a")(inputs)
    b = layers.Conv2D(6, 1, name="b")(inputs)
    x = layers.Conv2D(3, 1, name="c")(layers.Concatenate()([a, b]))
    model = keras.Model(inputs, layers.Flatten()(x))
    assert _group_of(model, "b").consumers == ("c",)
    new = remove_channels(model, {"b": [2], "a": [0]})
    np.testing.assert_array_equal(_weights(new, "c")[0], np.delete(_weights(model, "c")[0], [0, 4 + 2], axis=2))
    np.testing.assert_array_equal(_weights(new, "b")[0], np.delete(_weights(model, "b")[0], 2, axis=3))


def test_flatten_maps_channel_c_to_rows_c_plus_k_times_channels():
    inputs = keras.Input((3, 3, 2))
    x = layers.Flatten()(layers.Conv2D(5, 1, name="conv")(inputs))
    model = keras.Model(inputs, layers.Dense(4, name="dense")(x))
    new = remove_channels(model, {"conv": [1, 3]})
    rows = [p for p in range(45) if p % 5 not in (1, 3)]
    np.testing.assert_array_equal(_weights(new, "dense")[0], _weights(model, "dense")[0][rows])


def test_depthwise_follows_its_input_with_its_multiplier():
    inputs = keras.Input((5, 5, 2))
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(layers.Conv2D(4, 1, name="conv")(inputs))
    model = keras.Model(inputs, layers.Flatten()(layers.Conv2D(3, 1, name="pw")(x)))
    group = _group_of(model, "conv")
    assert group.size == 4 and group.members == ("dw",) and group.consumers == ("pw",)
    new = remove_channels(model, {"conv": [1]})
    kernel, bias = _weights(model, "dw")
    new_kernel, new_bias = _weights(new, "dw")
    np.testing.assert_array_equal(new_kernel, np.delete(kernel, 1, axis=2))
    np.testing.assert_array_equal(new_bias, np.delete(bias, [2, 3]))
    np.testing.assert_array_equal(_weights(new, "pw")[0], np.delete(_weights(model, "pw")[0], [2, 3], axis=2))
    assert new.get_layer("dw").depth_multiplier == 2


def test_separable_conv_follows_its_input_and_produces_its_outputs():
    inputs = keras.Input((5, 5, 2))
    x = layers.SeparableConv2D(6, 3, depth_multiplier=2, name="sep")(layers.Conv2D(4, 1, name="conv")(inputs))
    model = keras.Model(inputs, layers.Dense(3, name="dense")(layers.GlobalAveragePooling2D()(x)))
    assert _group_of(model, "conv").consumers == ("sep",)
    assert _group_of(model, "sep").consumers == ("dense",)
    new = remove_channels(model, {"conv": [0], "sep": [5]})
    depthwise, pointwise, bias = _weights(model, "sep")
    new_depthwise, new_pointwise, new_bias = _weights(new, "sep")
    np.testing.assert_array_equal(new_depthwise, depthwise[:, :, 1:])
    np.testing.assert_array_equal(new_pointwise, pointwise[:, :, 2:, :5])
    np.testing.assert_array_equal(new_bias, bias[:5])
    np.testing.assert_array_equal(_weights(new, "dense")[0], _weights(model, "dense")[0][:5])


def test_squeeze_excitation_gate_is_tied_and_its_reshape_narrowed():
    inputs = keras.Input((4, 4, 3))
    x = layers.Conv2D(8, 1, name="conv")(inputs)
    gate = layers.Reshape((1, 1, 8), name="reshape")(layers.GlobalAveragePooling2D()(x))
    gate = layers.Conv2D(8, 1, activation="sigmoid", name="expand")(layers.Conv2D(2, 1, name="reduce")(gate))
    scalar = layers.Conv2D(1, 1, activation="sigmoid", name="scalar")(x)
    x = layers.Multiply()([layers.Multiply()([x, gate]), scalar])
    model = keras.Model(inputs, layers.Dense(2, name="dense")(layers.GlobalAveragePooling2D()(x)))
    groups = {g.producers: g for g in dependency_groups(model)}
    assert groups[("conv", "expand")].consumers == ("reduce", "scalar", "dense")
    assert groups[("conv", "expand")].members == ("reshape",)
    scalar_group = groups[("scalar",)]
    assert not scalar_group.prunable and "broadcast" in scalar_group.reason
    new = remove_channels(model, {"expand": [3]})
    assert new.get_layer("reshape").target_shape == (1, 1, 7)
    assert new.get_layer("conv").filters == 7


def _closed_by(kind):
    """A Conv2D `a` whose outputs reach a layer the graph cannot map."""

    class Custom(layers.Layer):
        def call(self, x):
            return x * 2.0

    inputs = keras.Input((4, 4, 3))
    x = layers.Conv2D(8, 1, name="a")(inputs)
    x = {
        "Reshape": lambda: layers.Reshape((4, 32))(x),
        "Lambda": lambda: layers.Lambda(lambda t: t * 2.0)(x),
        "Custom": lambda: Custom()(x),
        "Sequential": lambda: keras.Sequential([layers.Dense(8)])(x),
        "Activation": lambda: layers.Activation("softmax")(x),
        "GetItem": lambda: x[..., :6],
        "Conv2D": lambda: layers.Conv2D(4, 1, groups=2)(x),
        "channels_first": lambda: layers.MaxPooling2D(1, data_format="channels_first")(x),
    }[kind]()
    return keras.Model(inputs, layers.Dense(3, name="b")(layers.Flatten()(x)))


@pytest.mark.parametrize(
    "kind", ["Reshape", "Lambda", "Custom", "Sequential", "Activation", "GetItem", "Conv2D", "channels_first"])
def test_layers_the_graph_cannot_map_pin_the_channels_that_reach_them(kind):
    model = _closed_by(kind)
    group = _group_of(model, "a")
    assert not group.prunable and len(group.pinned) == group.size == 8
    assert kind in group.reason
    with pytest.raises(ValueError, match=f"channel 0 of 'a' cannot be removed.*{kind}"):
        remove_channels(model, {"a": [0]})


def test_model_outputs_are_never_pruned():
    inputs = keras.Input((4, 4, 3))
    features = layers.Conv2D(6, 1, name="features")(inputs)
    logits = layers.Dense(2, name="logits")(layers.Flatten()(features))
    model = keras.Model(inputs, [logits, features])
    for name, output in (("logits", 0), ("features", 1)):
        group = _group_of(model, name)
        assert not group.prunable and group.reason == f"is model output {output}"
        with pytest.raises(ValueError, match=f"'{name}' cannot be removed: .* is model output {output}"):
            remove_channels(model, {name: [0]})


def test_a_shared_layer_ties_the_channels_of_its_calls():
    inputs = keras.Input((4, 4, 3))
    shared = layers.Conv2D(5, 1, name="shared")
    y1 = shared(layers.Conv2D(6, 1, name="a")(inputs))
    y2 = shared(layers.Conv2D(6, 1, name="b")(inputs))
    model = keras.Model(inputs, layers.Flatten()(layers.Concatenate()([y1, y2])))
    group = _group_of(model, "a")
    assert group.producers == ("a", "b") and group.consumers == ("shared",)
    new = remove_channels(model, {"a": [4]})
    assert new.get_layer("b").filters == 5
    np.testing.assert_array_equal(_weights(new, "shared")[0], np.delete(_weights(model, "shared")[0], 4, axis=2))


def test_sequential_models_are_pruned_as_graphs_and_stay_sequential():
    model = keras.Sequential([
        keras.Input((6, 6, 2)), layers.Conv2D(4, 3, name="conv"), layers.BatchNormalization(name="bn"),
        layers.ReLU(), layers.Flatten(), layers.Dense(5, name="fc"), layers.Dense(2, name="logits"),
    ])
    kernel, bias = _weights(model, "conv")
    kernel[..., 2], bias[2] = 0.0, 0.0  # channel 2 of conv is silent after BN and ReLU
    model.get_layer("conv").set_weights([kernel, bias])
    gamma, beta, mean, variance = _weights(model, "bn")
    beta[2], mean[2] = 0.0, 0.0
    model.get_layer("bn").set_weights([gamma, beta, mean, variance])
    kernel, bias = _weights(model, "logits")
    kernel[0] = 0.0  # and channel 0 of fc is not read
    model.get_layer("logits").set_weights([kernel, bias])
    assert [g.producers for g in dependency_groups(model)] == [("conv",), ("fc",), ("logits",)]
    new = remove_channels(model, {"conv": [2], "fc": [0]})
    assert isinstance(new, keras.Sequential)
    x = np.random.rand(3, 6, 6, 2).astype("float32")
    np.testing.assert_allclose(new.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=1e-5)
    # 3 conv filters of 3x3x2 (+ bias), their BN, 4 units reading 4x4 positions x 3 channels, 2 logits.
    assert new.count_params() == (3 * 3 * 2 * 3 + 3) + 4 * 3 + (4 * 4 * 3 * 4 + 4) + (4 * 2 + 2)


def test_wrapped_models_are_stripped_first():
    model = ts.models.lenet5_caffe((16, 16, 1))
    pruned = ts.prune_low_magnitude(model, ts.schedules.ConstantSparsity(0.5, begin_step=1))
    pruned(np.random.rand(2, 16, 16, 1).astype("float32"), training=True)  # sets the masks
    assert [g.producers for g in dependency_groups(pruned)] == [("conv1",), ("conv2",), ("fc1",), ("logits",)]
    new = remove_channels(pruned, {"conv2": [0, 1]})
    assert not any(isinstance(layer, ParametrizedWrapper) for layer in new.layers)
    # The masked kernels, not the stored ones, with the removed channels gone.
    conv1 = keras.ops.convert_to_numpy(pruned.get_layer("prune_low_magnitude_conv1").effective_weights()["kernel"])
    conv2 = keras.ops.convert_to_numpy(pruned.get_layer("prune_low_magnitude_conv2").effective_weights()["kernel"])
    np.testing.assert_array_equal(_weights(new, "conv1")[0], conv1)
    np.testing.assert_array_equal(_weights(new, "conv2")[0], conv2[..., 2:])
    assert np.sum(conv1 == 0) == round(0.5 * conv1.size)


def test_bad_arguments_raise_clear_errors():
    model = _residual_model()
    with pytest.raises(TypeError, match="`channels` must be a mapping"):
        remove_channels(model, [("stem", [0])])
    with pytest.raises(ValueError, match="'nope', which is not a layer"):
        remove_channels(model, {"nope": [0]})
    with pytest.raises(ValueError, match="'stem_bn', which is a layer of the model but not a producer"):
        remove_channels(model, {"stem_bn": [0]})
    with pytest.raises(ValueError, match=r"channels \[8\] for 'stem', which has 8 output channels"):
        remove_channels(model, {"stem": [8]})
    with pytest.raises(ValueError, match="repeats a channel"):
        remove_channels(model, {"stem": [1, 1]})
    with pytest.raises(TypeError, match="integer channel indices"):
        remove_channels(model, {"stem": [0.5]})
    with pytest.raises(TypeError, match="sequence of channel indices"):
        remove_channels(model, {"stem": 3})
    with pytest.raises(ValueError, match="every output channel of Conv2D 'out'"):
        remove_channels(model, {"out": list(range(5))})
    with pytest.raises(TypeError, match="keras.Model"):
        remove_channels(layers.Dense(3), {})
    with pytest.raises(ValueError, match="not built"):
        dependency_groups(keras.Sequential([layers.Dense(3)]))
    with pytest.raises(ValueError, match="group's producers"):
        _group_of(model, "stem").indices("out")


def test_subclassed_models_have_no_graph():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match="subclassed model"):
        dependency_groups(net)


def test_bad_clusters_raise_clear_errors():
    model = _residual_model()
    with pytest.raises(TypeError, match="`clusters` must be a mapping"):
        merge_channels(model, [[0, 1]])
    with pytest.raises(TypeError, match="list of clusters"):
        merge_channels(model, {"stem": 3})
    with pytest.raises(TypeError, match="sequences of channel indices"):
        merge_channels(model, {"stem": [0, 1]})
    with pytest.raises(ValueError, match="non-empty"):
        merge_channels(model, {"stem": [[]]})
    with pytest.raises(ValueError, match="repeats a channel"):
        merge_channels(model, {"stem": [[0, 1], [1, 2]]})
    with pytest.raises(ValueError, match="another cluster merges"):
        merge_channels(model, {"stem": [[0, 1]], "block": [[2, 1]]})
    with pytest.raises(ValueError, match="merged away by another cluster"):
        merge_channels(model, {"stem": [[0, 1]], "block": [[1, 2]]})
