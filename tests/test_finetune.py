"""The fine-tuning recipe of the structured methods, and BatchNorm statistics recomputed from data."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.methods.finetune import _Distillation


def _conv_bn_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(3, 3, use_bias=False, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2", axis=-1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def test_recalibration_sets_the_exact_training_mode_statistics_of_each_batch_norm_input():
    keras.utils.set_random_seed(0)
    model = _conv_bn_model()
    batches = [(np.random.default_rng(i).normal(2.0, 3.0, (16, 8, 8, 1)).astype("float32"), None) for i in range(3)]
    assert ts.recalibrate_batch_norm(model, batches, batches=2) == 2
    # Independently: the inputs of both layers in training mode, over the first two batches.
    probe = keras.Model(model.input, [model.get_layer("bn1").input, model.get_layer("bn2").input])
    parts = [probe(x, training=True) for x, _ in batches[:2]]
    for index, name in enumerate(("bn1", "bn2")):
        values = np.concatenate([np.asarray(p[index], np.float64).reshape(-1, p[index].shape[-1]) for p in parts])
        bn = model.get_layer(name)
        np.testing.assert_allclose(bn.moving_mean.numpy(), values.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.moving_variance.numpy(), values.var(0), rtol=1e-5, atol=1e-6)
    # The model now evaluates a batch close to how it trains on it.
    x = np.concatenate([x for x, _ in batches[:2]])
    np.testing.assert_allclose(model(x, training=False), model(x, training=True), atol=0.05)


def test_recalibration_refuses_a_batch_norm_inside_a_nested_model_and_empty_data():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()], name="inner")
    inputs = keras.Input((3,))
    outer = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
    with pytest.raises(ValueError, match="called once, in the model's own graph"):
        ts.recalibrate_batch_norm(outer, [(np.ones((2, 3)), None)])
    alone = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="gave no batch"):
        ts.recalibrate_batch_norm(alone, [])
    with pytest.raises(ValueError, match="`batches` must be an integer >= 0, received: -1"):
        ts.recalibrate_batch_norm(inner, [], batches=-1)
    assert ts.recalibrate_batch_norm(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), []) == 0


def test_finetune_decays_the_learning_rate_to_zero_and_ends_with_recalibrated_statistics():
    keras.utils.set_random_seed(1)
    model = _conv_bn_model()
    train = ts.data.load("digits", "train", batch_size=256)
    steps = int(train.cardinality())
    history = ts.finetune(model, train, epochs=2, learning_rate=0.05, verbose=0)
    assert len(history.history["loss"]) == 2
    assert int(model.optimizer.iterations) == 2 * steps
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)
    assert model.optimizer.nesterov and model.optimizer.momentum == 0.9
    # The statistics are those of the final weights over the training set (every batch: fewer than 50).
    after = [model.get_layer(n).moving_mean.numpy() for n in ("bn1", "bn2")]
    ts.recalibrate_batch_norm(model, train)
    for name, mean in zip(("bn1", "bn2"), after):
        np.testing.assert_allclose(model.get_layer(name).moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, "`epochs` must be a positive integer, received: 0"),
        ({"learning_rate": 0}, "`learning_rate` must be a positive number, received: 0"),
        ({"weight_decay": -1e-4}, "`weight_decay` must be a number >= 0, received: -0.0001"),
        ({"calibration_batches": 1.5}, "`calibration_batches` must be an integer >= 0, received: 1.5"),
    ],
)
def test_finetune_names_a_bad_argument(kwargs, message):
    arguments = {"epochs": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        ts.finetune(_conv_bn_model(), ts.data.load("digits", "test"), **arguments)


def test_finetune_wants_a_dataset():
    with pytest.raises(TypeError, match="must be a tf.data.Dataset of \\(x, y\\) batches, received: list"):
        ts.finetune(_conv_bn_model(), [(np.zeros((1, 8, 8, 1)), np.zeros(1))], epochs=1)
    with pytest.raises(ValueError, match="`data` is empty"):
        ts.finetune(_conv_bn_model(), tf.data.Dataset.from_tensors((np.zeros((1, 8, 8, 1)), [0])).take(0), epochs=1)


def test_distillation_loss_is_the_weighted_tempered_kl_divergence():
    student, teacher = np.array([[1.0, 0.0, -1.0]]), np.array([[0.0, 2.0, 0.5]])
    layer = _Distillation(temperature=2.0, weight=0.9)
    assert np.array_equal(keras.ops.convert_to_numpy(layer(student, teacher)), student)
    p, q = (np.exp(z / 2) / np.exp(z / 2).sum() for z in (teacher, student))
    expected = 0.9 * 4 * np.sum(p * np.log(p / q))
    assert float(layer.losses[0]) == pytest.approx(expected, rel=1e-5)


def test_distilled_finetuning_pulls_the_model_to_a_teacher_that_stays_as_it_was():
    keras.utils.set_random_seed(2)
    train = ts.data.load("digits", "train", batch_size=64)
    teacher, model = _conv_bn_model(), _conv_bn_model()
    ts.finetune(teacher, train, epochs=4, learning_rate=0.1, verbose=0)
    teacher.get_layer("conv1").trainable = False  # a layer the user froze stays frozen
    weights = [w.numpy() for w in teacher.weights]
    start = [w.numpy() for w in model.weights]
    x = next(iter(train))[0]

    def divergence():
        p = keras.ops.softmax(teacher(x, training=False))
        return float(keras.ops.mean(keras.ops.sum(p * (keras.ops.log(p) - keras.ops.log_softmax(model(x))), -1)))

    ts.finetune(model, train, epochs=3, learning_rate=0.05, verbose=0)
    from_labels = divergence()
    for variable, value in zip(model.weights, start):
        variable.assign(value)
    history = ts.finetune(model, train, epochs=3, learning_rate=0.05, teacher=teacher, distillation_weight=1.0,
                          temperature=1.0, verbose=0)
    # Trained on the teacher's outputs alone, the model ends closer to them than trained on the labels.
    assert divergence() < 0.95 * from_labels
    # The teacher is neither trained nor its BatchNormalization statistics moved, and stays trainable.
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(weights, teacher.weights))
    assert teacher.trainable and teacher.get_layer("conv2").trainable and not teacher.get_layer("conv1").trainable
    assert sorted(history.history) == ["accuracy", "loss"]
    assert model.compiled and int(model.optimizer.iterations) == 3 * int(train.cardinality())


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"temperature": 0}, ValueError, "`temperature` must be a positive number, received: 0"),
        ({"distillation_weight": 1.5}, ValueError, "`distillation_weight` must be"),
        ({"teacher": "dense"}, TypeError, "`teacher` must be a keras.Model, received: str"),
    ],
)
def test_finetune_names_a_bad_distillation_argument(kwargs, error, message):
    arguments = {"teacher": _conv_bn_model(), **kwargs}
    with pytest.raises(error, match=message):
        ts.finetune(_conv_bn_model(), ts.data.load("digits", "test"), epochs=1, **arguments)


def test_reinitialize_gives_the_pruned_widths_with_new_weights_and_fresh_statistics():
    model = _conv_bn_model()
    model.get_layer("bn1").moving_mean.assign(np.ones(4))
    small = ts.prune_channels(model, 0.5, scope="layer", print_fn=None)
    scratch = ts.reinitialize(small, seed=3)
    assert [w.shape for w in scratch.weights] == [w.shape for w in small.weights]
    assert not np.allclose(scratch.get_layer("conv2").kernel.numpy(), small.get_layer("conv2").kernel.numpy())
    np.testing.assert_array_equal(scratch.get_layer("bn1").moving_mean.numpy(), np.zeros(2))
    again = ts.reinitialize(small, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(scratch.get_weights(), again.get_weights()))
