"""Tests of the `Scored` layer: frozen weights, exact budgets, straight-through scores."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.layers import Scored


def _built(layer, input_shape):
    layer(np.random.rand(*input_shape).astype("float32"))
    return layer


def _zeros(array):
    return int(np.sum(np.asarray(array) == 0))


@pytest.mark.parametrize(
    "layer, input_shape",
    [
        (lambda: keras.layers.Dense(7), (5, 12)),
        (lambda: keras.layers.Conv2D(6, 3), (2, 9, 9, 4)),
        (lambda: keras.layers.SeparableConv2D(5, 3), (2, 8, 8, 3)),
    ],
)
def test_straight_through_gradient_equals_g_times_w(layer, input_shape):
    wrapped = _built(Scored(layer(), sparsity=0.6), input_shape)
    inner = wrapped.layer
    x = tf.constant(np.random.rand(*input_shape).astype("float32"))
    target = tf.constant(np.random.rand(*wrapped.compute_output_shape(input_shape)).astype("float32"))

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum((wrapped(x, training=True) - target) ** 2)
    score_grads = tape.gradient(loss, wrapped.scores)

    # g: the gradient of the same loss with respect to the effective weights.
    effective = [tf.Variable(w * m) for w, m in zip(wrapped.prunable_weights, wrapped.masks)]
    by_id = {id(w): e for w, e in zip(wrapped.prunable_weights, effective)}
    with tf.GradientTape() as tape:
        trainable = [by_id.get(id(v), v) for v in inner.trainable_variables]
        non_trainable = [by_id.get(id(v), v) for v in inner.non_trainable_variables]
        outputs, _ = inner.stateless_call(trainable, non_trainable, x)
        loss = tf.reduce_sum((outputs - target) ** 2)
    g = tape.gradient(loss, effective)

    for grad, g_i, w in zip(score_grads, g, wrapped.prunable_weights):
        assert np.any(grad.numpy() != 0)
        np.testing.assert_allclose(grad.numpy(), (g_i * w).numpy(), rtol=1e-6, atol=1e-7)


def test_inner_weights_are_frozen_and_scores_train():
    wrapped = _built(Scored(keras.layers.Dense(4), sparsity=0.5), (3, 6))
    assert [v.path for v in wrapped.trainable_variables] == [v.path for v in wrapped.scores]
    assert all(not v.trainable for v in wrapped.layer.weights)
    # Turning the layers back on does not unfreeze the weights.
    wrapped.trainable = True
    assert len(wrapped.trainable_variables) == 1


def test_magnitude_init_keeps_largest_weights_with_scores_one_and_099():
    wrapped = _built(Scored(keras.layers.Dense(10), sparsity=0.7), (2, 20))
    kernel = wrapped.layer.kernel.numpy()
    mask = wrapped.masks[0].numpy()
    keep = kernel.size - round(0.7 * kernel.size)
    assert int(mask.sum()) == keep
    assert np.abs(kernel[mask == 1]).min() > np.abs(kernel[mask == 0]).max()
    scores = wrapped.scores[0].numpy()
    assert np.all(scores[mask == 1] == np.float32(1.0))
    assert np.all(scores[mask == 0] == np.float32(0.99))


def test_random_init_is_seeded_top_k_of_scores():
    first = _built(Scored(keras.layers.Dense(10), sparsity=0.7, init="random", seed=3), (2, 20))
    again = Scored(keras.layers.Dense(10), sparsity=0.7, init="random", seed=3)
    other = Scored(keras.layers.Dense(10), sparsity=0.7, init="random", seed=4)
    _built(again, (2, 20))
    _built(other, (2, 20))
    scores, mask = first.scores[0].numpy(), first.masks[0].numpy()
    assert int(mask.sum()) == 200 - 140
    assert scores[mask == 1].min() > scores[mask == 0].max()
    bound = 1 / np.sqrt(20)  # Kaiming-uniform over the fan-in
    assert -bound <= scores.min() < -0.8 * bound and 0.8 * bound < scores.max() <= bound
    np.testing.assert_array_equal(scores, again.scores[0].numpy())
    assert np.any(scores != other.scores[0].numpy())


def test_budget_is_exact_under_any_scores_and_ties():
    wrapped = _built(Scored(keras.layers.Conv2D(4, 3), sparsity=0.8), (1, 6, 6, 3))
    size = wrapped.scores[0].shape.num_elements()
    for values in (np.zeros(size), np.random.randint(0, 3, size), np.random.randn(size)):
        wrapped.scores[0].assign(values.reshape(wrapped.scores[0].shape).astype("float32"))
        wrapped(np.random.rand(1, 6, 6, 3).astype("float32"), training=True)
        assert _zeros(wrapped.masks[0].numpy()) == round(0.8 * size)
        assert _zeros(wrapped.effective_weights()["kernel"]) == round(0.8 * size)


def test_training_call_follows_scores_and_inference_sees_the_same_mask():
    wrapped = _built(Scored(keras.layers.Dense(3), sparsity=0.5), (2, 4))
    new_scores = np.random.rand(4, 3).astype("float32")
    wrapped.scores[0].assign(new_scores)
    expected = (new_scores >= np.sort(new_scores.ravel())[6]).astype("float32")
    # Inference already uses the mask the next training step will store.
    kernel = wrapped.layer.kernel.numpy()
    np.testing.assert_array_equal(wrapped.effective_weights()["kernel"], kernel * expected)
    assert not np.array_equal(wrapped.masks[0].numpy(), expected)
    wrapped(np.ones((2, 4), "float32"), training=True)
    np.testing.assert_array_equal(wrapped.masks[0].numpy(), expected)


def test_kept_entries_of_the_effective_kernel_are_the_frozen_values():
    wrapped = _built(Scored(keras.layers.Dense(8), sparsity=0.5), (2, 16))
    wrapped.scores[0].assign(np.random.rand(16, 8).astype("float32"))
    kernel = wrapped.layer.kernel.numpy()
    effective = keras.ops.convert_to_numpy(wrapped.effective_weights()["kernel"])
    kept = effective != 0
    assert kept.sum() == 64
    assert effective[kept].tobytes() == kernel[kept].tobytes()


def test_summary_field_is_hamming_distance_from_initial_mask():
    wrapped = _built(Scored(keras.layers.Dense(5), sparsity=0.6), (2, 10))
    assert wrapped.summary_fields() == {"hamming": 0}
    initial = wrapped.masks[0].numpy()
    scores = wrapped.scores[0].numpy()
    # Revive the 3 best pruned weights above every kept one.
    pruned = np.flatnonzero(initial.ravel() == 0)[:3]
    scores.ravel()[pruned] = 2.0
    wrapped.scores[0].assign(scores)
    wrapped(np.ones((2, 10), "float32"), training=True)
    moved = int(np.sum(wrapped.masks[0].numpy() != initial))
    assert moved == 6
    assert wrapped.summary_fields() == {"hamming": moved}
    rows = ts.summary(keras.Sequential([keras.Input((10,)), wrapped]), print_fn=None).rows
    assert [row.get("hamming") for row in rows if row["parameters"]] == [moved]


def test_config_round_trip_and_keras_file(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((6,)),
            Scored(
                keras.layers.Dense(4),
                sparsity=0.25,
                init="random",
                seed=9,
                score_regularizer=keras.regularizers.L2(1e-3),
            ),
        ]
    )
    layer = model.layers[0]
    layer.scores[0].assign(np.random.rand(6, 4).astype("float32"))
    layer.restrict(0.5)
    model(np.ones((1, 6), "float32"), training=True)
    path = tmp_path / "scored.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    again = loaded.layers[0]
    assert isinstance(again, Scored)
    keys = ("sparsity", "init", "seed", "score_regularizer")
    assert {k: again.get_config()[k] for k in keys} == {k: layer.get_config()[k] for k in keys}
    for a, b in zip(layer.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert bool(again.restricted.numpy()) and float(again.swap_rate.numpy()) == 0.5
    assert [v.path for v in again.trainable_variables] == [v.path for v in again.scores]
    x = np.random.rand(3, 6).astype("float32")
    np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())


def test_score_regularizer_is_coupled_l2():
    layer = _built(Scored(keras.layers.Dense(3), score_regularizer=keras.regularizers.L2(0.5e-3)), (1, 4))
    scores = layer.scores[0]
    with tf.GradientTape() as tape:
        layer(np.zeros((1, 4), "float32"), training=True)
        penalty = tf.add_n(layer.losses)
    np.testing.assert_allclose(tape.gradient(penalty, scores).numpy(), 1e-3 * scores.numpy(), rtol=1e-6)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="sparsity"):
        Scored(keras.layers.Dense(3), sparsity=1.5)
    with pytest.raises(ValueError, match="sparsity"):
        Scored(keras.layers.SeparableConv2D(3, 3), sparsity=[0.5])
    with pytest.raises(ValueError, match="init"):
        Scored(keras.layers.Dense(3), init="uniform")
    with pytest.raises(TypeError, match="seed"):
        Scored(keras.layers.Dense(3), seed=1.5)
    with pytest.raises(TypeError, match="MaxPooling2D"):
        Scored(keras.layers.MaxPooling2D())
    layer = _built(Scored(keras.layers.Dense(3)), (1, 4))
    with pytest.raises(ValueError, match="rate"):
        layer.restrict(2.0)
