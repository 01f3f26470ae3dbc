"""Test setup for `tests/` and the docstring examples of `tfsparse/`.

TensorFlow is quieted and the CPU split into two logical devices before any
TensorFlow op runs. Every test starts from the same random state. Docstring
examples run with a small namespace: the modules they use and a few tiny
ready objects, so that each example reads as a user would write it.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfsparse  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

DOCTEST_BATCHES = 4
DOCTEST_BATCH_SIZE = 64


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    keras.utils.set_random_seed(0)
    np.random.seed(0)


def small_model():
    """A small functional CNN for the 8x8 digits, returning logits.

    `conv1` (16 channels) feeds `conv2` and `conv3` (32 channels each), whose
    outputs are added, so the two are one channel group.
    """
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    a = keras.layers.Conv2D(32, 3, padding="same", name="conv2")(h)
    b = keras.layers.Conv2D(32, 1, name="conv3")(h)
    h = keras.layers.ReLU()(keras.layers.Add()([a, b]))
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(h), name="small")


@pytest.fixture(scope="session")
def _digits():
    """`(x, y, train_ds, pretrained weights)`: a few batches of the embedded digits."""
    keras.utils.set_random_seed(0)
    train_ds = tfsparse.data.load("digits", "train", batch_size=DOCTEST_BATCH_SIZE).take(DOCTEST_BATCHES)
    unshuffled = tfsparse.data.load("digits", "train", batch_size=DOCTEST_BATCH_SIZE * DOCTEST_BATCHES, shuffle=False)
    x, y = (tensor.numpy() for tensor in next(iter(unshuffled)))
    pretrained = small_model()
    pretrained.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pretrained.fit(train_ds, epochs=1, verbose=0)
    return x, y, train_ds, pretrained.get_weights()


@pytest.fixture(autouse=True)
def _doctest_globals(request):
    """Names the docstring examples of `tfsparse/` use, fresh for each example.

    `keras`, `np`, `ops`, `tf`, `tfsparse`; `model`: the untrained
    `small_model()`; `pretrained`: the same model trained for one epoch on
    `train_ds`; `x`, `y`: 256 digits as NumPy arrays; `train_ds`: 4 shuffled
    batches of 64 digits. Files the examples write go to a temporary
    directory, the working directory of the example.
    """
    if not isinstance(request.node, pytest.DoctestItem):
        return
    x, y, train_ds, pretrained_weights = request.getfixturevalue("_digits")
    keras.utils.set_random_seed(0)
    pretrained = small_model()
    pretrained.set_weights(pretrained_weights)
    request.getfixturevalue("monkeypatch").chdir(request.getfixturevalue("tmp_path"))
    request.getfixturevalue("doctest_namespace").update(
        keras=keras,
        np=np,
        ops=keras.ops,
        tf=tf,
        tfsparse=tfsparse,
        model=small_model(),
        pretrained=pretrained,
        x=x,
        y=y,
        train_ds=train_ds,
    )
