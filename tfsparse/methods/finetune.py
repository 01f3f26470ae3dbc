"""The training recipe of the structured methods, and BatchNorm statistics recomputed after training.

Every structured comparison in this project (a pruned model fine-tuned,
the dense model, the same widths trained from scratch) trains with
`finetune`, so that methods differ only in what they remove, never in how
long or how well they train.
"""

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from tfsparse import checks
from tfsparse.walk import leaf_layers, named_layers

MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
CALIBRATION_BATCHES = 50


def finetune(model, data, epochs, learning_rate=0.01, weight_decay=WEIGHT_DECAY, validation_data=None,
             calibration_batches=CALIBRATION_BATCHES, callbacks=None, verbose="auto", jit_compile=False,
             teacher=None, temperature=4.0, distillation_weight=0.9):
    """Compiles and trains `model` with the recipe every structured method here is compared under.

    The recipe: SGD with Nesterov momentum 0.9, the learning rate decayed
    from `learning_rate` to 0 by a cosine over all `epochs` (one step per
    batch), decoupled weight decay `weight_decay` on every variable,
    sparse categorical cross-entropy on logits, accuracy reported. After
    training, the BatchNormalization moving statistics are recomputed over
    `calibration_batches` training batches (`recalibrate_batch_norm`):
    Keras' default momentum of 0.99 leaves a run of a few hundred steps
    evaluating with statistics of weights long gone, so every model here is
    evaluated with the statistics of its final weights.

    The same call trains the dense and the from-scratch baselines, with a
    higher `learning_rate` (0.1), so all runs share one optimizer, one
    schedule and one BatchNorm rule.

    With a `teacher` (the model before pruning), the loss is Hinton et al.'s
    (2015) knowledge distillation: `distillation_weight` times `T^2` times
    the KL divergence from the teacher's to the model's softened outputs
    (logits divided by the `temperature` `T`), plus `1 -
    distillation_weight` times the cross-entropy on the labels. The teacher
    runs in inference mode and is not trained.

    Args:
        model: a built Keras model with logits outputs; it is (re)compiled.
        data: a `tf.data.Dataset` of `(x, y)` batches with integer labels
            (as `tfsparse.data.load` returns).
        epochs: the number of passes over `data`.
        learning_rate: the initial learning rate.
        weight_decay: the decoupled weight decay (0 for none).
        validation_data: passed to `model.fit`.
        calibration_batches: batches of `data` for the BatchNorm
            statistics after training; 0 keeps Keras' moving averages.
        callbacks: passed to `model.fit`.
        verbose: passed to `model.fit`.
        jit_compile: passed to `model.compile`. Off by default: on CPU, XLA
            compiles a ResNet-20 training step in about three times the CPU
            time of a plain first epoch on the embedded digits, and then runs
            no faster; pass `"auto"` on accelerators.
        teacher: `None`, or a Keras model with the same inputs and logits
            outputs to distill from.
        temperature: the softening temperature `T > 0` of distillation.
        distillation_weight: the weight in [0, 1] of the distillation term.

    Returns:
        The `keras.callbacks.History` of the training.

    Raises:
        ValueError: for a non-positive `epochs`, `learning_rate` or
            `temperature`, a negative `weight_decay` or
            `calibration_batches`, a `distillation_weight` outside [0, 1],
            or empty `data`.
        TypeError: if `data` is not a `tf.data.Dataset`, or `teacher` not a
            Keras model.

    Example:

    >>> history = tfsparse.finetune(model, train_ds, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'loss']
    """
    epochs = checks.check_positive_int(epochs, "epochs")
    learning_rate = checks.check_positive_number(learning_rate, "learning_rate")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real) or not 0 <= weight_decay < math.inf:
        raise ValueError(f"Argument `weight_decay` must be a number >= 0, received: {weight_decay!r}.")
    calibration_batches = checks.check_non_negative_int(calibration_batches, "calibration_batches")
    steps = _steps_per_epoch(data) * epochs
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    optimizer = keras.optimizers.SGD(schedule, momentum=MOMENTUM, nesterov=True,
                                     weight_decay=float(weight_decay) or None)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer, loss, metrics=["accuracy"], jit_compile=jit_compile)
    trained = model
    if teacher is not None:
        trained = _distilling(model, teacher, temperature, distillation_weight)
    # Each layer's flag, parents first: setting a parent's sets its children's.
    trainable = [(layer, layer.trainable) for _, layer in named_layers(teacher)] if teacher is not None else []
    try:
        if teacher is not None:
            teacher.trainable = False  # also runs its BatchNormalization in inference mode
            trained.compile(optimizer, loss, loss_weights=1 - distillation_weight, metrics=["accuracy"],
                            jit_compile=jit_compile)
        # `data` brings its own order: Keras' `shuffle` does not apply to a Dataset.
        history = trained.fit(data, epochs=epochs, validation_data=validation_data, callbacks=callbacks,
                              verbose=verbose, shuffle=False)
    finally:
        for layer, flag in trainable:
            layer.trainable = flag
    if calibration_batches:
        recalibrate_batch_norm(model, data, calibration_batches)
    return history


def _distilling(model, teacher, temperature, weight):
    """A model that computes `model`'s outputs from its layers and adds the distillation loss from `teacher`."""
    if not isinstance(teacher, keras.Model):
        raise TypeError(f"Argument `teacher` must be a keras.Model, received: {type(teacher).__name__}.")
    temperature = checks.check_positive_number(temperature, "temperature")
    weight = checks.check_fraction(weight, "distillation_weight", include_one=True)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    outputs = _Distillation(temperature, weight)(model.outputs[0], teacher(inputs))
    return keras.Model(inputs, outputs, name=f"{model.name}_distilled")


class _Distillation(keras.layers.Layer):
    """Passes the student's logits through and adds `weight * T^2 * KL(teacher || student)` at temperature `T`."""

    def __init__(self, temperature, weight, **kwargs):
        super().__init__(**kwargs)
        self.temperature, self.weight = temperature, weight

    def call(self, student, teacher):
        t = self.temperature
        teacher = keras.ops.stop_gradient(keras.ops.log_softmax(teacher / t, axis=-1))
        student_log = keras.ops.log_softmax(student / t, axis=-1)
        divergence = keras.ops.sum(keras.ops.exp(teacher) * (teacher - student_log), axis=-1)
        self.add_loss(self.weight * t * t * keras.ops.mean(divergence))
        return student


def recalibrate_batch_norm(model, data, batches=CALIBRATION_BATCHES):
    """Sets every BatchNormalization's moving statistics to the mean and variance of its inputs over `batches`.

    The inputs are computed in one pass in training mode (each
    BatchNormalization normalizing with its batch's statistics, as during
    training), like `torch.optim.swa_utils.update_bn`; the new statistics
    are the exact mean and (biased) variance over all examples and
    positions of those batches, not a moving average. Use it after pruning
    or a short training run, when the moving averages describe weights that
    no longer exist. Nothing else of the model changes.

    Args:
        model: a built functional or Sequential Keras model (tfsparse
            wrappers are looked through) whose BatchNormalization layers are
            each called once.
        data: a `tf.data.Dataset` or iterable of `(x, y)` batches (or of
            inputs alone).
        batches: how many batches to use (fewer if `data` ends first).

    Returns:
        The number of BatchNormalization layers updated.

    Raises:
        ValueError: for a bad `batches`, empty `data`, or a
            BatchNormalization called more than once or inside a nested model.

    Example:

    >>> bn = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    >>> tfsparse.recalibrate_batch_norm(bn, [(np.array([[1.0, 2, 3], [3, 2, 1]]), None)])
    1
    >>> bn.layers[0].moving_mean.numpy(), bn.layers[0].moving_variance.numpy()
    (array([2., 2., 2.], dtype=float32), array([1., 0., 1.], dtype=float32))
    """
    batches = checks.check_non_negative_int(batches, "batches")
    norms = [layer for layer in leaf_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms or not batches:
        return 0
    probe = _input_probe(model, norms)
    moments = [np.zeros((3, bn.moving_mean.shape[0])) for bn in norms]
    seen = 0
    for batch in data:
        if seen == batches:
            break
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        for total, part in zip(moments, probe(inputs)):
            total += part.numpy()
        seen += 1
    if not seen:
        raise ValueError("Argument `data` gave no batch to recompute the BatchNormalization statistics from.")
    for bn, (count, total, squares) in zip(norms, moments):
        mean = total / count
        bn.moving_mean.assign(mean.astype(np.float32))
        bn.moving_variance.assign(np.maximum(squares / count - mean**2, 0.0).astype(np.float32))
    return len(norms)


def _input_probe(model, norms):
    """A `tf.function` that returns `[count, sum, sum of squares]` per channel of each BatchNormalization's input."""
    try:
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        features = keras.Model(inputs, [bn.input for bn in norms])
    except (ValueError, AttributeError) as error:
        raise ValueError(
            f"Cannot read the inputs of the BatchNormalization layers of model {model.name!r}: each must be "
            f"called once, in the model's own graph ({error})."
        ) from None

    @tf.function(reduce_retracing=True)
    def probe(x):
        outputs = []
        for bn, value in zip(norms, tf.nest.flatten(features(x, training=True))):
            value = tf.cast(value, tf.float64)
            axis = bn.axis if isinstance(bn.axis, int) else bn.axis[0]
            value = tf.reshape(tf.experimental.numpy.moveaxis(value, axis, -1), (-1, value.shape[axis]))
            count = tf.fill(tf.shape(value)[1:], tf.cast(tf.shape(value)[0], tf.float64))
            outputs.append(tf.stack([count, tf.reduce_sum(value, 0), tf.reduce_sum(tf.square(value), 0)]))
        return outputs

    return probe


def _steps_per_epoch(data):
    if not isinstance(data, tf.data.Dataset):
        raise TypeError(f"Argument `data` must be a tf.data.Dataset of (x, y) batches, received: {type(data).__name__}.")
    steps = int(data.cardinality())
    if steps < 0:
        steps = sum(1 for _ in data)
    if steps == 0:
        raise ValueError("Argument `data` is empty.")
    return steps

