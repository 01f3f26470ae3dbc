"""Every tfsparse wrapper computes in the dtype policy of the layer it wraps."""

import keras
import numpy as np
import pytest

import tfsparse as ts
from tfsparse.layers import LayerWrapper, Masked

RNG = np.random.default_rng(0)
X, Y = RNG.normal(size=(32, 6)).astype("float32"), RNG.integers(0, 3, 32)

# Each method on a model whose output layer keeps float32 under `mixed_float16`.
METHODS = {
    "prune_low_magnitude": lambda model: ts.prune_low_magnitude(model, ts.schedules.ConstantSparsity(0.5, begin_step=1)),
    "freezenet": lambda model: ts.freezenet(model, 0.5, (X, Y), seed=0),
    "lottery_jackpot": lambda model: ts.lottery_jackpot(model, 0.5),
    "polarize": lambda model: ts.polarize(model, 0.5, steps=4),
}


def _float32_output_model():
    """Under `mixed_float16`: float16 hidden layers and a float32 output layer, the usual recipe."""
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    return keras.Model(inputs, keras.layers.Dense(3, dtype="float32", name="logits")(x))


def _trained(method):
    model = METHODS[method](_float32_output_model())
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(X, Y, batch_size=8, verbose=0)
    return model


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_float32_layer_of_a_mixed_precision_model_computes_in_float32_once_wrapped(method, mixed_precision):
    model = _trained(method)
    output = model.layers[-1]
    assert isinstance(output, LayerWrapper) and output.layer.name == "logits"
    assert output.dtype_policy.name == output.layer.dtype_policy.name == "float32"
    assert model(X).dtype == "float32"
    assert {layer.dtype_policy.name for layer in model.layers[1:-1]} == {"mixed_float16"}
    if method != "polarize":  # a gated layer also multiplies by its gates
        weights = output.effective_weights() if hasattr(output, "effective_weights") else {"kernel": output.layer.kernel}
        kernel = keras.ops.convert_to_numpy(weights["kernel"]).astype("float64")
        hidden = RNG.normal(size=(4, 8)).astype("float32")
        # In float16 the outputs would be off by about 1e-3.
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(output(hidden)), hidden @ kernel + output.layer.bias.numpy(), rtol=1e-5, atol=1e-5
        )


def test_the_policy_survives_save_and_load(mixed_precision, tmp_path):
    model = _trained("prune_low_magnitude")
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert [layer.dtype_policy.name for layer in loaded.layers] == [layer.dtype_policy.name for layer in model.layers]
    assert loaded(X).dtype == "float32"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(X)), keras.ops.convert_to_numpy(model(X)))


def test_a_saved_wrapper_policy_gives_way_to_the_layers(mixed_precision):
    layer = Masked(keras.layers.Dense(3, dtype="float32"))
    config = {**layer.get_config(), "dtype": "mixed_float16"}
    assert Masked.from_config(config).dtype_policy.name == "float32"


def test_a_dtype_other_than_the_layers_is_refused():
    with pytest.raises(ValueError, match=r"Argument `dtype` must be the wrapped layer's dtype policy, 'float32'.*'float16'"):
        Masked(keras.layers.Dense(3), dtype="float16")
    assert Masked(keras.layers.Dense(3), dtype="float32").dtype_policy.name == "float32"
    with pytest.raises(TypeError, match="Argument `layer` must be a keras.layers.Layer"):
        ts.layers.Fixed("dense")
