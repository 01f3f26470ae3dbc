"""HAP: implanted convolutions, the implanted model against the plainly pruned one, the parameter target."""

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
    implanted = ts.layers.ImplantedConv2D(5, 3, [1, 3], strides=strides, padding=padding, dilation_rate=dilation,
                                          activation="tanh")
    implanted.build(x.shape)
    kernel, implant, bias = (rng.normal(size=w.shape).astype("float32") for w in implanted.weights)
    for weight, value in zip(implanted.weights, (kernel, implant, bias)):
        weight.assign(value)
    # The same layer as a Conv2D: the implanted channels' 3x3 filters hold only their centre tap.
    full = np.zeros((3, 3, 3, 5), "float32")
    full[..., [0, 2, 4]] = kernel
    full[1, 1][:, [1, 3]] = implant[0, 0]
    conv = layers.Conv2D(5, 3, strides=strides, padding=padding, dilation_rate=dilation, activation="tanh")
    conv.build(x.shape)
    conv.set_weights([full, bias])
    np.testing.assert_allclose(implanted(x), conv(x), rtol=1e-5, atol=1e-6)
    assert implanted.compute_output_shape(x.shape) == tuple(conv(x).shape)


def test_implanted_conv_round_trips_through_its_config_and_keras_files(tmp_path):
    inputs = keras.Input((6, 6, 2))
    model = keras.Model(inputs, ts.layers.ImplantedConv2D(4, 3, [0, 2], strides=2, padding="same")(inputs))
    model.set_weights([np.random.default_rng(1).normal(size=w.shape).astype("float32") for w in model.weights])
    model.save(tmp_path / "implanted.keras")
    restored = keras.saving.load_model(tmp_path / "implanted.keras")
    x = np.random.default_rng(2).normal(size=(3, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(restored(x), model(x), rtol=1e-6)
    assert restored.layers[-1].get_config() == model.layers[-1].get_config()


def test_bad_implanted_channels_are_named():
    with pytest.raises(ValueError, match=r"`implanted` must be sorted distinct channel indices below `filters`=4"):
        ts.layers.ImplantedConv2D(4, 3, [2, 1])
    with pytest.raises(ValueError, match=r"`padding` must be 'same' or 'valid', received: 'causal'"):
        ts.layers.ImplantedConv2D(4, 3, [1], padding="causal")


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
    removed, implanted = {first: [0, 3, 4], second: [1, 2, 9, 30]}, {first: [7, 9], second: [5, 6, 20]}
    plain = ts.surgery.remove_channels(model, {g: sorted(removed[g] + implanted[g]) for g in removed})
    narrower = ts.surgery.remove_channels(model, removed)
    # The implanted channels' positions once the removed ones are gone.
    positions = {g: [c - sum(r < c for r in removed[g]) for c in implanted[g]] for g in removed}
    implants = {"conv1": positions[first], "conv2": positions[second], "conv3": positions[second]}
    result = ts.methods.implant(narrower, implants)
    assert [type(result.get_layer(n)).__name__ for n in implants] == ["ImplantedConv2D"] * 3
    assert result.get_layer("conv2").implanted == (3, 4, 17)
    x, _ = _digits()
    np.testing.assert_allclose(result(x), plain(x), rtol=1e-5, atol=1e-5)
    # Only the k x k filters shrink: the implanted model is between the plain and the narrower one.
    assert plain.count_params() < result.count_params() < narrower.count_params()


def test_implant_refuses_a_layer_that_cannot_take_one():
    with pytest.raises(ValueError, match=r"'logits' \(Dense\), which cannot take an implant"):
        ts.methods.implant(_small(), {"logits": [0]})


def _largest_channel(model, target):
    """The largest fraction of `target` one channel of a prunable group holds."""
    groups = [g for g in dependency_groups(model) if g.prunable]
    cost = ts.surgery.RemovalCost(model, groups)
    position, whole = (0, cost.parameters) if target == "params" else (1, cost.flops)
    return max(cost.saved({i: [c]})[position] for i, g in enumerate(groups) for c in range(g.size)) / whole


@pytest.mark.parametrize("target", ["params", "flops"])
def test_hap_removes_the_requested_fraction_implants_counted_within_one_channel(target):
    model = _small(batch_norm=True)
    x, y = _digits()
    reports = []
    small = ts.hap(model, 0.5, (x, y), implant_fraction=0.25, samples=2, target=target, seed=1, verbose=0,
                   print_fn=reports.append)
    implanted = [layer for layer in small.layers if isinstance(layer, ts.layers.ImplantedConv2D)]
    assert implanted and all(layer.implant_kernel.shape[-1] > 0 for layer in implanted)
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


@pytest.mark.slow
def test_hap_model_fine_tunes_its_implants_saves_loads_and_converts_to_tflite(tmp_path):
    model = _small(batch_norm=True)
    for name in ("bn2", "bn3"):  # as after training: BatchNormalization offsets lift some channels above zero
        model.get_layer(name).beta.assign(np.random.default_rng(4).uniform(-0.1, 0.3, size=32).astype("float32"))
    x, y = _digits(128)
    small = ts.hap(model, 0.5, (x[:64], y[:64]), implant_fraction=0.3, samples=2, seed=2, verbose=0, print_fn=None)
    implanted = [layer for layer in small.layers if isinstance(layer, ts.layers.ImplantedConv2D)]
    assert {layer.name for layer in implanted} >= {"conv2", "conv3"}
    small.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = small.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # The implants learn through the BatchNormalization after them (where its offset is positive).
    assert all(np.any(small.get_layer(name).implant_kernel.numpy() != 0) for name in ("conv2", "conv3"))

    path = tmp_path / "hap.keras"
    small.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), small.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    report = ts.export.tflite(small, str(tmp_path / "hap.tflite"), sparse=False, sample_inputs=x[:4])
    assert report.max_abs_diff < 1e-4
