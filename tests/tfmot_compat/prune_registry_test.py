"""TFMOT's `prune_registry_test.py` (which layers can be pruned, and which weights), on Keras 3 and tfsparse.

TFMOT's `PruneRegistry.supports(layer)` is "`prune_low_magnitude(layer)` accepts
it" here, and `make_prunable(layer).get_prunable_weights()` is the wrapper's
`prunable_weights` (tfsparse does not patch the layer).
"""

import keras
import pytest

import tfsparse as ts
from tfsparse.layers import Masked



class CustomLayer(keras.layers.Layer):
    """A layer type the registry does not know (upstream's fixture)."""


class CustomLayerFromPrunableLayer(keras.layers.Dense):
    """A subclass of a supported layer: pruned as its base class."""


class MinimalRNNCell(keras.layers.Layer):
    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="uniform", name="kernel")
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, self.units), initializer="uniform", name="recurrent_kernel"
        )

    def call(self, inputs, states):
        output = keras.ops.matmul(inputs, self.kernel) + keras.ops.matmul(states[0], self.recurrent_kernel)
        return output, [output]


class MinimalRNNCellPrunable(MinimalRNNCell):
    def get_prunable_weights(self):
        return [self.kernel, self.recurrent_kernel]


def _supports(layer):
    try:
        ts.prune_low_magnitude(layer)
    except ValueError:
        return False
    return True


def _prunable_weights(layer, input_shape):
    wrapper = Masked(layer)
    keras.Sequential([wrapper]).build(input_shape=input_shape)
    return wrapper.prunable_weights


def testSupportsKerasPrunableLayer():
    assert _supports(keras.layers.Dense(10))


def testSupportsKerasPrunableLayerAlias():
    assert _supports(keras.layers.Conv2D(10, 5))


def testSupportsKerasNonPrunableLayer():
    # Dropout is a layer known to not be prunable.
    assert _supports(keras.layers.Dropout(0.5))


def testDoesNotSupportKerasUnsupportedLayer():
    # ConvLSTM2D is a built-in keras layer but not supported.
    assert not _supports(keras.layers.ConvLSTM2D(2, (5, 5)))


def testSupportsKerasRNNLayers():
    assert _supports(keras.layers.LSTM(10))
    assert _supports(keras.layers.GRU(10))
    assert _supports(keras.layers.SimpleRNN(10))


def testSupportsKerasRNNLayerWithRNNCellsParams():
    assert _supports(keras.layers.RNN(keras.layers.LSTMCell(10)))
    # Upstream's list also holds PeepholeLSTMCell, which Keras 3 does not have.
    cells = [keras.layers.LSTMCell(10), keras.layers.GRUCell(10), keras.layers.SimpleRNNCell(10)]
    assert _supports(keras.layers.RNN(cells))


def testDoesNotSupportKerasRNNLayerUnknownCell():
    assert not _supports(keras.layers.RNN(MinimalRNNCell(32)))


def testSupportsKerasRNNLayerPrunableCell():
    assert _supports(keras.layers.RNN(MinimalRNNCellPrunable(32)))


def testDoesNotSupportCustomLayer():
    assert not _supports(CustomLayer())


def testDoesNotSupportCustomLayerInheritedFromPrunableLayer():
    # TFMOT refuses a subclass of a supported layer; tfsparse prunes it as its base class.
    assert _supports(CustomLayerFromPrunableLayer(10))


def testMakePrunableRaisesErrorForKerasUnsupportedLayer():
    with pytest.raises(ValueError):
        Masked(keras.layers.ConvLSTM2D(2, (5, 5)))


def testMakePrunableRaisesErrorForCustomLayer():
    with pytest.raises(ValueError):
        Masked(CustomLayer())


def testMakePrunableRaisesErrorForCustomLayerInheritedFromPrunableLayer():
    # TFMOT refuses it; tfsparse prunes its kernel as a Dense's.
    layer = CustomLayerFromPrunableLayer(10)
    assert _prunable_weights(layer, (10, 1)) == [layer.kernel]


def testMakePrunableWorksOnKerasPrunableLayer():
    layer = keras.layers.Dense(10)
    assert _prunable_weights(layer, (10, 1)) == [layer.kernel]


def testMakePrunableWorksOnKerasNonPrunableLayer():
    layer = keras.layers.Dropout(0.5)
    assert ts.prune_low_magnitude(layer) is layer  # nothing to prune: no wrapper


def testMakePrunableWorksOnKerasRNNLayer():
    layer = keras.layers.LSTM(10)
    assert _prunable_weights(layer, (2, 3, 4)) == [layer.cell.kernel, layer.cell.recurrent_kernel]


def testMakePrunableWorksOnKerasRNNLayerWithRNNCellsParams():
    cell1 = keras.layers.LSTMCell(10)
    cell2 = keras.layers.GRUCell(5)
    layer = keras.layers.RNN([cell1, cell2])
    weights = _prunable_weights(layer, (2, 3, 4))  # the cells' weights exist once built
    assert weights == [cell1.kernel, cell1.recurrent_kernel, cell2.kernel, cell2.recurrent_kernel]


def testMakePrunableWorksOnKerasRNNLayerWithPrunableCell():
    cell1 = keras.layers.LSTMCell(10)
    cell2 = MinimalRNNCellPrunable(5)
    layer = keras.layers.RNN([cell1, cell2])
    weights = _prunable_weights(layer, (2, 3, 4))  # the cells' weights exist once built
    assert weights == [cell1.kernel, cell1.recurrent_kernel, cell2.kernel, cell2.recurrent_kernel]


def testMakePrunableRaisesErrorOnRNNLayersUnsupportedCell():
    with pytest.raises(ValueError):
        Masked(keras.layers.RNN([keras.layers.LSTMCell(10), MinimalRNNCell(5)]))


def testRescalingLayer():
    assert _supports(keras.layers.Rescaling(1.0 / 255))
