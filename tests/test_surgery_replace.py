"""Replacing layers (implants) and dropping residual blocks."""

import keras
import numpy as np
import pytest

import tfsparse as ts
from tfsparse.surgery import copy_layer, remove_blocks, remove_channels, replace_layer


def _x(model, seed=0):
    return np.random.default_rng(seed).uniform(size=(2, *model.input_shape[1:])).astype("float32")


def _logits(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _implant(conv):
    """The kept convolution plus a parallel zero-initialized 1x1 convolution."""
    kept = copy_layer(conv)
    cheap = keras.layers.Conv2D(conv.filters, 1, strides=conv.strides, padding="same", use_bias=False,
                                kernel_initializer="zeros", name=f"{conv.name}_implant")
    return lambda x: keras.layers.Add(name=f"{conv.name}_sum")([kept(x), cheap(x)])


def test_an_implant_keeps_the_function_and_adds_its_parameters():
    model = ts.models.resnet20((8, 8, 3))
    x = _x(model)
    new = replace_layer(model, "stage2_block1_conv1", _implant)
    np.testing.assert_array_equal(_logits(new, x), _logits(model, x))
    assert new.count_params() == model.count_params() + 16 * 32
    assert isinstance(new.get_layer("stage2_block1_conv1_sum"), keras.layers.Add)
    assert new.get_layer("stage2_block1_conv1_implant").strides == (2, 2)
    # The new model is an ordinary graph: its channels can be removed in turn.
    groups = ts.surgery.dependency_groups(new)
    assert any(g.producers == ("stage2_block1_conv1", "stage2_block1_conv1_implant") for g in groups)
    smaller = remove_channels(new, {"stage2_block1_conv1": [0, 1]})
    assert smaller.get_layer("stage2_block1_conv1_implant").filters == 30


def test_a_layer_can_be_replaced_by_a_layer_in_a_sequential_model():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, name="hidden"), keras.layers.Dense(2)])
    x = _x(model)
    relu = replace_layer(model, "hidden", lambda dense: keras.layers.Dense(4, activation="relu", name="hidden"))
    relu.get_layer("hidden").set_weights(model.get_layer("hidden").get_weights())
    np.testing.assert_allclose(
        _logits(relu, x), _logits(model.layers[1], np.maximum(_logits(model.layers[0], x), 0)), rtol=1e-6)


def test_replacement_errors_are_clear():
    model = ts.models.resnet20((8, 8, 3))
    with pytest.raises(ValueError, match="'nope', which is not a layer"):
        replace_layer(model, "nope", copy_layer)
    with pytest.raises(TypeError, match="`build_fn` must be callable"):
        replace_layer(model, "stem_conv", None)
    with pytest.raises(TypeError, match="must return a layer or a function"):
        replace_layer(model, "stem_conv", lambda layer: 3)
    with pytest.raises(ValueError, match=r"shapes \(None, 8, 8, 4\), where the layer returns \(None, 8, 8, 16\)"):
        replace_layer(model, "stem_conv", lambda layer: keras.layers.Conv2D(4, 3, padding="same"))


def test_removing_a_silent_block_keeps_the_logits_and_drops_its_parameters():
    model = ts.models.resnet20((8, 8, 3))
    x = _x(model)
    bn = model.get_layer("stage1_block2_bn2")
    gamma, beta, mean, variance = bn.get_weights()
    bn.set_weights([np.zeros_like(gamma), np.zeros_like(beta), mean, variance])  # the branch outputs zeros
    new = remove_blocks(model, ["stage1_block2_add"])
    np.testing.assert_array_equal(_logits(new, x), _logits(model, x))
    branch = ("conv1", "bn1", "conv2", "bn2")
    dropped = sum(model.get_layer(f"stage1_block2_{name}").count_params() for name in branch)
    assert new.count_params() == model.count_params() - dropped
    names = {layer.name for layer in new.layers}
    assert not names & {f"stage1_block2_{name}" for name in branch + ("add",)}
    assert "stage1_block2_relu2" in names


@pytest.mark.slow
def test_dropping_six_blocks_per_stage_turns_resnet56_into_resnet20():
    model = ts.models.resnet56((8, 8, 3), width=0.25)
    new = remove_blocks(model, [f"stage{s}_block{b}_add" for s in (1, 2, 3) for b in range(4, 10)])
    native = ts.models.resnet20((8, 8, 3), width=0.25)
    assert new.count_params() == native.count_params()
    def weighted(m):  # each dropped block leaves its (weightless) ReLU after the identity path
        return [(type(layer), [tuple(w.shape) for w in layer.weights]) for layer in m.layers if layer.weights]

    assert weighted(new) == weighted(native)


def test_blocks_without_identity_paths_cannot_be_dropped():
    model = ts.models.resnet20((8, 8, 3))
    with pytest.raises(ValueError, match="'stage2_block1_add' has no identity input"):
        remove_blocks(model, ["stage2_block1_add"])
    with pytest.raises(ValueError, match="'stem_conv' \\(Conv2D\\), which is not an Add"):
        remove_blocks(model, ["stem_conv"])
    with pytest.raises(TypeError, match="`merge_names` must be a list"):
        remove_blocks(model, "stage1_block2_add")
