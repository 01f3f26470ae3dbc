"""Hutchinson estimates of the trace of Hessian blocks: per weight, per output channel or per entry."""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfsparse import checks
from tfsparse.registry import OUT, Unsupported, spec_of
from tfsparse.scoring.saliency import _get_loss, _gradients, check_finite, checked_batches, replica_step
from tfsparse.walk import prunable_entries, prunable_weights

PER = ("channel", "layer", "weight")


@dataclasses.dataclass(frozen=True)
class TraceEstimate:
    """A Hutchinson estimate and its standard error.

    Attributes:
        value: the mean of the samples `v . (Hv)` (a float for a whole
            weight, else a NumPy array).
        stderr: its standard error: the samples' standard deviation over
            `sqrt(samples)` (NaN from a single sample), of the shape of
            `value`.
    """

    value: float | np.ndarray
    stderr: float | np.ndarray


def hessian_trace(model, data, samples=32, batches=1, per="channel", loss=None, seed=None, verbose=1):
    """Estimates the trace of the Hessian block of every prunable weight (Hutchinson's method).

    A Hessian block is the second derivative of the loss with respect to a
    set of weights: a whole kernel (`per="layer"`), the kernel entries of
    one output channel (`per="channel"`), or one entry (`per="weight"`, the
    Hessian's diagonal). Each sample draws one Rademacher vector `v`
    (entries +1 or -1) over all prunable weights at once, computes the
    Hessian-vector product `Hv` (a double backward pass in a `tf.function`;
    forward-over-reverse differentiation was measured within a few percent
    of it, see `benchmarks/hessian.py`) and sums `v * Hv` over each block: the mean of
    these samples is an unbiased estimate of the block's trace.

    The loss is the mean loss over `batches` batches of `data`, in
    inference mode (BatchNormalization uses its moving statistics, Dropout
    is off), at the current weights; no variable of the model changes.
    Biases and normalization parameters are not differentiated. Under a
    `tf.distribute` strategy (inside `strategy.scope()`) every batch is
    split across the replicas and their Hessian-vector products summed;
    every replica draws the same `v`, so the estimate is that of one
    device.

    Args:
        model: a built Keras model.
        data: a `tf.data.Dataset` or any iterable of `(x, y)` or
            `(x, y, sample_weight)` batches, or one batch `(x, y)` (then
            `batches` must be 1). The batches are read once and kept.
        samples: how many Rademacher vectors to draw.
        batches: how many batches of `data` the loss averages.
        per: `"channel"` (one estimate per output channel: the axis the
            layer's output channels index; for a depthwise kernel, per
            channel it carries), `"layer"` (one per weight) or `"weight"`
            (one per entry, the weight's shape).
        loss: a Keras loss; defaults to the model's compiled loss, else to
            sparse categorical cross-entropy on logits.
        seed: the seed of the Rademacher vectors (default: drawn from
            Python's `random`, which `keras.utils.set_random_seed` fixes).
        verbose: 1 shows a progress bar over the samples, 0 shows nothing.

    Returns:
        A dict `{"<layer path>/<weight name>": TraceEstimate}`, keyed like
        `tfsparse.scoring.snip_saliency`.

    Raises:
        ValueError: for a bad `samples`, `batches`, `per`, `seed` or
            `verbose`, too little data, a batch that does not fit the model
            (empty, no labels, other input shapes, labels out of range), a
            Hessian-vector product that is not finite (NaN or infinite
            inputs, say), or a model without prunable weights.
        TypeError: for a bad `data` or `loss`.

    Example:

    >>> traces = tfsparse.scoring.hessian_trace(pretrained, (x[:64], y[:64]), samples=8, per="layer", verbose=0)
    >>> list(traces)
    ['conv1/kernel', 'conv2/kernel', 'conv3/kernel', 'logits/kernel']
    >>> estimate = traces["logits/kernel"]
    >>> bool(estimate.value > 0 and estimate.stderr > 0)  # the logits' Hessian block is positive semi-definite
    True
    """
    checks.check_model(model)
    samples = checks.check_positive_int(samples, "samples")
    checks.check_positive_int(batches, "batches")
    if per not in PER:
        raise ValueError(f"Argument `per` must be one of {PER}, received: {per!r}.")
    if verbose not in (0, 1):
        raise ValueError(f"Argument `verbose` must be 0 or 1, received: {verbose!r}.")
    seed = checks.resolve_seed(seed)
    weights = prunable_weights(model)
    reduce = [_reducer(per, axis) for axis in _channel_axes(model, weights)]
    step = replica_step(model, list(weights.values()), _get_loss(model, loss), hessian_vector_products,
                        training=False)
    shapes = [tuple(w.shape) for w in weights.values()]
    dtypes = [w.dtype for w in weights.values()]

    @tf.function(reduce_retracing=True)
    def sample(x, y, sample_weight, sample_seed):
        vectors = rademacher(shapes, dtypes, sample_seed)
        products = step(x, y, sample_weight, *vectors)
        return [r(v * hv) for r, v, hv in zip(reduce, vectors, products)]

    kept = list(checked_batches(model, data, batches, loss))
    progress = keras.utils.Progbar(samples, unit_name="sample") if verbose else None
    mean = squares = None
    for count in range(1, samples + 1):
        sample_seed = tf.constant([seed, count], dtype=tf.int64)
        values = None
        for index, (x, y, sample_weight) in enumerate(kept, start=1):
            parts = [np.asarray(p, dtype=np.float64) for p in sample(x, y, sample_weight, sample_seed)]
            check_finite(parts, "Hessian-vector product", index)
            values = parts if values is None else [a + b for a, b in zip(values, parts)]
        values = [v / len(kept) for v in values]
        # Welford's running mean and sum of squared deviations.
        if mean is None:
            mean, squares = values, [np.zeros_like(v) for v in values]
        else:
            deltas = [v - m for v, m in zip(values, mean)]
            mean = [m + d / count for m, d in zip(mean, deltas)]
            squares = [s + d * (v - m) for s, d, v, m in zip(squares, deltas, values, mean)]
        if progress is not None:
            progress.update(count)
    stderr = [np.sqrt(s / (samples - 1) / samples) if samples > 1 else np.full_like(s, np.nan) for s in squares]
    return {key: TraceEstimate(_plain(m), _plain(e)) for key, m, e in zip(weights, mean, stderr)}


def hessian_vector_products(loss_of, values, *vectors):
    """The Hessian of `loss_of` at `values` times `vectors`, by double backward differentiation.

    A `replica_step` computation: the gradient of `gradient . vectors`,
    with nested `tf.GradientTape`s.
    """
    with tf.GradientTape() as tape:
        tape.watch(values)
        grads = _gradients(loss_of, values)
        product = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vectors)])
    return tape.gradient(product, values, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def rademacher(shapes, dtypes, seed):
    """Tensors of the given shapes and dtypes with independent entries +1 or -1, drawn from `seed` (shape [2])."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    bits = tf.random.stateless_uniform([sum(sizes)], seed, minval=0, maxval=2, dtype=tf.int32)
    return [tf.reshape(tf.cast(2 * part - 1, dtype), shape)
            for part, shape, dtype in zip(tf.split(bits, sizes), shapes, dtypes)]


def _reducer(per, axis):
    """`v * Hv` -> the sum over each block."""
    if per == "layer":
        return tf.reduce_sum
    if per == "weight":
        return tf.identity
    return lambda product: tf.reduce_sum(product, axis=[a for a in range(product.shape.rank) if a != axis])


def _channel_axes(model, weights):
    """The axis of each weight indexed by its layer's output channels (else its carried channels, else the last)."""
    axes = []
    for path, layer, name in prunable_entries(model):
        rank = len(weights[f"{path}/{name}"].shape)
        spec = spec_of(layer)
        try:
            rule = spec.channel_rule(layer, rank) if spec is not None else None
        except Unsupported:
            rule = None
        found = [a for a in (rule.axes if rule else ()) if a.weight == name and not a.summed]
        found.sort(key=lambda a: a.channels != OUT)
        axes.append(found[0].axis % rank if found else rank - 1)
    return axes


def _plain(array):
    """A Python float for a 0-d array, else the array."""
    return float(array) if np.ndim(array) == 0 else array
