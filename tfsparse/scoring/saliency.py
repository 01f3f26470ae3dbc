"""SNIP saliency: `|w * dL/dw|` of every prunable weight, from a few batches."""

import keras
import numpy as np
import tensorflow as tf

from tfsparse import checks
from tfsparse.walk import prunable_weights

# Scoring shows a progress bar from this many batches on.
PROGRESS_MIN_BATCHES = 5


def snip_saliency(model, data, batches=1, loss=None):
    """Returns the SNIP saliency `|w * dL/dw|` of every prunable weight.

    The gradient is taken at the model's current weights, in training mode,
    with one forward and backward pass per batch, and averaged over
    `batches` batches (so the saliency is that of their union). The model's
    variables are not changed: normalization statistics and step counters
    are left as they were. Biases and normalization parameters are not
    scored. A progress bar shows from 5 batches on.

    Args:
        model: a built Keras model.
        data: a `tf.data.Dataset` or any iterable of `(x, y)` or
            `(x, y, sample_weight)` batches, or one batch as a tuple
            `(x, y)` of arrays (then `batches` must be 1).
        batches: how many batches to draw from `data`.
        loss: a Keras loss (name, function or `keras.losses.Loss`); defaults
            to the model's compiled loss, else to sparse categorical
            cross-entropy on logits.

    Returns:
        A dict `{"<layer path>/<weight name>": saliency}` of float tensors
        shaped like the weights (see `tfsparse.walk.prunable_weights` for the paths).

    Raises:
        ValueError: for a bad `batches`, too little data, an empty batch, a
            gradient that is not finite (NaN inputs, say), or a model without
            prunable weights.
        TypeError: for a bad `data` or `loss`.

    Example:

    >>> scores = tfsparse.scoring.snip_saliency(model, (x[:100], y[:100]))
    >>> list(scores)
    ['conv1/kernel', 'conv2/kernel', 'conv3/kernel', 'logits/kernel']
    >>> masks = tfsparse.scoring.global_topk_masks(list(scores.values()), 0.9)
    >>> sum(int(ops.sum(mask)) for mask in masks)  # 10% of 5,584 weights kept
    558
    """
    checks.check_positive_int(batches, "batches")
    checks.check_built(model)
    weights = prunable_weights(model)
    grads = mean_gradients(model, list(weights.values()), data, batches, loss)
    return {key: tf.abs(tf.convert_to_tensor(w) * g) for (key, w), g in zip(weights.items(), grads)}


def mean_gradients(model, variables, data, batches=1, loss=None):
    """Returns the gradient of the loss with respect to `variables`, averaged over batches.

    One forward and backward pass per batch, in training mode, at the
    model's current weights; the model's variables are not changed
    (normalization statistics and step counters are left as they were). A
    progress bar shows from 5 batches on. Under a `tf.distribute` strategy
    (inside `strategy.scope()`), each batch is split across the replicas and
    their gradients summed, weighted by their share of the batch, so the
    result is the gradient of the whole batch.

    Args:
        model: a built Keras model.
        variables: variables of `model` (trainable or not).
        data: as for `snip_saliency`.
        batches: how many batches to draw from `data`.
        loss: as for `snip_saliency`.

    Returns:
        A list of float tensors, one per variable, shaped like it.

    Raises:
        ValueError: for a bad `batches`, too little data, a batch that does
            not fit the model (see `checked_batches`), or a gradient that
            is not finite (NaN inputs, say).
        TypeError: for a bad `data` or `loss`.

    Example:

    >>> (grad,) = mean_gradients(model, [model.get_layer("logits").kernel], (x[:32], y[:32]))
    >>> tuple(grad.shape)
    (32, 10)
    """
    checks.check_positive_int(batches, "batches")
    step = _gradient_step(model, variables, _get_loss(model, loss))
    progress = keras.utils.Progbar(batches, unit_name="batch") if batches >= PROGRESS_MIN_BATCHES else None
    total = None
    for count, (x, y, sample_weight) in enumerate(checked_batches(model, data, batches, loss), start=1):
        grads = step(x, y, sample_weight)
        check_finite(grads, "gradient", count)
        total = grads if total is None else [t + g for t, g in zip(total, grads)]
        if progress is not None:
            progress.update(count)
    return [t / batches for t in total]


def _gradient_step(model, variables, loss_fn):
    """Returns `step(x, y, sample_weight)` -> gradients of the batch's mean loss, summed over the replicas."""
    return replica_step(model, variables, loss_fn, _gradients, training=True)


def _gradients(loss_of, values):
    """The gradient of `loss_of(values)` with respect to `values`, dense (an Embedding's too)."""
    with tf.GradientTape() as tape:
        tape.watch(values)
        value = loss_of(values)
    grads = tape.gradient(value, values, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return [tf.convert_to_tensor(g) for g in grads]


def replica_step(model, variables, loss_fn, compute, training):
    """Returns a `tf.function` `step(x, y, sample_weight, *args)` computing `compute` on each replica, summed.

    Each replica reads its part of the batch (see `_replica_part`) and
    calls `compute(loss_of, values, *args)`, where `values` are tensors of
    the current values of `variables` and `loss_of(values)` is the
    replica's share of the batch's mean loss (so that the shares of all
    replicas add up to it) with `values` in place of `variables`.
    `compute` returns a list of tensors; the step returns their sums over
    the replicas. The model's variables are never assigned.

    Args:
        model: a built Keras model.
        variables: variables of `model` (trainable or not).
        loss_fn: a loss from `_get_loss`.
        compute: `compute(loss_of, values, *args) -> list of tensors`, linear
            in the loss (a gradient, a Hessian-vector product, ...).
        training: the mode of the forward pass (BatchNormalization,
            Dropout).
    """
    trainable = list(model.trainable_variables)
    non_trainable = list(model.non_trainable_variables)
    slots = {id(v): (0, i) for i, v in enumerate(trainable)}
    slots.update({id(v): (1, i) for i, v in enumerate(non_trainable)})
    wanted = [slots[id(v)] for v in variables]
    strategy = tf.distribute.get_strategy()

    def replica_compute(x, y, sample_weight, batch_size, *args):
        # Tensors, not variables: each replica reads its own copy.
        state = [[tf.convert_to_tensor(v) for v in trainable], [tf.convert_to_tensor(v) for v in non_trainable]]

        def loss_of(values):
            for (kind, i), value in zip(wanted, values):
                state[kind][i] = value
            y_pred, _ = model.stateless_call(state[0], state[1], x, training=training)
            return loss_fn(y, y_pred, sample_weight, batch_size)

        return compute(loss_of, [state[kind][i] for kind, i in wanted], *args)

    @tf.function(reduce_retracing=True)
    def step(x, y, sample_weight, *args):
        size = tf.shape(tf.nest.flatten(x)[0])[0]
        parts = strategy.experimental_distribute_values_from_function(
            lambda context: _replica_part((x, y, sample_weight), context))
        results = strategy.run(lambda part: replica_compute(*part, size, *args), args=(parts,))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results]

    return step


def _replica_part(batch, context):
    """The slice of `batch` (nested tensors, batch axis first) that replica `context` computes."""
    def part(tensor):
        if tensor is None:  # no sample weights
            return None
        size = tf.shape(tensor)[0]
        start = size * context.replica_id_in_sync_group // context.num_replicas_in_sync
        end = size * (context.replica_id_in_sync_group + 1) // context.num_replicas_in_sync
        return tensor[start:end]

    return tf.nest.map_structure(part, batch)


def _batches(data, batches):
    """Yields exactly `batches` batches of `data`."""
    if isinstance(data, tuple) and len(data) in (2, 3) and not isinstance(data[0], tuple):
        if batches != 1:
            raise ValueError(
                f"Argument `data` is a single batch `(x, y)`, so `batches` must be 1, "
                f"received: batches={batches}. Pass a tf.data.Dataset to score several batches."
            )
        yield data
        return
    try:
        iterator = iter(data)
    except TypeError:
        raise TypeError(
            f"Argument `data` must be a tf.data.Dataset, an iterable of (x, y) batches or "
            f"one (x, y) tuple, received: {data!r} (of type {type(data).__name__})."
        ) from None
    for step in range(batches):
        try:
            yield next(iterator)
        except StopIteration:
            raise ValueError(
                f"Argument `data` gave {step} batches, fewer than `batches`={batches}."
            ) from None


def checked_batches(model, data, batches, loss=None):
    """Yields `batches` batches of `data` as `(x, y, sample_weight)`, each checked against `model`.

    A batch must hold examples, labels, inputs of the shapes the model
    takes (for a model with known inputs), and, for a sparse categorical
    cross-entropy loss, class labels in `[0, classes)`: scoring would
    otherwise fail deep inside a traced step, or rank meaningless scores.

    Args:
        model: a built Keras model.
        data: as for `snip_saliency`.
        batches: how many batches to draw from `data`.
        loss: as for `snip_saliency`.

    Yields:
        `(x, y, sample_weight)` tuples.

    Raises:
        ValueError: for too little data, or a batch that is empty, has no
            labels, inputs of other shapes or labels out of range (naming
            the batch).
        TypeError: for a bad `data`.

    Example:

    >>> [tuple(x.shape) for x, _, _ in checked_batches(model, (x[:8], y[:8]), 1)]
    [(8, 8, 8, 1)]
    """
    classes = _sparse_classes(model, loss)
    for count, batch in enumerate(_batches(data, batches), start=1):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        inputs = tf.nest.flatten(x)
        if not inputs or int(tf.shape(inputs[0])[0]) == 0:
            raise ValueError(f"Argument `data` gave an empty batch (batch {count}): scores need examples.")
        if y is None:
            raise ValueError(
                f"Argument `data`: batch {count} has no labels; scoring needs `(x, y)` batches (a tuple of "
                f"arrays or a dataset of `(x, y)` pairs), received batches of {type(batch).__name__}."
            )
        _check_input_shapes(model, inputs, count)
        if classes is not None:
            _check_labels(y, classes, count)
        yield x, y, sample_weight


def check_finite(tensors, what, count):
    """Raises ValueError unless every entry of `tensors` is finite; `what` names them (e.g. "gradient")."""
    if not all(bool(tf.reduce_all(tf.math.is_finite(t))) for t in tensors):
        raise ValueError(
            f"The {what} over batch {count} of `data` is not finite (NaN or infinity): check its inputs "
            f"and labels for NaN or infinite values, or the model for overflow."
        )


def _check_input_shapes(model, inputs, count):
    expected = [tuple(t.shape) for t in tf.nest.flatten(getattr(model, "inputs", None) or [])]
    given = [tuple(int(d) for d in tf.shape(t)) for t in inputs]
    fits = len(expected) == len(given) and all(
        len(e) == len(g) and all(a is None or a == b for a, b in zip(e, g)) for e, g in zip(expected, given)
    )
    if expected and not fits:
        raise ValueError(
            f"Argument `data`: batch {count} has inputs of shape {', '.join(map(str, given))}; the model takes "
            f"{', '.join(map(str, expected))}."
        )


def _check_labels(y, classes, count):
    labels = np.asarray(y)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(
            f"Argument `data`: batch {count} has labels from {labels.min()} to {labels.max()}; the model's "
            f"{classes} outputs take class labels 0 to {classes - 1}."
        )


def _sparse_classes(model, loss):
    """The number of classes if the loss is a sparse categorical cross-entropy on a known output width, else None."""
    function = _resolve_loss(model, loss)
    sparse = isinstance(function, keras.losses.SparseCategoricalCrossentropy) or (
        function is keras.losses.sparse_categorical_crossentropy
    )
    outputs = tf.nest.flatten(getattr(model, "outputs", None) or [])
    if not sparse or len(outputs) != 1 or outputs[0].shape[-1] is None:
        return None
    return int(outputs[0].shape[-1])


def _resolve_loss(model, loss):
    """The Keras loss function or `keras.losses.Loss` that `loss` names, or None."""
    if loss is None:
        loss = getattr(model, "loss", None) or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    try:
        return keras.losses.get(loss)
    except (TypeError, ValueError):
        return None


def _get_loss(model, loss):
    """Returns `loss(y_true, y_pred, sample_weight, batch_size)` -> the batch's share of the mean loss.

    The per-example losses of the (part of a) batch are weighted by
    `sample_weight` and summed, then divided by the size of the whole
    batch: summed over the replicas that share a batch, the shares make the
    mean loss of the batch (a Keras `Loss` called whole would instead scale
    itself by the number of replicas).
    """
    function = _resolve_loss(model, loss)
    if isinstance(function, keras.losses.Loss):
        function = function.call
    if not callable(function):
        raise TypeError(
            f"Argument `loss` must be a Keras loss name, function or keras.losses.Loss "
            f"for a single-output model, received: {loss!r}."
        )

    def batch_share(y_true, y_pred, sample_weight, batch_size):
        values = function(y_true, y_pred)
        if len(values.shape) > 1:
            values = keras.ops.mean(values, axis=tuple(range(1, len(values.shape))))
        if sample_weight is not None:
            values = values * keras.ops.cast(keras.ops.reshape(sample_weight, (-1,)), values.dtype)
        return keras.ops.sum(values) / keras.ops.cast(batch_size, values.dtype)

    return batch_share
