"""Magnitude pruning step for step as TFMOT: schedule steps, and the weight it always keeps."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.layers import Masked


def _masked_layers(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, Masked)]


def _zeros_per_batch(model, batches):
    """Trains `batches` batches of 2 and returns the zeros of each mask after each batch."""
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append([int(np.sum(layer.masks[0].numpy() == 0)) for layer in _masked_layers(model)])

    x, y = _batches(model.input_shape[1:], model.output_shape[1:], batches)
    model.compile(keras.optimizers.SGD(0.01), "mse")
    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0, callbacks=[Record()])
    return seen


def _batches(input_shape, output_shape, batches):
    rng = np.random.default_rng(0)
    return rng.random((2 * batches, *input_shape), "float32"), rng.random((2 * batches, *output_shape), "float32")


def _dense(inputs, units):
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(units)])


def _tfmot_zeros_per_batch(schedule_name, schedule_args, batches, inputs=10, units=10):
    """The same run with TFMOT (on tf_keras): zeros of the mask after each batch."""
    import tensorflow_model_optimization as tfmot  # a dependency; needs tf-keras (the dev extra)
    import tf_keras

    model = tf_keras.Sequential([tf_keras.Input((inputs,)), tf_keras.layers.Dense(units)])
    schedule = getattr(tfmot.sparsity.keras, schedule_name)(**schedule_args)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    seen = []

    class Record(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(int(np.sum(pruned.layers[0].pruning_vars[0][1].numpy() == 0)))

    x, y = _batches((inputs,), (units,), batches)
    pruned.compile(tf_keras.optimizers.SGD(0.01), "mse")
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep(), Record()]
    pruned.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
    return seen, int(pruned.layers[0].pruning_step.numpy())


SCHEDULES = {
    "gradual": (
        "PolynomialDecay", dict(initial_sparsity=0.2, final_sparsity=0.6, begin_step=1, end_step=4, frequency=1)
    ),
    "begin_step_0": ("ConstantSparsity", dict(target_sparsity=0.5, begin_step=0, frequency=2)),
    "one_shot_at_3": ("ConstantSparsity", dict(target_sparsity=0.5, begin_step=3, end_step=3, frequency=1)),
    "almost_all": ("ConstantSparsity", dict(target_sparsity=0.9999, begin_step=1, frequency=1)),
}


def test_the_kth_batch_is_step_k():
    name, args = SCHEDULES["gradual"]
    model = ts.prune_low_magnitude(_dense(10, 10), getattr(ts.schedules, name)(**args))
    seen = _zeros_per_batch(model, 4)
    # 100 weights: the sparsities after batches 1..4 are the schedule's at steps 1..4.
    assert [z for (z,) in seen] == [20, 48, 59, 60]
    assert int(model.layers[0].pruning_step.numpy()) == 4


def test_one_shot_pruning_happens_at_the_given_batch():
    name, args = SCHEDULES["one_shot_at_3"]
    model = ts.prune_low_magnitude(_dense(10, 10), getattr(ts.schedules, name)(**args))
    assert [z for (z,) in _zeros_per_batch(model, 4)] == [0, 0, 50, 50]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SCHEDULES))
def test_masks_match_tfmot_batch_for_batch(case):
    name, args = SCHEDULES[case]
    model = ts.prune_low_magnitude(_dense(10, 10), getattr(ts.schedules, name)(**args))
    ours = [z for (z,) in _zeros_per_batch(model, 4)]
    theirs, their_step = _tfmot_zeros_per_batch(name, args, 4)
    assert ours == theirs
    assert int(model.layers[0].pruning_step.numpy()) == their_step == 4


def test_a_schedule_that_never_prunes_in_training_is_an_error():
    with pytest.raises(ValueError, match=r"`pruning_schedule` never updates the masks.*`begin_step=1, end_step=1`"):
        ts.prune_low_magnitude(_dense(4, 2), ts.schedules.ConstantSparsity(0.5, begin_step=0, end_step=0))
    with pytest.raises(ValueError, match=r"at no step in 1\.\.50"):
        Masked(keras.layers.Dense(2), pruning_schedule=ts.schedules.ConstantSparsity(0.5, 0, end_step=50))


@pytest.mark.parametrize(
    "sparsity, inputs, units",
    [(0.9999, 10, 10), (0.99, 10, 4), (0.999, 3, 1)],
    ids=["100_weights", "40_weights", "3_weights"],
)
def test_layer_scope_keeps_one_weight(sparsity, inputs, units):
    model = ts.prune_low_magnitude(_dense(inputs, units), ts.schedules.ConstantSparsity(sparsity, 0, frequency=1))
    _zeros_per_batch(model, 1)
    mask = model.layers[0].masks[0].numpy()
    assert int(mask.sum()) == 1
    kernel = np.abs(model.layers[0].layer.kernel.numpy())
    assert kernel[mask == 1].item() == kernel.max()


def test_block_scope_keeps_one_block():
    schedule = ts.schedules.ConstantSparsity(0.9, 0, frequency=1)
    layer = Masked(keras.layers.Dense(4), pruning_schedule=schedule, block_size=(2, 2))
    layer.build((None, 4))
    layer(np.ones((1, 4), "float32"), training=True)
    assert int(layer.masks[0].numpy().sum()) == 4  # round(0.9 * 4 blocks) would prune all 4


def test_global_scope_keeps_one_weight_per_layer():
    inputs = keras.Input((20,))
    x = keras.layers.Dense(20, name="big")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="small")(x))
    small = model.get_layer("small").kernel
    small.assign(small * 1e-3)  # every weight below every weight of `big`
    pruned = ts.prune_low_magnitude(model, ts.schedules.ConstantSparsity(0.95, 0, frequency=1), scope="global")
    pruned(np.ones((1, 20), "float32"), training=True)
    kept = [int(layer.masks[0].numpy().sum()) for layer in _masked_layers(pruned)]
    assert kept == [440 - round(0.95 * 440) - 1, 1]
    largest = np.unravel_index(np.argmax(np.abs(small.numpy())), (20, 2))
    assert pruned.get_layer("prune_low_magnitude_small").masks[0].numpy()[largest] == 1


def test_global_topk_keeps_exact_count_without_floor():
    scores = [tf.constant([5.0, 6.0, 7.0]), tf.constant([0.1])]
    masks = ts.scoring.global_topk_masks(scores, 0.5)
    assert [m.numpy().tolist() for m in masks] == [[0.0, 1.0, 1.0], [0.0]]
    floored = ts.scoring.global_topk_masks(scores, 0.5, min_kept=1)
    assert [m.numpy().tolist() for m in floored] == [[0.0, 0.0, 1.0], [1.0]]  # still 2 kept


def test_a_tfmot_schedule_subclass_runs_as_it_is():
    import tensorflow_model_optimization as tfmot  # a dependency; needs tf-keras (the dev extra)

    class EveryThirdStep(tfmot.sparsity.keras.PruningSchedule):
        """TFMOT's way: override `__call__`, return `(should_prune, sparsity)`."""

        def __call__(self, step):
            return tf.equal(step % 3, 0), tf.constant(0.5)

        def get_config(self):
            return {}

    layer = ts.prune_low_magnitude(keras.layers.Dense(10), EveryThirdStep())
    model = keras.Sequential([keras.Input((10,)), layer])
    zeros = []
    for _ in range(3):
        model(np.ones((1, 10), "float32"), training=True)
        zeros.append(int(np.sum(layer.masks[0].numpy() == 0)))
    assert zeros == [0, 0, 50]  # steps 1, 2, 3: pruned at step 3 only
