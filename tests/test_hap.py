"""HAP: implants, the implanted model against the plainly pruned one, the parameter target."""

import importlib

import keras
import numpy as np
import pytest

import tfsparse as ts
from tfsparse.surgery import dependency_groups

layers = keras.layers


@pytest.mark.parametrize("padding, strides, dilation, size", [
    ("same", 1, 1, 6), ("same", 2, 1, 6), ("same", 2, 1, 7), ("valid", 2, 1, 7), ("valid", 1, 2, 7),
])
def test_an_implant_is_a_1x1_convolution_at_the_centre_of_each_window(padding, strides, dilation, size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, size, size, 3)).astype("float32")
    inputs = keras.Input((size, size, 3))
    conv = layers.Conv2D(5, 3, strides=strides, padding=padding, dilation_rate=dilation, activation="tanh", name="c")
    model = keras.Model(inputs, conv(inputs))
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.weights])
    implanted = ts.methods.implant(model, {"c": 2})
    implant = rng.normal(size=(1, 1, 3, 2)).astype("float32")
    implanted.get_layer("c_implant").kernel.assign(implant)
    # The same layer as a Conv2D: the implanted channels' 3x3 filters hold only their centre tap.
    kernel, bias = conv.get_weights()
    kernel[..., 3:] = 0.0
    kernel[1, 1, :, 3:] = implant[0, 0]
    bias[3:] = 0.0
    conv.set_weights([kernel, bias])
    np.testing.assert_allclose(implanted(x), model(x), rtol=1e-5, atol=1e-6)


def test_implant_checks_the_layer_and_the_count():
    model = _small()
    with pytest.raises(ValueError, match=r"'logits' \(Dense\), which cannot take an implant"):
        ts.methods.implant(model, {"logits": 1})
    with pytest.raises(ValueError, match=r"asks 16 implanted channels of 'conv1', which has 16 filters"):
        ts.methods.implant(model, {"conv1": 16})


def _small(batch_norm=False):
    """conv1 (16, relu) feeds conv2 (3x3) and conv3 (1x1), added (32): two groups, then logits."""
    inputs = keras.Input((8, 8, 1))
    h = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    a = layers.Conv2D(32, 3, padding="same", name="conv2")(h)
    b = layers.Conv2D(32, 1, name="conv3")(h)
    if batch_norm:
        a, b = layers.BatchNormalization(name="bn2")(a), layers.BatchNormalization(name="bn3")(b)
    h = layers.GlobalAveragePooling2D()(layers.ReLU()(layers.Add()([a, b])))
    model = keras.Model(inputs, layers.Dense(10, name="logits")(h))
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32") for w in model.weights])
    if batch_norm:
        for name in ("bn2", "bn3"):
            variance = model.get_layer(name).moving_variance
            variance.assign(np.abs(variance.numpy()) + 0.5)
    return model


def _digits(count=64):
    x, y = next(iter(ts.data.load("digits", "train", batch_size=count, shuffle=False)))
    return x.numpy(), y.numpy()


def test_implanted_model_starts_as_the_plainly_pruned_model():
    model = _small()
    first, second = [g for g in dependency_groups(model) if g.prunable]
    plain = ts.surgery.remove_channels(model, {first: [13, 14, 15], second: [28, 29, 30, 31]})
    result = ts.methods.implant(model, {"conv1": 3, "conv2": 4, "conv3": 4})
    assert [result.get_layer(n).filters for n in ("conv1", "conv2", "conv3")] == [13, 28, 28]
    x, _ = _digits()
    np.testing.assert_allclose(result(x), plain(x), rtol=1e-5, atol=1e-5)
    # Only the k x k filters shrink: the implanted model is between the plain one and the original.
    assert plain.count_params() < result.count_params() < model.count_params()


def test_channels_permuted_alike_in_every_layer_keep_the_function():
    model = _small(batch_norm=True)
    groups = [g for g in dependency_groups(model) if g.prunable]
    rng = np.random.default_rng(6)
    orders = {i: rng.permutation(g.size).tolist() for i, g in enumerate(groups)}
    moved = importlib.import_module("tfsparse.methods.hap")._permuted(model, groups, orders)
    x, _ = _digits()
    np.testing.assert_allclose(moved(x), model(x), rtol=1e-5, atol=1e-5)
    for name, index in (("conv1", 0), ("conv2", 1), ("bn3", 1)):  # new channel j is old channel order[j]
        old, new = (m.get_layer(name).weights[-1].numpy() for m in (model, moved))
        np.testing.assert_array_equal(new, old[orders[index]])


def _largest_channel(model, target):
    """The largest fraction of `target` one channel of a prunable group holds."""
    groups = [g for g in dependency_groups(model) if g.prunable]
    cost = ts.surgery.RemovalCost(model, groups)
    position, whole = (0, cost.parameters) if target == "params" else (1, cost.flops)
    return max(cost.saved({i: [c]})[position] for i, g in enumerate(groups) for c in range(g.size)) / whole


@pytest.mark.parametrize("target, per", [("params", "channel"), ("flops", "channel"), ("params", "layer")])
def test_hap_removes_the_requested_fraction_implants_counted_within_one_channel(target, per):
    model = _small(batch_norm=True)
    x, y = _digits()
    reports = []
    small = ts.hap(model, 0.5, (x, y), implant_fraction=0.25, samples=2, target=target, seed=1, per=per, verbose=0,
                   print_fn=reports.append)
    assert any(layer.name.endswith("_implant") for layer in small.layers)
    key = "parameters" if target == "params" else "flops"
    before, after = (ts.summary(m, print_fn=None).total[key] for m in (model, small))
    reached = 1 - after / before
    assert 0.5 <= reached <= 0.5 + _largest_channel(model, target)
    assert f"{reached:.2%} of {target}" in reports[0]


def test_hap_arguments_are_checked():
    model = _small()
    with pytest.raises(ValueError, match=r"`implant_fraction` must be a number in \[0, 1\], received: 1.5"):
        ts.hap(model, 0.5, _digits(), implant_fraction=1.5)
    with pytest.raises(ValueError, match=r"`target` must be one of \('channels', 'params', 'flops'\)"):
        ts.hap(model, 0.5, _digits(), target="bytes")
    with pytest.raises(ValueError, match="`data` is required by importance 'hessian'"):
        ts.hap(model, 0.5, None)
    with pytest.raises(ValueError, match="`per` must be 'channel' or 'layer', received: 'block'"):
        ts.hap(model, 0.5, _digits(), per="block")


@pytest.mark.slow
def test_hap_model_fine_tunes_its_implants_saves_loads_and_converts_to_tflite(tmp_path):
    model = _small(batch_norm=True)
    for name in ("bn2", "bn3"):  # as after training: BatchNormalization offsets lift some channels above zero
        model.get_layer(name).beta.assign(np.random.default_rng(4).uniform(-0.1, 0.3, size=32).astype("float32"))
    x, y = _digits(128)
    small = ts.hap(model, 0.5, (x[:64], y[:64]), implant_fraction=0.3, samples=2, seed=2, verbose=0, print_fn=None)
    assert {layer.name for layer in small.layers} >= {"conv2_implant", "conv3_implant"}
    small.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = small.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # The implants learn through the BatchNormalization after them (where its offset is positive).
    assert all(np.any(small.get_layer(name + "_implant").kernel.numpy() != 0) for name in ("conv2", "conv3"))

    path = tmp_path / "hap.keras"
    small.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), small.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    report = ts.export.tflite(small, str(tmp_path / "hap.tflite"), sparse=False, sample_inputs=x[:4])
    assert report.max_abs_diff < 1e-4
