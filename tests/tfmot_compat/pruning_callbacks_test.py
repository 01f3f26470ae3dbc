"""TFMOT's `pruning_callbacks_test.py` (UpdatePruningStep, PruningSummaries), on Keras 3 and tfsparse.

The stored upstream version expects `pruning_step == 2` after 3 training
batches; TFMOT 0.8.1 (run here with tf_keras) counts 3, as tfsparse does:
the k-th batch is step k.
"""

import os

import keras
import numpy as np
import tensorflow as tf

import tfsparse as ts
from compat_utils import assert_model_sparsity, build_simple_dense_model, random_categorical

BATCH_SIZE = 20


def _pruned_model_setup(custom_training_loop=False):
    pruned_model = ts.prune_low_magnitude(build_simple_dense_model())
    x_train, y_train = random_categorical(BATCH_SIZE)
    loss = keras.losses.categorical_crossentropy
    optimizer = keras.optimizers.SGD()
    if custom_training_loop:
        return pruned_model, loss, optimizer, x_train, y_train
    pruned_model.compile(loss=loss, optimizer=optimizer, metrics=["accuracy"])
    return pruned_model, x_train, y_train


def _assert_logs_exist(log_dir):
    assert os.listdir(log_dir)


def testUpdatePruningStepsAndLogsSummaries(tmp_path):
    log_dir = str(tmp_path)
    pruned_model, x_train, y_train = _pruned_model_setup()
    pruned_model.fit(
        x_train, y_train, batch_size=BATCH_SIZE, epochs=3, verbose=0,
        callbacks=[ts.callbacks.UpdatePruningStep(), ts.callbacks.PruningSummaries(log_dir=log_dir)],
    )
    assert int(pruned_model.layers[0].pruning_step.numpy()) == 3
    assert int(pruned_model.layers[1].pruning_step.numpy()) == 3
    _assert_logs_exist(log_dir)


def _custom_training_loop(pruned_model, loss, optimizer, x_train, y_train, epochs, callbacks=()):
    """TFMOT's recipe: a GradientTape loop, driving the callbacks by hand."""
    unused_arg = -1
    step_callback, *log_callbacks = callbacks or [None]
    for callback in callbacks:
        callback.set_model(pruned_model)
    pruned_model.optimizer = optimizer
    if step_callback is not None:
        step_callback.on_train_begin()
    for _ in range(epochs):
        # Only one batch, given batch_size = 20 and the input shape.
        if step_callback is not None:
            step_callback.on_train_batch_begin(batch=unused_arg)
        inp = np.reshape(x_train, [BATCH_SIZE, 10])
        with tf.GradientTape() as tape:
            logits = pruned_model(inp, training=True)
            loss_value = loss(y_train, logits)
            grads = tape.gradient(loss_value, pruned_model.trainable_variables)
            optimizer.apply_gradients(zip(grads, pruned_model.trainable_variables))
        for callback in callbacks:
            callback.on_epoch_end(batch=unused_arg)


def testUpdatePruningStepsAndLogsSummaries_CustomTrainingLoop(tmp_path):
    log_dir = str(tmp_path)
    pruned_model, loss, optimizer, x_train, y_train = _pruned_model_setup(custom_training_loop=True)
    callbacks = [ts.callbacks.UpdatePruningStep(), ts.callbacks.PruningSummaries(log_dir=log_dir)]
    _custom_training_loop(pruned_model, loss, optimizer, x_train, y_train, 3, callbacks)
    assert int(pruned_model.layers[0].pruning_step.numpy()) == 3
    assert int(pruned_model.layers[1].pruning_step.numpy()) == 3
    _assert_logs_exist(log_dir)


def testPruneTrainingRaisesError_PruningStepCallbackMissing():
    # TFMOT raises InvalidArgumentError without UpdatePruningStep. In tfsparse
    # the step counter lives in the training step: training without the
    # callback prunes on schedule (ConstantSparsity(0.5, 0) first prunes at
    # step 100).
    pruned_model, x_train, y_train = _pruned_model_setup()
    pruned_model.fit(np.repeat(x_train, 5, 0), np.repeat(y_train, 5, 0), batch_size=1, verbose=0)
    assert int(pruned_model.layers[0].pruning_step.numpy()) == 100
    assert_model_sparsity(0.5, pruned_model)


def testPruneTrainingLoopRaisesError_PruningStepCallbackMissing_CustomTrainingLoop():
    # As above, in a custom training loop: no callback needed.
    pruned_model, loss, optimizer, x_train, y_train = _pruned_model_setup(custom_training_loop=True)
    with tf.GradientTape():
        pruned_model(np.reshape(x_train, [BATCH_SIZE, 10]), training=True)
    assert int(pruned_model.layers[0].pruning_step.numpy()) == 1
