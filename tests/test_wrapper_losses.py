"""Every wrapper keeps the wrapped layer's regularization losses."""

import keras
import numpy as np
import pytest

import tfsparse as ts
from tfsparse.layers import Frozen, Masked, Scored

ACTIVITY, KERNEL = 0.1, 0.01
MASK = (np.arange(24).reshape(6, 4) % 3 > 0).astype("float32")


def _dense():
    return keras.layers.Dense(
        4,
        activity_regularizer=keras.regularizers.L1(ACTIVITY),
        kernel_regularizer=keras.regularizers.L2(KERNEL),
        name="fc",
    )


def _masked():
    layer = Masked(_dense())
    layer.build((None, 6))
    layer.set_masks([MASK])
    return layer


def _frozen():
    layer = Frozen(_dense(), seed=3)
    layer.build((None, 6))
    layer.set_masks([MASK])
    layer.layer.kernel.assign(layer.layer.kernel * 3.0)  # trained entries now differ from the frozen ones
    return layer


def _scored():
    layer = Scored(_dense(), sparsity=0.5)
    layer.build((None, 6))
    return layer


WRAPPERS = {"masked": _masked, "frozen": _frozen, "scored": _scored}


def _model(name):
    wrapper = WRAPPERS[name]()
    return keras.Sequential([keras.Input((6,)), wrapper]), wrapper


def _expected_losses(wrapper, x):
    outputs = keras.ops.convert_to_numpy(wrapper(x))
    kernel = keras.ops.convert_to_numpy(wrapper.effective_weights()["kernel"])
    return sorted([ACTIVITY * np.abs(outputs).sum() / len(x), KERNEL * np.square(kernel).sum()])


def _losses(model):
    return sorted(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses)


def _data():
    rng = np.random.default_rng(0)
    return rng.random((8, 6), "float32"), rng.random((8, 4), "float32")


@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_model_losses_hold_the_wrapped_layers_regularizers(name):
    model, wrapper = _model(name)
    x, _ = _data()
    model(x)
    # The kernel term is on the effective kernel, and the stored one is not counted again.
    np.testing.assert_allclose(_losses(model), _expected_losses(wrapper, x), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_fit_minimizes_the_regularized_loss(name):
    model, wrapper = _model(name)
    x, y = _data()
    model.compile(keras.optimizers.SGD(0.0), "mse")
    loss = model.train_on_batch(x, y)
    data_loss = np.mean(np.square(keras.ops.convert_to_numpy(wrapper(x)) - y))
    np.testing.assert_allclose(loss, data_loss + sum(_expected_losses(wrapper, x)), rtol=1e-5)


def test_regularizers_survive_save_load_and_strip(tmp_path):
    model, wrapper = _model("masked")
    x, _ = _data()
    model.save(tmp_path / "masked.keras")
    loaded = keras.saving.load_model(tmp_path / "masked.keras")
    loaded(x)
    np.testing.assert_allclose(_losses(loaded), _expected_losses(wrapper, x), rtol=1e-5)
    plain = ts.strip(model)
    plain(x)
    np.testing.assert_allclose(_losses(plain), _expected_losses(wrapper, x), rtol=1e-5)
