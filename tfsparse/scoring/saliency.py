"""SNIP saliency: `|w * dL/dw|` of every prunable weight, from a few batches."""

import keras
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
        ValueError: for a bad `batches`, too little data, or a model without
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
    loss_fn = _get_loss(model, loss)
    trainable = list(model.trainable_variables)
    non_trainable = list(model.non_trainable_variables)
    scored = [id(w) for w in weights.values()]
    slots = {id(v): (0, i) for i, v in enumerate(trainable)}
    slots.update({id(v): (1, i) for i, v in enumerate(non_trainable)})

    @tf.function(reduce_retracing=True)
    def gradients(state, x, y, sample_weight):
        state = [list(state[0]), list(state[1])]
        with tf.GradientTape() as tape:
            watched = [state[slots[key][0]][slots[key][1]] for key in scored]
            tape.watch(watched)
            y_pred, _ = model.stateless_call(state[0], state[1], x, training=True)
            value = loss_fn(y, y_pred, sample_weight=sample_weight)
        return tape.gradient(value, watched)

    # Tensors, not variables: plain values also under a tf.distribute strategy.
    state = ([tf.convert_to_tensor(v) for v in trainable], [tf.convert_to_tensor(v) for v in non_trainable])
    progress = keras.utils.Progbar(batches, unit_name="batch") if batches >= PROGRESS_MIN_BATCHES else None
    total = None
    for step, batch in enumerate(_batches(data, batches), start=1):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        grads = gradients(state, x, y, sample_weight)
        total = grads if total is None else [t + g for t, g in zip(total, grads)]
        if progress is not None:
            progress.update(step)
    return {
        key: tf.abs(tf.convert_to_tensor(w) * g / batches) for (key, w), g in zip(weights.items(), total)
    }


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


def _get_loss(model, loss):
    """Returns `loss(y_true, y_pred, sample_weight=None)` -> scalar mean loss."""
    if loss is None:
        loss = getattr(model, "loss", None) or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    try:
        function = keras.losses.get(loss)
    except (TypeError, ValueError):
        function = None
    if isinstance(function, keras.losses.Loss):
        return function
    if not callable(function):
        raise TypeError(
            f"Argument `loss` must be a Keras loss name, function or keras.losses.Loss "
            f"for a single-output model, received: {loss!r}."
        )

    def mean_loss(y_true, y_pred, sample_weight=None):
        values = function(y_true, y_pred)
        if sample_weight is not None:
            values = values * keras.ops.cast(sample_weight, values.dtype)
        return keras.ops.mean(values)

    return mean_loss
