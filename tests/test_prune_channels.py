"""prune_channels: the least important channels go, targets are reached, the result is a plain model."""

import math
import os

import keras
import numpy as np
import pytest

import tfsparse as ts
from tfsparse.surgery import RemovalCost, dependency_groups

layers = keras.layers


def _cnn():
    """conv1 (8) -> BN -> ReLU -> conv2 (16) -> BN -> ReLU -> pool -> logits."""
    inputs = keras.Input((6, 6, 2))
    x = layers.ReLU()(layers.BatchNormalization(name="bn1")(layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)))
    x = layers.ReLU()(layers.BatchNormalization(name="bn2")(layers.Conv2D(16, 3, name="conv2")(x)))
    return keras.Model(inputs, layers.Dense(4, name="logits")(layers.GlobalAveragePooling2D()(x)))


def _images(shape, count=4):
    return np.random.default_rng(0).normal(size=(count, *shape)).astype("float32")


def _silence(model, group, channels):
    """Zeroes the producer and member slices of `channels`: they then output exactly zero."""
    for channel in channels:
        for layer, weight, axis, indices in group.slices_of(channel, roles=("producer", "member")):
            variable = next(w for w in model.get_layer(layer).weights if w.name == weight)
            array = variable.numpy()
            array[(slice(None),) * axis + (list(indices),)] = 0.0
            variable.assign(array)


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale"])
def test_zero_importance_channels_are_the_ones_removed(importance):
    model = _cnn()
    group = next(g for g in dependency_groups(model) if g.producers == ("conv1",))
    silent = [1, 4, 6]
    _silence(model, group, silent)
    x = _images((6, 6, 2))
    ratio = len(silent) / (8 + 16)  # of the channels of both groups, ranked globally
    pruned = ts.prune_channels(model, ratio, importance=importance, print_fn=None)
    assert pruned.get_layer("conv1").filters == 5
    assert pruned.get_layer("conv2").filters == 16
    kept = [c for c in range(8) if c not in silent]
    np.testing.assert_array_equal(pruned.get_layer("conv1").kernel.numpy(), model.get_layer("conv1").kernel.numpy()[..., kept])
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def _reached(model, pruned, target):
    before, after = (ts.summary(m, print_fn=None).total for m in (model, pruned))
    key = {"params": "parameters", "flops": "flops"}[target]
    return 1 - after[key] / before[key]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["params", "flops"])
def test_params_and_flops_targets_are_reached_within_one_channel(target):
    model = ts.models.resnet20(width=0.5)
    groups = [g for g in dependency_groups(model) if g.prunable]
    cost = RemovalCost(model, groups)
    position = 0 if target == "params" else 1
    whole = cost.parameters if target == "params" else cost.flops
    one_channel = max(cost.saved({i: [c]})[position] for i, g in enumerate(groups) for c in range(g.size)) / whole
    reports = []
    pruned = ts.prune_channels(model, 0.4, target=target, print_fn=reports.append)
    reached = _reached(model, pruned, target)
    assert 0.4 <= reached < 0.4 + one_channel
    name = "params" if target == "params" else "flops"
    assert f"{reached:.2%} of {name}" in reports[0]


def _widths(model):
    return {g.producers: g.size for g in dependency_groups(model) if g.prunable}


def test_channels_target_removes_the_requested_count_globally():
    model = ts.models.resnet20(width=0.5)
    before = _widths(model)
    pruned = ts.prune_channels(model, 0.3, print_fn=None)
    after = _widths(pruned)
    total = sum(before.values())
    assert sum(before.values()) - sum(after.values()) == math.ceil(0.3 * total)  # the fewest reaching 30%
    assert len(set(b - after[k] for k, b in before.items())) > 1  # global: groups lose different shares


def test_layer_scope_removes_the_same_fraction_of_every_group():
    model = ts.models.vgg()
    before = _widths(model)
    after = _widths(ts.prune_channels(model, 0.25, scope="layer", print_fn=None))
    assert after == {k: b - b // 4 for k, b in before.items()}


def test_max_layer_ratio_round_to_and_exclude_bound_every_group():
    model = ts.models.vgg()
    before = _widths(model)
    first = next(iter(before))[0]
    after = _widths(ts.prune_channels(model, 0.6, max_layer_ratio=0.75, round_to=8, exclude=[first], print_fn=None))
    assert after[(first,)] == before[(first,)]
    for key, width in after.items():
        assert width % 8 == 0 and width >= before[key] * 0.25


def test_classifier_outputs_are_never_removed():
    model = ts.models.lenet_300_100()
    pruned = ts.prune_channels(model, 0.5, target="params", print_fn=None)
    assert pruned.output_shape == model.output_shape
    assert pruned.get_layer(model.layers[-1].name).units == 10


def test_taylor_and_a_criterion_object_prune_through_the_same_call():
    model = _cnn()
    x, y = _images((6, 6, 2), 16), np.arange(16) % 4
    pruned = ts.prune_channels(model, 0.25, importance=ts.scoring.Taylor(batches=2), print_fn=None,
                               data=[(x[:8], y[:8]), (x[8:], y[8:])])
    assert pruned.get_layer("conv1").filters + pruned.get_layer("conv2").filters == 24 - 6


@pytest.mark.slow
@pytest.mark.parametrize("build", [ts.models.resnet20, ts.models.vgg, ts.models.lenet5_caffe,
                                   ts.models.mobilenet_v2_small])
def test_reference_models_prune_to_working_narrower_models(build):
    model = build()
    pruned = ts.prune_channels(model, 0.5, target="flops", print_fn=None)
    assert _reached(model, pruned, "flops") >= 0.5
    assert pruned.predict(_images(model.input_shape[1:], 2), verbose=0).shape == (2, 10)


def test_pruned_model_trains_saves_loads_and_exports_to_tflite(tmp_path):
    pruned = ts.prune_channels(_cnn(), 0.5, print_fn=None)
    x, y = _images((6, 6, 2), 16), np.arange(16) % 4
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert np.isfinite(pruned.fit(x, y, batch_size=8, epochs=1, verbose=0).history["loss"][0])
    path = os.path.join(tmp_path, "pruned.keras")
    pruned.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path).predict(x, verbose=0), pruned.predict(x, verbose=0))
    report = ts.export.tflite(pruned, os.path.join(tmp_path, "pruned.tflite"), sparse=False, sample_inputs=x[:4])
    assert report.max_abs_diff < 1e-4


@pytest.mark.parametrize("kwargs, match", [
    ({"ratio": 1.0}, "`ratio`"),
    ({"ratio": -0.1}, "`ratio`"),
    ({"importance": "l3"}, "`importance`"),
    ({"scope": "network"}, "`scope`"),
    ({"target": "bytes"}, "`target`"),
    ({"round_to": 0}, "`round_to`"),
    ({"exclude": ["nope"]}, "`exclude`"),
    ({"max_layer_ratio": 1.0}, "`max_layer_ratio`"),
    ({"ratio": 0.9, "target": "flops", "max_layer_ratio": 0.5}, "`ratio`=0.9 of flops cannot be reached.*`max_layer_ratio`"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ts.prune_channels(_cnn(), **{"ratio": 0.5, "print_fn": None, **kwargs})


def test_bn_scale_on_a_model_without_batch_norm_names_the_argument():
    with pytest.raises(ValueError, match="`importance`='bn_scale'"):
        ts.prune_channels(ts.models.lenet_300_100(), 0.5, importance="bn_scale", print_fn=None)


_APPLICATIONS = {
    "ResNet50": lambda: keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10),
    "MobileNetV2": lambda: keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10, alpha=0.35),
    "DenseNet121": lambda: keras.applications.DenseNet121(weights=None, input_shape=(32, 32, 3), classes=10),
    "EfficientNetB0": lambda: keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=10),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_APPLICATIONS))
def test_keras_applications_prune_to_the_requested_parameters(name):
    model = _APPLICATIONS[name]()
    pruned = ts.prune_channels(model, 0.3, target="params", print_fn=None)
    assert _reached(model, pruned, "params") >= 0.3
    assert pruned.predict(_images((32, 32, 3), 2), verbose=0).shape == (2, 10)
