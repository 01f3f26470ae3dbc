"""Surgery is exact: removing silent channels or merging identical ones keeps the logits.

The channels are made silent (or identical) by editing weights only where
measurement says so: the producers' output slices named by the dependency
groups, then, layer after layer, the BatchNormalization and depthwise
entries whose inputs are measured to be zero (or identical) on a batch.
Nothing here relies on the surgery's own channel positions.
"""

import keras
import numpy as np
import pytest

import tfsparse as ts
from tfsparse.surgery import dependency_groups, merge_channels, remove_channels

TOLERANCE = 1e-5
_FOLLOWERS = (keras.layers.BatchNormalization, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _calibrate_batch_norm(model, x, rng):
    """Per-channel BN statistics measured on `x`, and random gamma and beta.

    Every channel has its own statistics, so a misplaced one shows in the
    logits. The variances get 1 added: channels that are nearly constant on
    a small batch would otherwise be scaled up a thousandfold, and float32
    rounding with them.
    """
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0  # one training call sets the moving statistics to the batch's
    model(x, training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
        (n,) = layer.moving_variance.shape
        if layer.gamma is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, n))
        if layer.beta is not None:
            layer.beta.assign(rng.normal(0.0, 0.1, n))
        layer.moving_variance.assign(layer.moving_variance + 1.0)


def _edit_outputs(layer, edit):
    """Applies `edit(array)` to the output-channel axis (last) of kernel and bias."""
    names = {w.name for w in layer.weights}
    kernel = "pointwise_kernel" if "pointwise_kernel" in names else "kernel"
    for weight in layer.weights:
        if weight.name in (kernel, "bias"):
            array = _numpy(weight).copy()
            edit(array)
            weight.assign(array)


def _columns(array):
    """The channel columns of an activation, over batch and spatial positions."""
    return array.reshape(-1, array.shape[-1]).T


def _propagate(model, x, fix):
    """Calls `fix(layer, columns)` on BN and depthwise layers until nothing changes.

    Returns the logits of the settled model.
    """
    layers = [layer for layer in model.layers if isinstance(layer, _FOLLOWERS)]
    probe = keras.Model(model.input, [model.output] + [layer.input for layer in layers])
    for _ in range(8):
        logits, *inputs = keras.tree.flatten(probe(x, training=False))
        if not any([fix(layer, _columns(_numpy(a))) for layer, a in zip(layers, inputs)]):
            return _numpy(logits)
    raise AssertionError("BN/depthwise edits did not settle")


def _zero_shift(layer, columns):
    """Makes channels that receive only zeros output zeros."""
    dead = np.all(columns == 0, axis=1)
    weights = layer.get_weights()
    if isinstance(layer, keras.layers.BatchNormalization):
        shifts = [i for i, w in enumerate(layer.weights) if w.name in ("beta", "moving_mean")]
    elif isinstance(layer, keras.layers.DepthwiseConv2D) and layer.use_bias:
        shifts, dead = [1], np.repeat(dead, layer.depth_multiplier)
    else:
        return False
    if not any(np.any(weights[i][dead] != 0) for i in shifts):
        return False
    for i in shifts:
        weights[i][dead] = 0
    layer.set_weights(weights)
    return True


def _copy_duplicates(layer, columns):
    """Gives channels with identical inputs identical parameters."""
    _, first, inverse = np.unique(columns, axis=0, return_index=True, return_inverse=True)
    source = first[inverse.reshape(-1)]
    if np.array_equal(source, np.arange(len(source))):
        return False
    weights = layer.get_weights()
    if isinstance(layer, keras.layers.BatchNormalization):
        new = [w[source] for w in weights]
    elif isinstance(layer, keras.layers.SeparableConv2D):  # its depthwise kernel follows the input
        new = [weights[0][..., source, :], *weights[1:]]
    else:
        m = layer.depth_multiplier
        expanded = (source[:, None] * m + np.arange(m)).reshape(-1)
        new = [weights[0][..., source, :]] + ([weights[1][expanded]] if layer.use_bias else [])
    if all(np.array_equal(a, b) for a, b in zip(weights, new)):
        return False
    layer.set_weights(new)
    return True


def _free_channels(group, rng, count):
    free = [i for i in range(group.size) if i not in group.pinned]
    return [int(i) for i in rng.choice(free, min(count, len(free)), replace=False)]


def silence_and_remove(model, x, fraction=0.25, seed=0):
    """Silences a fraction of every prunable group, removes it; returns (logits before, after, new model, removed)."""
    rng = np.random.default_rng(seed)
    _calibrate_batch_norm(model, x, rng)
    request, removed = {}, {}
    for group in dependency_groups(model):
        if not group.prunable:
            continue
        chosen = _free_channels(group, rng, max(1, int(fraction * group.size)))
        if len(chosen) == group.size:
            chosen = chosen[1:]
        for index in chosen:
            name, channel = group.channels[index][0]
            request.setdefault(name, []).append(channel)
            for producer, c in group.channels[index]:
                removed.setdefault(producer, []).append(c)
    for producer, channels in removed.items():
        _edit_outputs(model.get_layer(producer), lambda a, c=channels: a.__setitem__((..., c), 0))
    before = _propagate(model, x, _zero_shift)
    new = remove_channels(model, request)
    return before, _numpy(new(x, training=False)), new, removed


def _assert_narrower(model, new, removed):
    for producer, channels in removed.items():
        assert new.get_layer(producer).output.shape[-1] == model.get_layer(producer).output.shape[-1] - len(channels)
    assert new.count_params() < model.count_params()
    flops = ts.summary(model, print_fn=None).total["flops"]
    assert ts.summary(new, print_fn=None).total["flops"] < flops


def _images(shape, seed=1, scale=1.0):
    return (np.random.default_rng(seed).uniform(size=(2, *shape)) * scale).astype("float32")


def mixed_model():
    """Every coupling rule in one small model.

    SeparableConv and Conv outputs are subtracted; a depthwise convolution
    with multiplier 2 and a squeeze-and-excitation gate (GlobalAveragePooling,
    a Reshape that keeps the channel axis, Multiply) follow; a Maximum pair
    and the stem are concatenated with it before Flatten and two Dense layers.
    """
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    a = layers.ReLU()(layers.BatchNormalization(name="a_bn")(layers.Conv2D(8, 3, padding="same", name="a")(inputs)))
    b = layers.SeparableConv2D(8, 3, depth_multiplier=2, padding="same", name="b")(a)
    c = layers.Conv2D(8, 1, name="c")(a)
    s = layers.BatchNormalization(name="s_bn")(layers.Subtract()([b, c]))
    d = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="d")(s)
    d = layers.Activation("swish")(layers.BatchNormalization(name="d_bn")(d))
    se = layers.Reshape((1, 1, 16))(layers.GlobalAveragePooling2D()(d))
    se = layers.Conv2D(4, 1, activation="relu", name="se_reduce")(se)
    se = layers.Conv2D(16, 1, activation="sigmoid", name="se_expand")(se)
    d = layers.Multiply()([d, se])
    e = layers.Maximum()([layers.Conv2D(8, 1, name="e1")(a), layers.Conv2D(8, 1, name="e2")(a)])
    x = layers.Flatten()(layers.MaxPooling2D(4)(layers.Concatenate()([d, e, a])))
    x = layers.Dense(12, activation="relu", name="fc")(x)
    return keras.Model(inputs, layers.Dense(5, name="logits")(x), name="mixed")


REFERENCE_MODELS = {
    "mixed": mixed_model,
    "lenet_300_100": lambda: ts.models.lenet_300_100((12, 12, 1)),
    "lenet5_caffe": lambda: ts.models.lenet5_caffe((16, 16, 1)),
    "vgg_small": lambda: ts.models.vgg("small", (16, 16, 3)),
    "resnet20": lambda: ts.models.resnet20((16, 16, 3)),
    "resnet56": lambda: ts.models.resnet56((8, 8, 3), width=0.25),
    "mobilenet_v2_small": lambda: ts.models.mobilenet_v2_small((16, 16, 3)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFERENCE_MODELS))
def test_removing_silent_channels_keeps_reference_logits(name):
    model = REFERENCE_MODELS[name]()
    x = _images(model.input_shape[1:])
    before, after, new, removed = silence_and_remove(model, x)
    np.testing.assert_allclose(after, before, rtol=0, atol=TOLERANCE)
    _assert_narrower(model, new, removed)


_APPLICATIONS = {
    "ResNet50": lambda: keras.applications.ResNet50(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None),
    "MobileNetV2": lambda: keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classes=10, alpha=0.35, classifier_activation=None),
    "DenseNet121": lambda: keras.applications.DenseNet121(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None),
    "EfficientNetB0": lambda: keras.applications.EfficientNetB0(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_APPLICATIONS))
def test_removing_silent_channels_keeps_application_logits(name):
    model = _APPLICATIONS[name]()
    x = _images((32, 32, 3), scale=255.0)
    before, after, new, removed = silence_and_remove(model, x)
    np.testing.assert_allclose(after, before, rtol=0, atol=TOLERANCE)
    _assert_narrower(model, new, removed)


def _by_producer(pairs):
    """`{producer: [its channels]}` of one group channel."""
    channels = {}
    for producer, channel in pairs:
        channels.setdefault(producer, []).append(channel)
    return channels


def duplicate_and_merge(model, x, seed=0):
    """Makes pairs of channels identical in every prunable group and merges them."""
    rng = np.random.default_rng(seed)
    _calibrate_batch_norm(model, x, rng)
    clusters, copies = {}, {}
    for group in dependency_groups(model):
        chosen = _free_channels(group, rng, 2 * max(1, group.size // 8))
        for kept, merged in zip(chosen[::2], chosen[1::2]):
            sources, targets = _by_producer(group.channels[kept]), _by_producer(group.channels[merged])
            name = group.channels[kept][0][0]
            clusters.setdefault(name, []).append([sources[name][0], targets[name][0]])
            for producer, channels in targets.items():
                copies.setdefault(producer, []).extend(zip(sources[producer], channels))
    for producer, pairs in copies.items():
        source, target = (list(t) for t in zip(*pairs))
        _edit_outputs(model.get_layer(producer), lambda a, s=source, t=target: a.__setitem__((..., t), a[..., s]))
    before = _propagate(model, x, _copy_duplicates)
    new = merge_channels(model, clusters)
    return before, _numpy(new(x, training=False)), new, copies


MERGE_MODELS = {
    "mixed": mixed_model,
    "lenet5_caffe": REFERENCE_MODELS["lenet5_caffe"],
    "resnet20": lambda: ts.models.resnet20((8, 8, 3)),
    "mobilenet_v2_small": lambda: ts.models.mobilenet_v2_small((8, 8, 3), width=0.5),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MERGE_MODELS))
def test_merging_identical_channels_is_exact(name):
    model = MERGE_MODELS[name]()
    x = _images(model.input_shape[1:])
    before, after, new, copies = duplicate_and_merge(model, x)
    np.testing.assert_allclose(after, before, rtol=0, atol=TOLERANCE)
    for producer, pairs in copies.items():
        assert new.get_layer(producer).output.shape[-1] == model.get_layer(producer).output.shape[-1] - len(pairs)


def test_merging_different_channels_changes_the_logits():
    """The merge test above is sensitive: without identical channels it fails."""
    model = REFERENCE_MODELS["resnet20"]()
    x = _images(model.input_shape[1:])
    before = _numpy(model(x, training=False))
    after = _numpy(merge_channels(model, {"stem_conv": [[0, 1]]})(x, training=False))
    assert np.max(np.abs(after - before)) > 100 * TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize(
    "build, width", [(ts.models.resnet20, 0.5), (ts.models.mobilenet_v2_small, 0.75)], ids=["resnet20", "mobilenet"])
def test_removing_channels_gives_the_native_narrow_model(build, width):
    """Pruning every group to a natively narrow model's widths gives its exact layer shapes, parameters and FLOPs."""
    model, native = build((16, 16, 3)), build((16, 16, 3), width=width)
    request = {}
    for group in dependency_groups(model):
        if group.prunable:
            lead = group.producers[0]
            keep = native.get_layer(lead).output.shape[-1]
            request[lead] = list(range(keep, model.get_layer(lead).output.shape[-1]))
    pruned = remove_channels(model, request)
    assert pruned.count_params() == native.count_params()
    assert ts.summary(pruned, print_fn=None).total["flops"] == ts.summary(native, print_fn=None).total["flops"]
    shapes = {layer.name: layer.output.shape for layer in native.layers[1:]}
    assert {layer.name: layer.output.shape for layer in pruned.layers[1:]} == shapes
    assert [type(layer) for layer in pruned.layers] == [type(layer) for layer in native.layers]
    # The kept channels hold the dense model's weights.
    keep = shapes["stem_conv"][-1]
    np.testing.assert_array_equal(pruned.get_layer("stem_conv").get_weights()[0],
                                  model.get_layer("stem_conv").get_weights()[0][..., :keep])
