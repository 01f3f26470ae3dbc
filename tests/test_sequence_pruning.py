"""Recurrent and attention layers, and custom layers, prune, strip, save and export as TFMOT's do."""

import keras
import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

import tfsparse as ts
from tfsparse.layers import Masked
from tfsparse.walk import is_wrapper

L = keras.layers
SPARSITY = 0.75
STEPS, TIME, FEATURES = 3, 5, 4


def _mha(x):
    return L.MultiHeadAttention(2, 3, name="attention")(x, x)


def _lstm(x):
    return L.LSTM(3, dropout=0.25, name="rnn")(x)


# One tiny layer of each type; the registry names each prunable weight below the layer.
SEQUENCE_LAYERS = [
    pytest.param(lambda x: L.SimpleRNN(4, name="rnn")(x),
                 ["simple_rnn_cell/kernel", "simple_rnn_cell/recurrent_kernel"], id="simple_rnn"),
    pytest.param(lambda x: L.GRU(3, return_sequences=True, name="rnn")(x),
                 ["gru_cell/kernel", "gru_cell/recurrent_kernel"], id="gru"),
    pytest.param(_lstm, ["lstm_cell/kernel", "lstm_cell/recurrent_kernel"], id="lstm"),
    pytest.param(lambda x: L.RNN(L.GRUCell(3, name="cell"), name="rnn")(x),
                 ["cell/kernel", "cell/recurrent_kernel"], id="rnn_cell"),
    pytest.param(
        lambda x: L.RNN(L.StackedRNNCells([L.LSTMCell(3, name="a"), L.SimpleRNNCell(2, name="b")], name="s"),
                        name="rnn")(x),
        ["s/a/kernel", "s/a/recurrent_kernel", "s/b/kernel", "s/b/recurrent_kernel"], id="stacked_cells",
    ),
    pytest.param(
        lambda x: L.Bidirectional(L.LSTM(2, name="lstm"), name="rnn")(x),
        ["forward_lstm/lstm_cell/kernel", "forward_lstm/lstm_cell/recurrent_kernel",
         "backward_lstm/lstm_cell/kernel", "backward_lstm/lstm_cell/recurrent_kernel"],
        id="bidirectional", marks=pytest.mark.slow,
    ),
    pytest.param(_mha, ["query/kernel", "key/kernel", "value/kernel", "attention_output/kernel"],
                 id="multi_head_attention"),
]


def _model(block):
    inputs = keras.Input((TIME, FEATURES))
    x = block(inputs)
    if len(x.shape) == 3:
        x = L.Flatten()(x)
    return keras.Model(inputs, L.Dense(2, name="head")(x))


def _data(batches=STEPS):
    rng = np.random.default_rng(0)
    return rng.normal(size=(4 * batches, TIME, FEATURES)).astype("float32"), rng.normal(size=(4 * batches, 2))


def _fit(model, batches=STEPS):
    x, y = _data(batches)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    return x


def _wrapper_of(model, name):
    """The `Masked` layer of `model` around the layer called `name`."""
    return next(layer for layer in model.layers if isinstance(layer, Masked) and layer.layer.name == name)


def _numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


def _expected_zeros(size, sparsity=SPARSITY):
    return min(round(sparsity * size), size - 1)


@pytest.mark.parametrize("block, names", SEQUENCE_LAYERS)
def test_sequence_layer_prunes_trains_strips_and_reloads(block, names, tmp_path):
    keras.utils.set_random_seed(0)
    # TFMOT's schedule object, used as it is: the masks are set at the first batch only.
    schedule = tfmot.sparsity.keras.ConstantSparsity(SPARSITY, begin_step=1, frequency=100)
    pruned = ts.prune_low_magnitude(_model(block), schedule)
    wrapper = next(layer for layer in pruned.layers if isinstance(layer, Masked) and layer.layer.name != "head")
    assert list(wrapper.weight_names) == names
    before = {name: _numpy(w) for name, w in zip(names, wrapper.prunable_weights)}
    x = _fit(pruned)

    kept_changed = []
    for name, stored, mask in zip(names, wrapper.prunable_weights, wrapper.masks):
        mask, stored = _numpy(mask), _numpy(stored)
        assert np.sum(mask == 0) == _expected_zeros(mask.size), name
        kept_changed.append(not np.array_equal(stored[mask == 1], before[name][mask == 1]))
    assert any(kept_changed)
    effective = wrapper.effective_weights()
    assert all(np.sum(_numpy(effective[n]) == 0) >= _expected_zeros(_numpy(effective[n]).size) for n in names)

    plain = ts.strip(pruned)
    assert not any(is_wrapper(layer) for layer in plain.layers)
    np.testing.assert_allclose(_numpy(plain(x)), _numpy(pruned(x)), atol=1e-6)
    stripped = ts.registry.named_weights(plain.get_layer(wrapper.layer.name))
    for name, weight in stripped:
        if name in names:
            np.testing.assert_array_equal(_numpy(weight), _numpy(effective[name]))

    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(_numpy(loaded(x)), _numpy(pruned(x)), atol=1e-6)
    reloaded = loaded.get_layer(wrapper.name)
    for mask, again in zip(wrapper.masks, reloaded.masks):
        np.testing.assert_array_equal(_numpy(again), _numpy(mask))


def test_an_rnn_cell_dropout_draws_new_masks_at_each_step():
    pruned = ts.prune_low_magnitude(_model(_lstm), ts.schedules.ConstantSparsity(0.5, 1))
    seed = _wrapper_of(pruned, "rnn").layer.cell.seed_generator.state
    start = _numpy(seed).copy()
    _fit(pruned)
    assert not np.array_equal(_numpy(seed), start)


def test_global_scope_and_summary_cover_sequence_layers():
    inputs = keras.Input((TIME, FEATURES))
    x = L.LSTM(3, return_sequences=True, name="lstm")(inputs)
    x = L.MultiHeadAttention(2, 3, name="attention")(x, x)
    model = keras.Model(inputs, L.Dense(2, name="head")(L.Flatten()(x)))
    pruned = ts.prune_low_magnitude(model, ts.schedules.ConstantSparsity(SPARSITY, 1), scope="global")
    assert [layer.layer.name for layer in pruned.layers if isinstance(layer, Masked)] == ["lstm", "attention", "head"]
    _fit(pruned, batches=1)
    masks = [_numpy(m) for layer in pruned.layers if isinstance(layer, Masked) for m in layer.masks]
    assert len(masks) == 2 + 4 + 1
    total = sum(m.size for m in masks)
    assert sum(int(np.sum(m == 0)) for m in masks) == round(SPARSITY * total)

    info = ts.summary(pruned, print_fn=None)
    rows = {row["layer"]: row for row in info.rows}
    assert rows[_wrapper_of(pruned, "lstm").name]["type"] == "Masked(LSTM)"
    attention = _wrapper_of(pruned, "attention")
    assert rows[attention.name]["parameters"] == attention.layer.count_params()
    assert info.total["parameters"] == model.count_params()
    zeros = sum(int(np.sum(m == 0)) for m in masks)
    assert info.total["parameters"] - info.total["nonzeros"] >= zeros


def test_padding_masks_reach_the_wrapped_layers():
    tokens = keras.Input((TIME,))
    x = L.Embedding(10, 4, mask_zero=True)(tokens)
    x = L.LSTM(3, return_sequences=True, name="lstm")(x)
    x = L.MultiHeadAttention(2, 3, name="attention")(x, x)
    model = keras.Model(tokens, L.LSTM(2, name="last")(x))
    pruned = ts.prune_low_magnitude(model, ts.schedules.ConstantSparsity(0.5, begin_step=10))
    padded = np.array([[3, 1, 4, 0, 0], [5, 9, 2, 6, 0]], "float32")
    expected = _numpy(model(padded))
    assert not np.allclose(expected, _numpy(model(np.where(padded == 0, 7, padded))))
    np.testing.assert_allclose(_numpy(pruned(padded)), expected, atol=1e-6)


def test_an_rnn_with_a_cell_tfsparse_cannot_prune_is_refused():
    class Cell(L.Layer):
        state_size = 2

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 2))

        def call(self, inputs, states):
            output = inputs @ self.kernel + states[0]
            return output, [output]

    rnn = L.RNN(Cell(name="plain_cell"), name="custom_rnn")
    assert not ts.registry.is_prunable(rnn)
    with pytest.raises(TypeError, match=r"'custom_rnn' of type RNN cannot be pruned"):
        Masked(rnn)


# Custom layers: TFMOT's PrunableLayer protocol, subclasses, layers without a complete config.


class Scale(L.Layer):
    """Two weights; `get_prunable_weights` names one (duck typing, no base class)."""

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], 3))
        self.scale = self.add_weight(name="scale", shape=(3,), initializer="ones")

    def call(self, inputs):
        return (inputs @ self.kernel) * self.scale

    def get_prunable_weights(self):
        return [self.kernel]


class TfmotScale(Scale, tfmot.sparsity.keras.PrunableLayer):
    """The same layer declared with TFMOT's PrunableLayer base class."""


class MyDense(L.Dense):
    """A subclass of a supported layer, which tfsparse must not refuse."""

    def call(self, inputs):
        return super().call(inputs) * 2.0


class Halve(L.Layer):
    """A weightless layer whose `get_config` lacks its argument: it cannot be rebuilt from its config."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs):
        return inputs * self.factor


@pytest.mark.parametrize("cls", [Scale, TfmotScale])
def test_a_layer_with_get_prunable_weights_prunes_exactly_those(cls):
    layer = cls(name="custom")
    layer.build((None, 8))
    scale = _numpy(layer.scale).copy()
    wrapper = ts.prune_low_magnitude(layer, ts.schedules.ConstantSparsity(SPARSITY, 1))
    assert wrapper.weight_names == ("kernel",)
    wrapper(np.ones((2, 8), "float32"), training=True)
    assert int(np.sum(_numpy(wrapper.masks[0]) == 0)) == round(SPARSITY * 24)
    np.testing.assert_array_equal(_numpy(layer.scale), scale)


def test_an_rnn_with_a_get_prunable_weights_cell_is_pruned():
    class Cell(L.Layer):
        state_size = 2

        def build(self, input_shape):
            self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], 2))
            self.recurrent = self.add_weight(name="recurrent", shape=(2, 2))

        def call(self, inputs, states):
            output = inputs @ self.kernel + states[0] @ self.recurrent
            return output, [output]

        def get_prunable_weights(self):
            return [self.recurrent]

    wrapper = Masked(L.RNN(Cell(name="cell")), pruning_schedule=ts.schedules.ConstantSparsity(0.5, 1))
    wrapper(np.ones((2, TIME, FEATURES), "float32"), training=True)
    assert wrapper.weight_names == ("cell/recurrent",)
    assert int(np.sum(_numpy(wrapper.masks[0]) == 0)) == 2


def test_get_prunable_weights_must_return_weights_of_the_layer():
    class Stranger(Scale):
        def get_prunable_weights(self):
            return [keras.Variable(np.ones(3))]

    layer = Stranger(name="stranger")
    with pytest.raises(ValueError, match=r"'stranger'.*needs the layer built"):
        ts.registry.prunable_weight_names(layer)
    layer.build((None, 2))
    with pytest.raises(ValueError, match=r"must return weights of the layer.*which is not one of them"):
        ts.registry.prunable_weight_names(layer)


def test_a_subclass_of_a_supported_layer_is_pruned_but_keeps_no_channel_rule():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, L.Dense(2)(MyDense(8, name="mine")(inputs)))
    pruned = ts.prune_low_magnitude(model, ts.schedules.ConstantSparsity(SPARSITY, 1))
    mine = _wrapper_of(pruned, "mine")
    assert isinstance(mine.layer, MyDense)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    pruned(x, training=True)
    assert int(np.sum(_numpy(mine.masks[0]) == 0)) == round(SPARSITY * 48)
    plain = ts.strip(pruned)
    np.testing.assert_allclose(_numpy(plain(x)), _numpy(pruned(x)), atol=1e-6)
    # Surgery rules describe a computation: they stay with the exact class.
    assert ts.registry.spec_of(MyDense(2)) is None


def test_layers_that_need_no_change_are_kept_as_they_are():
    inputs = keras.Input((6,))
    halve = Halve(0.5, name="halve")
    model = keras.Model(inputs, L.Dense(2, name="head")(halve(L.Dense(4, name="hidden")(inputs))))
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    pruned = ts.prune_low_magnitude(model, ts.schedules.ConstantSparsity(0.5, 1))
    assert pruned.get_layer("halve") is halve
    pruned(x, training=True)
    plain = ts.strip(pruned)
    assert plain.get_layer("halve") is halve
    np.testing.assert_allclose(_numpy(plain(x)), _numpy(pruned(x)), atol=1e-6)


def _transformer_encoder():
    tokens = keras.Input((8,), dtype="float32")  # token ids; Embedding casts them to integers
    x = L.Embedding(40, 16, name="embedding")(tokens)
    x = L.LayerNormalization()(x + L.MultiHeadAttention(2, 8, name="attention")(x, x))
    x = L.Dense(16, activation="relu", name="ffn")(x)
    return keras.Model(tokens, L.Dense(3, name="logits")(L.GlobalAveragePooling1D()(x)))


def _lstm_classifier():
    inputs = keras.Input((TIME, FEATURES))
    return keras.Model(inputs, L.Dense(3, name="logits")(L.LSTM(16, name="lstm")(inputs)))


@pytest.mark.slow
@pytest.mark.parametrize("make", [_lstm_classifier, _transformer_encoder])
def test_lstm_and_transformer_prune_to_80_percent_and_run_in_litert(make, tmp_path):
    keras.utils.set_random_seed(0)
    model = make()
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.8, begin_step=1, end_step=4, frequency=1)
    pruned = ts.prune_low_magnitude(model, schedule)
    rng = np.random.default_rng(0)
    shape = model.input_shape[1:]
    x = rng.integers(0, 40, (16, *shape)).astype("float32") if len(shape) == 1 else rng.normal(size=(16, *shape))
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x.astype("float32"), rng.integers(0, 3, 16), batch_size=4, epochs=1, verbose=0)
    for layer in pruned.layers:
        if isinstance(layer, Masked):
            for name, mask in zip(layer.weight_names, layer.masks):
                assert np.sum(_numpy(mask) == 0) == round(0.8 * _numpy(mask).size), (layer.name, name)
    report = ts.export.tflite(pruned, str(tmp_path / "model.tflite"), sample_inputs=x[:4])
    assert report.max_abs_diff < 1e-4
